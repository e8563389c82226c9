"""SFT (SPEC 7): token-mean NLL on the demonstrations, or a re-weighted token objective (DFT's
sg(p), CHORD's sg(p(1-p)), ...) through `demo_weight`. No rollouts, no reward, no reference.
Imports torch, pydantic and the methods' base and settings.
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
    MethodSettings,
    demo_nll,
    masked_mean,
)
from duotune.trainers.methods.settings import NllWeight, demo_weight_type


class SFTSettings(MethodSettings):
    """Supervised fine-tuning on the demonstrations."""

    demo_weight: demo_weight_type("nll") = Field(
        default_factory=NllWeight, description="per-token objective on demo tokens: nll (plain SFT) | dft (DFT, "
                           "arXiv 2508.05629) | chord_phi | luffy | trapo")


def sft_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """Token mean over demo tokens of -J(logp); J = logp (NLL) by default."""
    loss = demo_nll(inp, logp, inp.settings.demo_weight)
    m = {"loss/nll": float(loss.detach())}
    if ent is not None:
        m["entropy/mean"] = float(masked_mean(ent.detach(), inp.mask * inp.batch.is_demo[:, None]))
    return LossOut(loss, m)


METHODS.register("sft", Method(SFTSettings, DEMO_ENTRIES.get("sft_only"), sft_loss, paper="SPEC 7 baseline",
                               uses_reward=False, uses_ratio=False),
                 help="supervised fine-tuning on the demonstrations (token-mean NLL; DFT via demo_weight)")
