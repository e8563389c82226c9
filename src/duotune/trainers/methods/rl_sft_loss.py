"""RL with SFT loss (SPEC 7): GRPO on the rollouts + sft_coef x mix(progress) x the demo objective
(token-mean NLL by default) on the demonstrations, given as a separate batch of rows.
Imports torch, pydantic and the methods' base, settings and GRPO.
"""

from __future__ import annotations

import torch
from pydantic import Field

from duotune.trainers.methods.base import (
    DEMO_ENTRIES,
    METHODS,
    LossInputs,
    LossOut,
    Method,
    demo_nll,
    masked_mean,
    policy_gradient,
)
from duotune.trainers.methods.grpo import GRPOSettings
from duotune.trainers.methods.settings import ConstantMix, MixSettings, NllWeight, demo_weight_type


class RLSFTSettings(GRPOSettings):
    """GRPO's settings plus the demo term's coefficient, objective and schedule."""

    sft_coef: float = Field(1.0, ge=0, description="weight of the demo term (SPEC 7: 1.0)")
    demo_weight: demo_weight_type("nll") = Field(
        default_factory=NllWeight, description="objective on demo tokens: nll | dft | chord_phi | luffy | trapo")
    mix: MixSettings = Field(default_factory=ConstantMix, description="schedule of the demo weight over "
                             "the stage: {schedule: constant, value} | {schedule: warmup_cosine, "
                             "warmup_frac, decay_frac, peak, valley}")


def rl_sft_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """GRPO on rollout rows + w * demo objective on demo rows, w = sft_coef * mix(progress)."""
    s = inp.settings
    rl = policy_gradient(inp, logp, ent, ~inp.batch.is_demo)
    nll = demo_nll(inp, logp, s.demo_weight)
    w = s.sft_coef * s.mix.at(inp.progress)
    m = {**rl.metrics, "loss/nll": float(nll.detach()), "loss/sft_weight": w}
    if ent is not None:
        m["entropy/mean"] = float(masked_mean(ent.detach(), inp.mask))
    return LossOut(rl.loss + w * nll, m, rl.kl)


METHODS.register("rl_sft_loss", Method(RLSFTSettings, DEMO_ENTRIES.get("sft_batch"), rl_sft_loss,
                                       paper="SPEC 7 baseline (GRPO + NLL on demos)"),
                 help="GRPO on rollouts + 1.0 x token-mean NLL on the demonstrations")
