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


def fraction_target(base: float, final: float, fraction: float) -> float:
    """The accuracy `fraction` of the way from the base model's to a reference's final accuracy
    (docs/protocol.md, H2): base + fraction (final - base), so a target exists whatever the scale."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"target fraction must be in (0, 1] (got {fraction})")
    return base + fraction * (final - base)


@dataclass(frozen=True)
class SeedTime:
    """One run's training seconds to a target; `reached` False means it never got there and `wall_s`
    is its whole training time (a lower bound on the time it would have needed)."""

    wall_s: float
    reached: bool


def seed_time(curve: Sequence[CurvePoint], target: float) -> SeedTime:
    """`time_to_target` of one run, censored at its last point when never reached."""
    r = time_to_target(curve, target)
    return SeedTime(r.wall_s, True) if r else SeedTime(max(p.wall_s for p in curve), False)


def ratio_interval(numerator: Sequence[SeedTime], denominator: Sequence[SeedTime], *, reps: int = 4000,
                   level: float = 0.95, seed: int = 0) -> dict:
    """Mean time of `numerator`'s seeds / mean time of `denominator`'s, with its percentile bootstrap
    interval over seeds (each method's drawn on their own). `censored` names the sides with a run that
    never reached the target: their mean is a lower bound, so a censored numerator makes the ratio a
    lower bound and a censored denominator an upper bound."""
    import numpy as np

    if not numerator or not denominator:
        raise ValueError("ratio_interval needs at least one run on each side")
    a = np.array([t.wall_s for t in numerator], dtype=np.float64)
    b = np.array([t.wall_s for t in denominator], dtype=np.float64)
    if (b <= 0).any():
        raise ValueError("a denominator run reached the target in 0 training seconds (the base model does)")
    rng = np.random.default_rng(seed)
    boot = a[rng.integers(0, len(a), (reps, len(a)))].mean(1) / b[rng.integers(0, len(b), (reps, len(b)))].mean(1)
    lo, hi = (float(v) for v in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
    censored = [side for side, ts in (("numerator", numerator), ("denominator", denominator))
                if not all(t.reached for t in ts)]
    return {"ratio": float(a.mean() / b.mean()), "low": lo, "high": hi, "censored": censored}
