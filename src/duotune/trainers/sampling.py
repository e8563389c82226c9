"""DAPO's dynamic sampling (arXiv 2503.14476, eq. 11; verl recipe/dapo `filter_groups`): drop the
groups whose rewards are all equal (zero advantage, no gradient) and sample more prompts until the
step holds `prompts_per_step` informative groups, or the cap on extra rounds is reached.

When the cap is reached the batch is filled up with equal-reward groups in sampling order (zero
advantage under GRPO), so every step trains on the same number of groups; verl raises an error
there instead. Knows rollouts and tensors only; the step supplies `draw(round)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from duotune.rollout import Rollout


class Scored(NamedTuple):
    """A sampled rollout with its per-row total rewards, solved flags and reward metrics."""

    rollout: Rollout
    rewards: torch.Tensor
    correct: torch.Tensor
    metrics: dict[str, float]


def informative(rollout: Rollout, rewards: torch.Tensor) -> list[bool]:
    """Per step prompt: its group's rewards are not all equal (a prompt without a group counts as
    such). An expert batch's examples (the last `n_expert`, CHORD) are not step prompts: not listed."""
    out = []
    for b in range(len(rollout.examples) - rollout.n_expert):
        r = [float(rewards[i]) for i, (s, g) in enumerate(zip(rollout.source, rollout.group_ids)) if s == b and g >= 0]
        out.append(not r or max(r) > min(r))
    return out


def dynamic_sample(draw: Callable[[int], Scored], want: int, max_extra_rounds: int) -> tuple[Scored, dict[str, Any]]:
    """Round 0, then extra rounds while fewer than `want` informative groups are kept (at most
    `max_extra_rounds`); the batch is the first `want` informative groups, filled up with
    equal-reward ones when the rounds run out. Returns it (with round 0's reward metrics, the
    policy's unfiltered statistics) and the `dynamic/*` metrics."""
    rounds: list[Scored] = []
    kept: list[tuple[int, int]] = []
    flat: list[tuple[int, int]] = []
    while True:
        scored = draw(len(rounds))
        r = len(rounds)
        rounds.append(scored)
        for b, ok in enumerate(informative(scored.rollout, scored.rewards)):
            (kept if ok else flat).append((r, b))
        if len(kept) >= want or r >= max_extra_rounds:
            break
    picks = kept[:want] + flat[:max(0, want - len(kept))]
    first = rounds[0].rollout  # round 0's expert batch (if any) follows the picked groups
    experts = [(0, b) for b in range(len(first.examples) - first.n_expert, len(first.examples))]
    parts, rewards, correct = [], [], []
    for r, b in picks + experts:
        sc = rounds[r]
        rows = torch.tensor([i for i, s in enumerate(sc.rollout.source) if s == b], dtype=torch.long)
        parts.append(sc.rollout.take([b]))
        rewards.append(sc.rewards[rows])
        correct.append(sc.correct[rows])
    sampled = sum(len(sc.rollout.examples) - sc.rollout.n_expert for sc in rounds)
    metrics = {"dynamic/rounds": float(len(rounds)), "dynamic/sampled_prompts": float(sampled),
               "dynamic/informative_frac": float(len(kept) / max(1, sampled)),
               "dynamic/filled": float(max(0, want - len(kept)))}
    joined = Rollout.join(parts)
    joined.n_expert = first.n_expert
    return Scored(joined, torch.cat(rewards), torch.cat(correct), rounds[0].metrics), metrics
