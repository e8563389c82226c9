"""RL-PLUS's hybrid-policy loss (arXiv 2508.00222; code github.com/YihongDong/RL-PLUS,
`verl/recipe/rlplus_core_alg.py`): multiple importance sampling on demonstration tokens and an
exploration-based advantage, the PPO surrogate on the policy's own tokens. Registered as the
`rl_plus` policy loss. Pure torch; imports only duotune.errors and the algos helpers.
"""

from __future__ import annotations

import math

import torch

from duotune.algos import _shapes
from duotune.algos.losses import POLICY_LOSSES, ppo_clip_loss
from duotune.errors import ConfigError


def mis_ratio(logp: torch.Tensor, old_logp: torch.Tensor, old_weight: float = 0.75) -> torch.Tensor:
    """r = pi_theta / (w pi_old + (1 - w)): the demo's behaviour policy is taken as the mixture of the
    old policy and a policy that puts probability 1 on the demo token (w = 0.75 in the release:
    2 p / (p_old + 0.5 (p_old + 1))). The gradient flows through pi_theta only."""
    if not 0 <= old_weight <= 1:
        raise ConfigError(f"RL-PLUS mixture weight must be in [0, 1], got {old_weight}")
    return logp.exp() / (old_weight * old_logp.detach().exp() + (1 - old_weight))


def exploration_advantage(advantages: torch.Tensor, logp: torch.Tensor, power: float = 0.5) -> torch.Tensor:
    """A_explore = A (1 - sg(pi_theta))^power: demo tokens the policy finds unlikely weigh most."""
    if power < 0:
        raise ConfigError(f"RL-PLUS exploration power must be >= 0, got {power}")
    return advantages * (1 - logp.detach().exp()).clamp(min=0) ** power


@POLICY_LOSSES.register("rl_plus")
def rl_plus_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                 is_demo: torch.Tensor, *, old_weight: float = 0.75, explore_power: float = 0.5,
                 clip: bool = False, eps_low: float = 0.2, eps_high: float = 0.2,
                 dual_clip: float | None = None, log_ratio_clamp: float | None = None,
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token loss [N, T]: demo tokens l = -r * A_explore (`mis_ratio`, `exploration_advantage`; no
    clip), other tokens the PPO surrogate, clipped only when `clip` (the release removes the clip).

    `advantages` is [N] or [N, T]; `is_demo` row flags [N] or a token mask [N, T]. Metrics: the
    rollout PPO metrics plus demo_ratio_mean, demo_p_mean, demo_explore_weight (mean (1 - p)^power).
    """
    _shapes.tensor("logp", logp, 2, "[N, T]")
    _shapes.same_shape("old_logp", old_logp, "logp", logp)
    m = _shapes.mask("mask", mask, "logp", logp)
    demo = _shapes.demo_tokens(is_demo, "logp", logp)
    demo_tok, roll_tok = m & demo, m & ~demo
    eps = (eps_low, eps_high) if clip else (math.inf, math.inf)
    roll_loss, metrics = ppo_clip_loss(logp, old_logp, advantages, roll_tok, eps[0], eps[1],
                                       dual_clip=dual_clip, log_ratio_clamp=log_ratio_clamp)
    adv = _shapes.rows_or_tokens("advantages", advantages, "logp", logp).to(logp.dtype)
    # Mask before exp so that padded positions cannot overflow.
    safe_logp = torch.where(demo_tok, logp, torch.zeros_like(logp))
    safe_old = torch.where(demo_tok, old_logp, torch.zeros_like(old_logp))
    ratio = mis_ratio(safe_logp, safe_old, old_weight)
    demo_loss = torch.where(demo_tok, -ratio * exploration_advantage(adv, safe_logp, explore_power),
                            torch.zeros_like(logp))
    loss = torch.where(demo_tok, demo_loss, roll_loss)
    with torch.no_grad():
        n = demo_tok.sum().clamp(min=1)
        metrics.update(
            demo_ratio_mean=float(torch.where(demo_tok, ratio, 0).sum() / n),
            demo_p_mean=float(torch.where(demo_tok, safe_logp.exp(), 0).sum() / n),
            demo_explore_weight=float(torch.where(demo_tok, (1 - safe_logp.exp()).clamp(min=0) ** explore_power,
                                                  0).sum() / n))
    return loss, metrics
