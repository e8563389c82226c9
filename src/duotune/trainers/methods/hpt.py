"""HPT (arXiv 2509.04419; code github.com/TsinghuaC3I/Unify-Post-Training, `verl/mix_src`) and SuperRL
(arXiv 2506.01096): per question G rollouts and its demonstration; a gate on the number solved picks
GRPO on the rollouts or NLL on the demo (`switch`: <= gamma solved -> SFT), or mixes both by HPT's
soft table (`soft`). The gate lives in the loss; each step logs the share of questions routed to SFT.

"Drop the rollouts" as the release does: a routed question's rollouts leave the batch, so no
aggregation, entropy or normaliser counts them; the SFT term is a token mean over the routed demos.
Imports torch, pydantic, algos and the methods' base, settings and GRPO.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, NonNegativeFloat

from duotune import algos
from duotune.config import Cfg
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
    _tagged,
    adv_eps_field,
    advantage_field,
    mini_batches_field,
)


class SwitchGate(Cfg):
    """<= gamma solved rollouts: NLL on the demo, the rollouts dropped; else GRPO only."""

    name: Literal["switch"] = Field("switch", description="switch | soft")
    gamma: int = Field(0, ge=0, description="a question with at most gamma solved rollouts trains on its demo "
                                            "(HPT switch_gate: 0; SuperRL: 0)")


class SoftGate(Cfg):
    """HPT's soft table: (RL weight, SFT weight) by the number of solved rollouts."""

    name: Literal["soft"] = Field("soft", description="switch | soft")
    table: list[tuple[NonNegativeFloat, NonNegativeFloat]] = Field(
        list(algos.gates.HPT_SOFT_TABLE), min_length=1,
        description="row k = [rl_weight, sft_weight] with k rollouts solved, the last row for more (HPT "
                    "release soft_type 0, off-policy column dropped)")


GateSettings = Annotated[SwitchGate | SoftGate, Field(discriminator="name"), _tagged("name", "switch")]


class HPTSettings(GroupMethodSettings, ClipSettings):
    """HPT: the gate, the SFT coefficient and the release's RL core (no std, no clip, sum / L_max)."""

    gate: GateSettings = Field(default_factory=SwitchGate, description="{name: switch, gamma} | "
                               "{name: soft, table}")
    sft_coef: float = Field(1.0, ge=0, description="weight of the NLL on routed demos (HPT: 1.0; 0.3 for "
                                                   "Qwen2.5-Math-1.5B)")
    advantage: AdvantageName = advantage_field("no_std")
    adv_eps: float = adv_eps_field()
    clip: bool = Field(False, description="clip the surrogate with clip_low/clip_high (HPT release: "
                                          "loss_remove_clip, no clip)")
    aggregation: AggregationName = Field("sum_over_lmax", description="[N, T] RL loss -> scalar (HPT "
                                         "release: sum / L_max)")
    entropy_coef: float = Field(0.001, description="entropy bonus over the kept tokens (HPT: 0.001)")
    ppo_mini_batches: int = mini_batches_field()


    def clip_kwargs(self) -> dict[str, Any]:
        kw = super().clip_kwargs()
        return kw if self.clip else {**kw, "eps_low": math.inf, "eps_high": math.inf}


class SuperRLSettings(HPTSettings):
    """SuperRL: the switch gate (gamma 0) on plain GRPO (std advantages, PPO clip, token mean)."""

    gate: Annotated[SwitchGate, _tagged("name", "switch")] = Field(
        default_factory=SwitchGate, description="{name: switch, gamma} (SuperRL: gamma 0, all rollouts fail)")
    advantage: AdvantageName = advantage_field("grpo")
    clip: bool = Field(True, description="clip the surrogate with clip_low/clip_high (GRPO: true)")
    aggregation: AggregationName = Field("token_mean", description="[N, T] RL loss -> scalar")
    entropy_coef: float = Field(0.0, description="entropy bonus over the kept tokens")


def gate_weights(inp: LossInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: the RL weight (rollouts), the SFT weight (demo rows), and per question the SFT weight."""
    b, s = inp.batch, inp.settings
    rollouts = ~b.is_demo
    _, question = torch.unique(b.prompt_index, return_inverse=True)
    n = int(question.max()) + 1
    solved = torch.zeros(n, dtype=torch.long, device=question.device).index_add_(
        0, question, (inp.correct.to(question.device) & rollouts).long())
    params = {k: v for k, v in s.gate.model_dump().items() if k != "name"}
    rl_q, sft_q = algos.gate(s.gate.name)(solved, **params)
    rl_q, sft_q = rl_q.to(inp.mask.dtype), sft_q.to(inp.mask.dtype)
    rl_w = torch.where(rollouts, rl_q[question], torch.zeros_like(rl_q[question]))
    sft_w = torch.where(b.is_demo, sft_q[question], torch.zeros_like(sft_q[question]))
    return rl_w, sft_w, sft_q


def hpt_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """GRPO on kept rollouts (advantages times the gate's RL weight; the surrogate is linear in A) +
    sft_coef x weighted token-mean NLL over the demos with an SFT weight, minus the entropy bonus."""
    s = inp.settings
    rl_w, sft_w, sft_q = gate_weights(inp)
    keep = rl_w > 0
    if bool(keep.any()):
        sub = inp._replace(mask=inp.mask[keep], advantages=inp.advantages[keep] * rl_w[keep],
                           old_logp=None if inp.old_logp is None else inp.old_logp[keep],
                           ref_logp=None if inp.ref_logp is None else inp.ref_logp[keep])
        rl = policy_gradient(sub, logp[keep], None, torch.ones(int(keep.sum()), dtype=torch.bool,
                                                                device=logp.device))
        rl_loss, m = rl.loss, dict(rl.metrics)
    else:
        rl_loss, m = logp.sum() * 0, {"loss/pg": 0.0}
    demo_tok = inp.mask * (sft_w > 0)[:, None].to(inp.mask.dtype)
    nll = -(sft_w[:, None] * logp * demo_tok).sum() / demo_tok.sum().clamp(min=1)
    loss = rl_loss + s.sft_coef * nll
    m.update({"loss/nll": float(nll.detach()), "hpt/sft_frac": float((sft_q > 0).float().mean()),
              "hpt/rl_rows": float(keep.sum()), "hpt/sft_rows": float((sft_w > 0).sum())})
    if ent is not None:
        kept = inp.mask * keep[:, None].to(inp.mask.dtype) + demo_tok
        h = masked_mean(ent, kept)
        m["entropy/mean"] = float(h.detach())
        m["entropy/on_policy"] = float(masked_mean(ent.detach(), inp.mask * keep[:, None].to(inp.mask.dtype)))
        if s.entropy_coef:
            loss = loss - s.entropy_coef * h
    return LossOut(loss, m)


METHODS.register("hpt", Method(HPTSettings, DEMO_ENTRIES.get("sft_batch"), hpt_loss,
                               paper="HPT arXiv 2509.04419; github.com/TsinghuaC3I/Unify-Post-Training"),
                 help="HPT: per question GRPO, or NLL on its demo when <= gamma rollouts are solved")
METHODS.register("superrl", Method(SuperRLSettings, DEMO_ENTRIES.get("sft_batch"), hpt_loss,
                                   paper="SuperRL arXiv 2506.01096"),
                 help="SuperRL: GRPO, falling back to NLL on the demo when no rollout is solved")
