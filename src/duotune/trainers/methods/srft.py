"""SRFT (arXiv 2506.19767, SPEC 6): one stage of entropy-weighted SFT on the demonstration,
LUFFY-shaped off-policy RL on it and outcome-split self-rollout terms (`algos.srft_loss`).

No ratio, no clip, no KL: the loss never reads old log-probs, so none are computed. Where the paper
and the released code differ (w_sft = 0.5 exp(-H) vs exp(+H)) `sft_weight_sign` switches.
Imports torch, pydantic, algos and the methods' base and settings.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from duotune import algos
from duotune.trainers.methods.base import (
    DEMO_ENTRIES,
    METHODS,
    GroupMethodSettings,
    LossInputs,
    LossOut,
    Method,
    demo_metrics,
)
from duotune.trainers.methods.settings import AdvantageName, adv_eps_field, advantage_field, mini_batches_field


class SRFTSettings(GroupMethodSettings):
    """SRFT's coefficients (SPEC 6); the aggregation is SRFT's own (sum / L_max), not a setting."""

    stats_field = "demo_in_group_stats"

    advantage: AdvantageName = advantage_field("no_std")
    adv_eps: float = adv_eps_field()
    demo_in_group_stats: bool = Field(True, description="the demo counts in the group mean (SRFT: A "
                                      "over the augmented group)")
    sft_coef: float = Field(0.5, ge=0, description="w_sft = sft_coef * sg(exp(sign * H)) (SRFT: 0.5)")
    rl_coef: float = Field(0.1, ge=0, description="w_rl = rl_coef * sg(exp(H)) on correct rollouts "
                                                  "(SRFT: 0.1)")
    gamma: float = Field(0.1, gt=0, description="LUFFY shaping p/(p+gamma) of the off-policy demo term "
                                                "(SRFT: 0.1)")
    entropy_coef: float = Field(0.001, description="entropy bonus over all tokens (SRFT: 0.001)")
    sft_weight_sign: Literal[-1, 1] = Field(-1, description="w_sft = sft_coef*exp(sign*H): -1 as the "
                                            "paper writes it, +1 as the released code reportedly has it")
    entropy_granularity: Literal["sequence", "token", "batch"] = Field(
        "sequence", description="entropy H in w_sft: per demo sequence (paper), per token, or batch")
    ppo_mini_batches: int = mini_batches_field()


def srft_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """L_sft + (demo RL + correct / incorrect rollout terms) / L_max - entropy_coef * mean(H)."""
    s = inp.settings
    loss, metrics = algos.srft_loss(
        logp=logp, token_entropy=ent, mask=inp.mask, is_demo=inp.batch.demo_mask,
        advantages=inp.advantages, rewards=inp.rewards, l_max=inp.l_max, sft_coef=s.sft_coef,
        rl_coef=s.rl_coef, gamma=s.gamma, entropy_coef=s.entropy_coef, sft_weight_sign=s.sft_weight_sign,
        entropy_granularity=s.entropy_granularity)
    m = {k if "/" in k else f"srft/{k}": float(v) for k, v in metrics.items()}
    m.update(demo_metrics(inp, logp, ent))
    return LossOut(loss, m)


METHODS.register("srft", Method(SRFTSettings, DEMO_ENTRIES.get("group_member"), srft_loss,
                                paper="SRFT arXiv 2506.19767; SPEC 6", uses_ratio=False),
                 help="SRFT: one-stage SFT + RL with entropy-aware weights")
