"""Per-token policy losses: PPO/GRPO clipped surrogate, LUFFY's mixed-policy loss, SFT NLL.

Registry `policy_loss`: `ppo_clip` and `luffy`, both `(logp, old_logp, advantages, mask, ...) ->
([N, T] loss, metrics)`; the [N, T] matrix is zero off the mask and is reduced by `aggregate`.
Pure torch; imports only duotune.errors/registry and the algos helpers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from duotune.algos import _shapes
from duotune.algos.demo import demo_objective
from duotune.errors import ConfigError
from duotune.registry import Registry

POLICY_LOSSES: Registry[Callable[..., tuple[torch.Tensor, dict[str, float]]]] = Registry("policy_loss")


def _mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float(torch.where(mask, x, torch.zeros_like(x)).sum() / mask.sum().clamp(min=1))


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, eps_low: float = 0.2, eps_high: float = 0.2,
                  dual_clip: float | None = None, log_ratio_clamp: float | None = None,
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate l = -min(rho*A, clip(rho, 1-eps_low, 1+eps_high)*A), rho = exp(logp - old_logp).

    PPO (arXiv 1707.06347) with DAPO's decoupled clip range (arXiv 2503.14476). `advantages` is [N]
    (one per sequence) or [N, T]. `dual_clip` = c > 1 also bounds the loss by -c*A for A < 0
    (Ye et al. 2020, arXiv 1912.09729). `log_ratio_clamp` = c bounds logp - old_logp to [-c, c]
    before the exp (verl clamps it to [-20, 20]; None, TRL's choice, leaves it). Metrics over masked tokens: clip_frac_low (A < 0 and
    rho < 1-eps_low), clip_frac_high (A > 0 and rho > 1+eps_high), approx_kl = mean(old_logp - logp)
    (k1 estimate of KL(old || new) on samples from old), ratio_mean, and dual_clip_frac when used.
    """
    _shapes.tensor("logp", logp, 2, "[N, T]")
    _shapes.same_shape("old_logp", old_logp, "logp", logp)
    m = _shapes.mask("mask", mask, "logp", logp)
    adv = _shapes.rows_or_tokens("advantages", advantages, "logp", logp).to(logp.dtype)
    if eps_low < 0 or eps_high < 0:
        raise ConfigError(f"clip epsilons must be >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if dual_clip is not None and dual_clip <= 1:
        raise ConfigError(f"dual_clip must be > 1 (Ye et al. 2020), got {dual_clip}")
    if log_ratio_clamp is not None and log_ratio_clamp <= 0:
        raise ConfigError(f"log_ratio_clamp must be > 0 (or None), got {log_ratio_clamp}")
    # Mask before exp so that garbage at padded positions cannot overflow into inf * 0 = nan.
    log_ratio = torch.where(m, logp - old_logp, torch.zeros_like(logp))
    if log_ratio_clamp is not None:
        log_ratio = log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = log_ratio.exp()
    surr = -torch.minimum(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    metrics: dict[str, float] = {}
    if dual_clip is not None:
        bounded = torch.minimum(surr, -dual_clip * adv)
        metrics["dual_clip_frac"] = _mean(((adv < 0) & (bounded < surr)).to(logp.dtype), m)
        surr = torch.where(adv < 0, bounded, surr)
    loss = torch.where(m, surr, torch.zeros_like(surr))
    with torch.no_grad():
        metrics.update(
            clip_frac_low=_mean(((adv < 0) & (ratio < 1 - eps_low)).to(logp.dtype), m),
            clip_frac_high=_mean(((adv > 0) & (ratio > 1 + eps_high)).to(logp.dtype), m),
            approx_kl=_mean(-log_ratio, m),
            ratio_mean=_mean(ratio, m),
        )
    return loss, metrics


def sft_nll(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean negative log-likelihood over `mask` (0 when the mask is empty)."""
    _shapes.tensor("logp", logp, 2, "[N, T]")
    m = _shapes.mask("mask", mask, "logp", logp)
    return -torch.where(m, logp, torch.zeros_like(logp)).sum() / m.sum().clamp(min=1)


@POLICY_LOSSES.register("luffy")
def mixed_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      mask: torch.Tensor, is_demo: torch.Tensor | None = None, *,
                      demo_weight: str = "luffy", gamma: float = 0.1, clip: bool = False,
                      eps_low: float = 0.2, eps_high: float = 0.2, dual_clip: float | None = None,
                      log_ratio_clamp: float | None = None,
                      **demo_params: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """LUFFY's mixed-policy per-token loss (arXiv 2504.14945, SPEC 5).

    Demo tokens (`is_demo`: row flags [N] or a token mask [N, T]; None = no demos):
    l = -A * J(logp) with J the `demo_weight` objective, LUFFY's p/(p+gamma) by default; the
    behaviour policy is taken as 1 so no clip applies. Other tokens: the PPO surrogate, clipped
    only when `clip` (LUFFY's script removes the clip; `dual_clip` and `log_ratio_clamp` as in
    `ppo_clip_loss`, applied whether or not `clip` is on). Extra keywords (e.g. alpha) go to J.
    Metrics: the rollout PPO metrics plus demo_p_mean, demo_token_frac, demo_loss (token mean).
    """
    _shapes.tensor("logp", logp, 2, "[N, T]")
    m = _shapes.mask("mask", mask, "logp", logp)
    demo = torch.zeros_like(m) if is_demo is None else _shapes.demo_tokens(is_demo, "logp", logp)
    demo_tok, roll_tok = m & demo, m & ~demo
    eps = (eps_low, eps_high) if clip else (math.inf, math.inf)
    roll_loss, metrics = ppo_clip_loss(logp, old_logp, advantages, roll_tok, eps[0], eps[1],
                                       dual_clip=dual_clip, log_ratio_clamp=log_ratio_clamp)
    adv = _shapes.rows_or_tokens("advantages", advantages, "logp", logp).to(logp.dtype)
    j = demo_objective(demo_weight, logp, gamma=gamma, **demo_params)
    demo_loss = torch.where(demo_tok, -adv * j, torch.zeros_like(logp))
    loss = torch.where(demo_tok, demo_loss, roll_loss)
    with torch.no_grad():
        metrics.update(
            demo_p_mean=_mean(logp.exp(), demo_tok),
            demo_token_frac=float(demo_tok.sum() / m.sum().clamp(min=1)),
            demo_loss=_mean(demo_loss, demo_tok),
        )
    return loss, metrics


def policy_loss(name: str) -> Callable[..., tuple[torch.Tensor, dict[str, float]]]:
    """The registered policy loss `name`: `(logp, old_logp, advantages, mask, ...) -> ([N, T], metrics)`."""
    return POLICY_LOSSES.get(name)
