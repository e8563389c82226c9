"""GRPO (SPEC 1; DeepSeekMath arXiv 2402.03300) and GRPO-D (OThink-MR1 arXiv 2503.16081, SPEC 2):
the clipped surrogate on G rollouts per prompt with group advantages, plus beta * KL to the reference.

GRPO-D is GRPO whose KL weight follows the grpo_d schedule; its settings only take that controller.
Imports torch, pydantic and the methods' base and settings.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from duotune.trainers.methods.base import (
    DEMO_ENTRIES,
    METHODS,
    GroupMethodSettings,
    LossInputs,
    LossOut,
    Method,
    masked_mean,
    policy_gradient,
)
from duotune.trainers.methods.settings import (
    AdvantageName,
    AggregationName,
    ClipSettings,
    FixedKLSettings,
    GrpoDKLSettings,
    GrpoDOnly,
    KLSettings,
    RolloutCorrectionSettings,
    adv_eps_field,
    advantage_field,
    mini_batches_field,
)


class GRPOSettings(RolloutCorrectionSettings, GroupMethodSettings, ClipSettings):
    """GRPO: group advantages, PPO clip, KL controller fixed | adaptive | grpo_d."""

    advantage: AdvantageName = advantage_field("grpo")
    adv_eps: float = adv_eps_field()
    aggregation: AggregationName = Field("token_mean", description="[N, T] loss -> scalar: token_mean "
                                         "(DAPO) | seq_mean_token_mean (GRPO, R1-V) | "
                                         "seq_mean_token_sum_norm (Dr. GRPO) | sum_over_lmax (LUFFY)")
    entropy_coef: float = Field(0.0, description="entropy bonus: loss -= coef * mean(H)")
    kl: KLSettings = Field(default_factory=FixedKLSettings,
                           description="KL to the reference: {controller: fixed, beta} | {controller: "
                                       "adaptive, beta, target, horizon} | {controller: grpo_d, ...}")
    ppo_mini_batches: int = mini_batches_field()

    def kl_term(self) -> Any:
        return self.kl


class GRPODSettings(GRPOSettings):
    """GRPO-D: GRPO with OThink-MR1's dynamic KL weight (the grpo_d schedule only)."""

    kl: GrpoDOnly = Field(default_factory=GrpoDKLSettings,
                          description="the grpo_d schedule: {beta_min, beta_max, explore_frac, estimator}")


def grpo_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """Clipped surrogate on the rollouts, KL to the reference when its weight is not 0."""
    out = policy_gradient(inp, logp, ent, ~inp.batch.is_demo)
    if ent is not None:
        out.metrics["entropy/mean"] = float(masked_mean(ent.detach(), inp.mask))
    return out


METHODS.register("grpo", Method(GRPOSettings, DEMO_ENTRIES.get("none"), grpo_loss,
                                paper="DeepSeekMath arXiv 2402.03300; SPEC 1"),
                 help="GRPO; KL controller fixed | adaptive | grpo_d (algo.kl)")
METHODS.register("grpo_d", Method(GRPODSettings, DEMO_ENTRIES.get("none"), grpo_loss,
                                  paper="OThink-MR1 arXiv 2503.16081 (v2); SPEC 2"),
                 help="GRPO-D (OThink-MR1): GRPO with the grpo_d dynamic KL schedule")
