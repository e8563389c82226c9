"""Expert-prefix maths (UFT, Prefix-RFT, TRAPO): the decaying prefix schedule (DESIGN axis 3, registry
`mix_schedule` "cosine_decay"), UFT's binomial hint length, the top-entropy token selection of
Prefix-RFT and the SFT-on-prefix / RL-on-continuation token loss of TRAPO (`policy_loss` "prefix_sft").

Pure torch; imports only duotune.errors/registry and the algos helpers.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from duotune.algos import _shapes
from duotune.algos.demo import demo_objective
from duotune.algos.losses import POLICY_LOSSES, ppo_clip_loss
from duotune.algos.schedules import MIX_SCHEDULES, _progress
from duotune.errors import ConfigError


@MIX_SCHEDULES.register("cosine_decay")
def cosine_decay(step: float, total_steps: float = 1, *, start: float = 0.95, end: float = 0.05,
                 decay_frac: float = 1.0, after: float | None = None) -> float:
    """start -> end by a half cosine over the first decay_frac of the stage, then `after` (default
    end). UFT (arXiv 2505.16984): hint probability 0.95 -> 0.05 over T_hint = 300 of 500 steps, then
    0 (after = 0); Prefix-RFT (arXiv 2507.01679): prefix fraction 0.95 -> 0.05."""
    x = _progress(step, total_steps)
    if not 0 < decay_frac <= 1:
        raise ConfigError(f"cosine_decay decay_frac must be in (0, 1], got {decay_frac}")
    if x > decay_frac:
        return end if after is None else after
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * x / decay_frac))


def uft_hint_segments(num_segments: int, p: float, generator: torch.Generator | None = None) -> int:
    """k ~ Binomial(num_segments, p): how many of a solution's segments UFT reveals as the hint
    (rl_dataset.py: one Bernoulli(p) draw per segment, summed)."""
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"hint probability must be in [0, 1], got {p}")
    if num_segments <= 0:
        return 0
    return int(torch.bernoulli(torch.full((num_segments,), float(p)), generator=generator).sum())


def top_fraction_mask(values: torch.Tensor, mask: torch.Tensor, frac: float) -> torch.Tensor:
    """The ceil(frac * n) tokens of `mask` (n of them) with the largest `values`, as a bool mask.

    Prefix-RFT's entropy-based clipping: only the top 20 % highest-entropy prefix tokens get gradient
    (after "Beyond the 80/20 rule", arXiv 2506.01939). Ties at the threshold are broken by position."""
    _shapes.tensor("values", values, 2, "[N, T]")
    m = _shapes.mask("mask", mask, "values", values)
    if not 0.0 <= frac <= 1.0:
        raise ConfigError(f"top fraction must be in [0, 1], got {frac}")
    n = int(m.sum())
    k = math.ceil(frac * n - 1e-9)
    out = torch.zeros_like(m)
    if k == 0:
        return out
    flat = torch.where(m, values.detach().float(), torch.full_like(values, -math.inf, dtype=torch.float32))
    idx = flat.reshape(-1).topk(k).indices
    return out.reshape(-1).index_fill(0, idx, True).view_as(m)


@POLICY_LOSSES.register("prefix_sft")
def prefix_sft_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    prefix: torch.Tensor, *, demo_weight: str = "trapo", clip: bool = False,
                    eps_low: float = 0.2, eps_high: float = 0.2, **weight_params: Any,
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """TRAPO's per-token loss (arXiv 2512.17636; released mix_core_alg.py): on prefix tokens the
    SFT-type l = -J(logp), J the `demo_weight` objective (TRAPO: p / max(sg(p), alpha), advantage 1:
    `advantages_of_hint = ones`); on the policy's tokens the PPO surrogate with A (clip off in the
    released script: `loss_remove_clip`; `clip` turns it on). Zero off `mask`; reduce with `aggregate`.
    Metrics: the surrogate's, prefix_p_mean, prefix_token_frac."""
    _shapes.tensor("logp", logp, 2, "[N, T]")
    m = _shapes.mask("mask", mask, "logp", logp)
    pre = _shapes.mask("prefix", prefix, "logp", logp) & m
    on = m & ~pre
    eps = (eps_low, eps_high) if clip else (math.inf, math.inf)
    on_loss, metrics = ppo_clip_loss(logp, old_logp, advantages, on, eps[0], eps[1])
    j = demo_objective(demo_weight, logp, **weight_params)
    loss = torch.where(pre, -j, on_loss)
    with torch.no_grad():
        metrics["prefix_p_mean"] = float(torch.where(pre, logp.exp(), torch.zeros_like(logp)).sum()
                                         / pre.sum().clamp(min=1))
        metrics["prefix_token_frac"] = float(pre.sum() / m.sum().clamp(min=1))
    return loss, metrics
