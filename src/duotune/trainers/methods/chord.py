"""CHORD (arXiv 2508.11408; code: Trinity-RFT, `trinity/algorithm/policy_loss_fn/chord_policy_loss.py`
`mix_chord`, sample strategy `mix`): L = (1 - mu) L_GRPO + mu L_SFT, the SFT term over an expert
batch drawn apart from the step's RL prompts, each term averaged over its own samples.

Two bundles: `chord_mu` (mu by linear warm-up to mu_peak then cosine to mu_valley, plain NLL) and
`chord_phi` (constant mu 0.1, expert-token NLL times sg(p(1 - p))). Choices where duotune differs:
the expert batch is a second seeded stream over data.train's demos (Trinity reads a separate SFT set);
mu's schedule is in shares of the stage (Trinity: steps). Imports torch, pydantic and the methods.
"""

from __future__ import annotations

import math
from typing import Annotated

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
from duotune.trainers.methods.settings import (
    ChordPhiWeight,
    ConstantMix,
    MixSettings,
    NllWeight,
    WarmupCosineMix,
    _tagged,
    demo_weight_type,
)

# CHORD-mu's mu: a mapping without `schedule` means warmup_cosine (the shared MixSettings means constant).
MuSettings = Annotated[ConstantMix | WarmupCosineMix, Field(discriminator="schedule"),
                       _tagged("schedule", "warmup_cosine")]
_MU = ("mu over the stage: {schedule: warmup_cosine, warmup_frac, decay_frac, peak, valley} | "
       "{schedule: constant, value}")


class ChordMuSettings(GRPOSettings):
    """CHORD-mu: GRPO's settings, an expert ratio, mu warm-up + cosine 0.9 -> 0.05, plain NLL."""

    expert_ratio: float = Field(0.2, gt=0, lt=1, description="share of the step's rows that are expert "
                                "demonstrations, a separate draw (CHORD: expert_data_ratio 0.2, e.g. 64 "
                                "of 320); expert rows = ceil(ratio / (1 - ratio) x rollouts)")
    mu: MuSettings = Field(default_factory=WarmupCosineMix, description=_MU + " (CHORD-mu: 0.9 -> 0.05, "
                            "no warm-up, decaying over 200 steps; here over decay_frac of the stage)")
    demo_weight: demo_weight_type("nll") = Field(
        default_factory=NllWeight, description="objective on expert tokens: nll (CHORD-mu) | chord_phi "
                                               "(CHORD-phi) | dft | luffy | trapo")

    def expert_rows(self, n_rollouts: int) -> int:
        # Trinity reads ceil(ratio x total) expert rows and the rest from the rollouts; given the
        # rollouts, that is ratio / (1 - ratio) of them (the epsilon keeps 64.000...01 at 64).
        return math.ceil(self.expert_ratio / (1 - self.expert_ratio) * n_rollouts - 1e-9)


class ChordPhiSettings(ChordMuSettings):
    """CHORD-phi: constant mu 0.1 and the expert-token weight sg(p (1 - p))."""

    mu: MixSettings = Field(default_factory=lambda: ConstantMix(value=0.1),
                            description=_MU + " (CHORD-phi: constant 0.1)")
    demo_weight: demo_weight_type("chord_phi") = Field(
        default_factory=ChordPhiWeight, description="objective on expert tokens: chord_phi (CHORD-phi) | "
                                                    "nll | dft | luffy | trapo")


def chord_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """(1 - mu) x GRPO on the rollouts (its own aggregation) + mu x the expert-token objective
    (token mean over the expert rows), minus the entropy bonus on rollout tokens outside the mix."""
    s = inp.settings
    rollouts = ~inp.batch.is_demo
    rl = policy_gradient(inp, logp, None, rollouts)
    sft = demo_nll(inp, logp, s.demo_weight)
    mu = s.mu.at(inp.progress)
    loss = (1 - mu) * rl.loss + mu * sft
    m = {**rl.metrics, "loss/nll": float(sft.detach()), "chord/mu": mu,
         "chord/expert_rows": float(inp.batch.is_demo.sum())}
    if ent is not None:
        h = masked_mean(ent, inp.mask * rollouts[:, None].to(inp.mask.dtype))
        m.update({"entropy/on_policy": float(h.detach()), "entropy/mean": float(masked_mean(ent.detach(), inp.mask))})
        if s.entropy_coef:
            loss = loss - s.entropy_coef * h
    return LossOut(loss, m, rl.kl)


_PAPER = "CHORD arXiv 2508.11408; Trinity-RFT mix_chord"
METHODS.register("chord_mu", Method(ChordMuSettings, DEMO_ENTRIES.get("expert_batch"), chord_loss, paper=_PAPER),
                 help="CHORD-mu: (1-mu) GRPO + mu NLL on a separate expert batch, mu 0.9 -> 0.05")
METHODS.register("chord_phi", Method(ChordPhiSettings, DEMO_ENTRIES.get("expert_batch"), chord_loss,
                                     paper=_PAPER),
                 help="CHORD-phi: 0.9 GRPO + 0.1 sg(p(1-p))-weighted NLL on a separate expert batch")
