"""Time-to-accuracy: the first step and wall time at which an accuracy curve reaches a target.

SRFT (arXiv 2506.19767) claims 2.28x faster training than SFT->RL measured this way; sequential
pipelines count their SFT steps and time. Pure Python; imports nothing from duotune.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation of a checkpoint: cumulative optimizer steps and wall seconds, and accuracy."""

    step: int
    wall_s: float
    accuracy: float


@dataclass(frozen=True)
class Reached:
    step: int
    wall_s: float


def time_to_target(curve: Sequence[CurvePoint], target: float) -> Reached | None:
    """First point (in step order) whose accuracy >= target, or None when never reached.

    No interpolation between evaluations: a method is credited with the checkpoint it actually
    evaluated, so coarse evaluation cannot make it look faster than it was.
    """
    for p in sorted(curve, key=lambda p: p.step):
        if p.accuracy >= target - 1e-12:
            return Reached(p.step, p.wall_s)
    return None


def default_target(curves: Mapping[str, Sequence[CurvePoint]], reference: str = "sft_then_grpo") -> float:
    """The best accuracy reached by `reference` (the seed's default target), else the best overall."""
    pts = curves.get(reference) or [p for c in curves.values() for p in c]
    if not pts:
        raise ValueError("no accuracy curves to pick a target from")
    return max(p.accuracy for p in pts)


def time_to_accuracy_table(curves: Mapping[str, Sequence[CurvePoint]], target: float,
                           numerator: str = "sft_then_grpo", denominator: str = "srft") -> dict:
    """Per-method steps/wall to `target`, plus the wall-time and step ratios numerator/denominator."""
    reached = {m: time_to_target(c, target) for m, c in curves.items()}
    table = {m: (None if r is None else {"step": r.step, "wall_s": r.wall_s}) for m, r in reached.items()}
    num, den = reached.get(numerator), reached.get(denominator)
    ratio_wall = ratio_steps = None
    if num is not None and den is not None:
        ratio_wall = num.wall_s / den.wall_s if den.wall_s > 0 else None
        ratio_steps = num.step / den.step if den.step > 0 else None
    return {"target": target, "methods": table, "ratio": {
        "numerator": numerator, "denominator": denominator,
        "wall_time": ratio_wall, "steps": ratio_steps}}
