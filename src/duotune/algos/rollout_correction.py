"""Off-policy correction for the sampler/trainer mismatch (vLLM samples, transformers trains).

Registry `rollout_correction`: `none` and `tis`, both `(train_logp, rollout_logp, mask, cap) ->
(weights [N, T], metrics)`. `tis` is truncated importance sampling per token, w = min(exp(train_logp
- rollout_logp), C), detached, C = 2 by default: TRL's `vllm_importance_sampling_correction` /
`vllm_importance_sampling_cap` and verl's rollout correction (token-level IS weights; Yao et al.,
"Your efficient RL framework secretly brings you off-policy RL training", 2025). The loss multiplies
its per-token terms by w. Imports torch, duotune.errors/registry and the algos helpers only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from duotune.algos import _shapes
from duotune.errors import ConfigError
from duotune.registry import Registry

ROLLOUT_CORRECTIONS: Registry[Callable[..., tuple[torch.Tensor, dict[str, float]]]] = Registry(
    "rollout_correction")


def _checked(train_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_ratio train - rollout, zero off the mask, detached; the mask as bool)."""
    _shapes.tensor("train_logp", train_logp, 2, "[N, T]")
    _shapes.same_shape("rollout_logp", rollout_logp, "train_logp", train_logp)
    m = _shapes.mask("mask", mask, "train_logp", train_logp)
    diff = (train_logp.detach() - rollout_logp.detach().to(train_logp.dtype))
    # Zero off the mask before any exp: demo rows and padding carry no engine log-prob.
    return torch.where(m, diff, torch.zeros_like(diff)), m


def logp_mismatch(train_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far the engine's log-probs are from the trainer's on the sampled tokens of `mask`:
    `logp_diff_mean` = mean |train - rollout| and `logp_diff_max` = max |train - rollout|
    (0 when the mask is empty), as TRL's sampling_logp_difference mean/max."""
    diff, m = _checked(train_logp, rollout_logp, mask)
    absd = diff.abs()
    n = int(m.sum())
    return {"logp_diff_mean": float(absd.sum() / max(n, 1)), "logp_diff_max": float(absd.max()) if n else 0.0}


def _weight_metrics(weights: torch.Tensor, clipped: torch.Tensor, m: torch.Tensor) -> dict[str, float]:
    n = max(int(m.sum()), 1)
    return {"is_weight_mean": float(torch.where(m, weights, torch.zeros_like(weights)).sum() / n),
            "is_clip_frac": float((clipped & m).sum() / n)}


@ROLLOUT_CORRECTIONS.register("none")
def no_correction(train_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor,
                  cap: float = 2.0) -> tuple[torch.Tensor, dict[str, float]]:
    """No correction: every weight is 1 (the mismatch is still measured)."""
    diff, m = _checked(train_logp, rollout_logp, mask)
    ones = torch.ones_like(diff)
    return ones, {**logp_mismatch(train_logp, rollout_logp, mask),
                  **_weight_metrics(ones, torch.zeros_like(m), m)}


@ROLLOUT_CORRECTIONS.register("tis")
def truncated_is(train_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor,
                 cap: float = 2.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated importance sampling: w = min(exp(train_logp - rollout_logp), cap) on the mask,
    1 off it (demos and padding: nothing was sampled there), detached (a weight, not a gradient path).

    Metrics: logp_diff_mean/max (see `logp_mismatch`), is_weight_mean and is_clip_frac (share of
    masked tokens whose ratio exceeded cap) over the mask.
    """
    if not cap > 0:
        raise ConfigError(f"rollout correction cap must be > 0 (TRL/verl default 2.0), got {cap}")
    diff, m = _checked(train_logp, rollout_logp, mask)
    ratio = diff.exp()
    weights = torch.where(m, ratio.clamp(max=cap), torch.ones_like(ratio))
    return weights, {**logp_mismatch(train_logp, rollout_logp, mask), **_weight_metrics(weights, ratio > cap, m)}


def rollout_correction(kind: str, train_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor,
                       cap: float = 2.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token weights [N, T] and mismatch metrics of the registered correction `kind` (none | tis)."""
    return ROLLOUT_CORRECTIONS.get(kind)(train_logp, rollout_logp, mask, cap=cap)
