"""SRFT's single-stage loss (arXiv 2506.19767, SPEC 6): entropy-weighted SFT on the demonstration,
LUFFY-shaped off-policy RL on it, and outcome-split self-rollout terms, minus an entropy bonus.

Pure torch; imports only duotune.errors and the algos helpers.
"""

from __future__ import annotations

import torch

from duotune.algos import _shapes
from duotune.algos.demo import luffy_shaping
from duotune.errors import ConfigError

GRANULARITIES = ("sequence", "token", "batch")


def _row_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(m, x, torch.zeros_like(x)).sum(-1) / m.sum(-1).clamp(min=1)


def _mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(m, x, torch.zeros_like(x)).sum() / m.sum().clamp(min=1)


def _sft_weight(h: torch.Tensor, demo_tok: torch.Tensor, sft_coef: float, sign: int,
                granularity: str) -> torch.Tensor:
    """Per-token w_sft = sft_coef * exp(sign * H_bar) with H_bar per demo sequence, per token or
    over all demo tokens; `h` is already detached, so w_sft = sft_coef * sg(exp(sign * H_bar))."""
    if granularity == "sequence":
        hbar = _row_mean(h, demo_tok)[:, None].expand_as(h)
    elif granularity == "token":
        hbar = h
    else:
        hbar = _mean(h, demo_tok).expand_as(h)
    return sft_coef * torch.exp(sign * hbar)


def _check(logp: torch.Tensor, token_entropy: torch.Tensor, mask: torch.Tensor, is_demo: torch.Tensor,
           rewards: torch.Tensor, advantages: torch.Tensor, l_max: int, sign: int, granularity: str,
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate SRFT's inputs; return (demo tokens, rollout tokens, rewards [N], advantages [N, T])."""
    _shapes.tensor("logp", logp, 2, "[N, T]")
    _shapes.same_shape("token_entropy", token_entropy, "logp", logp)
    m = _shapes.mask("mask", mask, "logp", logp)
    demo = _shapes.demo_tokens(is_demo, "logp", logp)
    r = _shapes.rows("rewards", rewards, logp.shape[0])
    adv = _shapes.rows_or_tokens("advantages", advantages, "logp", logp).to(logp.dtype)
    _shapes.positive_length(l_max)
    if sign not in (-1, 1):
        raise ConfigError(f"sft_weight_sign must be -1 (paper: exp(-H)) or +1 (released code: exp(+H)), "
                          f"got {sign!r}")
    if granularity not in GRANULARITIES:
        raise ConfigError(f"entropy_granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}")
    roll_rows = (m & ~demo).any(-1)
    bad = roll_rows & (r != 0) & (r != 1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ConfigError(f"rewards[{i}] = {float(r[i])}: srft_loss needs binary rollout rewards in "
                          f"{{0, 1}} (SPEC 6 splits rollouts into correct r = 1 and incorrect r = 0); "
                          f"use a 0/1 reward such as math")
    return m & demo, m & ~demo, r, adv


def srft_loss(logp: torch.Tensor, token_entropy: torch.Tensor, mask: torch.Tensor,
              is_demo: torch.Tensor, rewards: torch.Tensor, advantages: torch.Tensor, l_max: int, *,
              sft_coef: float = 0.5, rl_coef: float = 0.1, gamma: float = 0.1,
              entropy_coef: float = 0.001, sft_weight_sign: int = -1,
              entropy_granularity: str = "sequence") -> tuple[torch.Tensor, dict[str, float]]:
    """L = L_sft + (sum of (B) and (C) token losses) / l_max - entropy_coef * mean(H) (SPEC 6).

    logp, token_entropy, mask: [N, T]; is_demo: [N] row flags (or an [N, T] token mask);
    rewards, advantages: [N]. (A) L_sft = token mean over demo tokens of w_sft * (-logp),
    w_sft = sft_coef * sg(exp(sft_weight_sign * H_bar)) (paper: sign -1). (B) demo tokens:
    -A * p/(p+gamma). (C) rollout tokens: -w_rl_i * logp when r_i = 1, w_rl_i = rl_coef *
    sg(exp(+H_bar_i)) (sequence mean over its tokens), +logp when r_i = 0. The entropy bonus uses
    the masked mean of `token_entropy` over all valid tokens, with its gradient.
    """
    demo_tok, roll_tok, r, adv = _check(logp, token_entropy, mask, is_demo, rewards, advantages,
                                        l_max, sft_weight_sign, entropy_granularity)
    zero = torch.zeros_like(logp)
    h = token_entropy.detach()
    w_sft = _sft_weight(h, demo_tok, sft_coef, sft_weight_sign, entropy_granularity)
    l_sft = _mean(w_sft * -logp, demo_tok)
    l_demo_rl = torch.where(demo_tok, -adv * luffy_shaping(logp, gamma), zero).sum() / l_max
    correct = roll_tok & (r == 1)[:, None]
    w_rl = rl_coef * torch.exp(_row_mean(h, roll_tok))
    l_pos = torch.where(correct, -w_rl[:, None] * logp, zero).sum() / l_max
    l_neg = torch.where(roll_tok & ~correct, logp, zero).sum() / l_max
    h_all = _mean(token_entropy, demo_tok | roll_tok)
    loss = l_sft + l_demo_rl + l_pos + l_neg - entropy_coef * h_all
    correct_rows = correct.any(-1)
    with torch.no_grad():
        metrics = {
            "loss": loss, "loss_sft": l_sft, "loss_demo_rl": l_demo_rl, "loss_correct": l_pos,
            "loss_incorrect": l_neg, "loss_entropy": -entropy_coef * h_all,
            "w_sft": _mean(w_sft, demo_tok),
            "w_rl": w_rl[correct_rows].mean() if bool(correct_rows.any()) else zero.sum(),
            "entropy": h_all, "entropy_on_policy": _mean(h, roll_tok), "entropy_demo": _mean(h, demo_tok),
            "demo_p_mean": _mean(logp.exp(), demo_tok),
        }
    return loss, {k: float(v.detach()) for k, v in metrics.items()}
