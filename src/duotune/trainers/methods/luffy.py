"""LUFFY (arXiv 2504.14945, SPEC 5; code github.com/ElliottYan/LUFFY): mixed-policy GRPO, G-1
rollouts + 1 demonstration per group, advantages over the whole group, policy shaping p/(p+gamma)
on demo tokens (no clip), the PPO surrogate on rollouts (clip off in the released script).
Imports torch, pydantic, algos and the methods' base and settings.
"""

from __future__ import annotations

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
    masked_mean,
    rollout_corrected,
)
from duotune.trainers.methods.settings import (
    AdvantageName,
    AggregationName,
    ClipSettings,
    LuffyWeight,
    RolloutCorrectionSettings,
    adv_eps_field,
    advantage_field,
    demo_weight_type,
    mini_batches_field,
)


class LuffySettings(RolloutCorrectionSettings, GroupMethodSettings, ClipSettings):
    """LUFFY: defaults are the released script's (no std, no clip, sum / L_max, entropy 0.001)."""

    stats_field = "demo_in_group_stats"

    advantage: AdvantageName = advantage_field("no_std")
    adv_eps: float = adv_eps_field()
    demo_in_group_stats: bool = Field(True, description="the demo counts in the group mean/std "
                                      "(axis 4; LUFFY: true)")
    demo_weight: demo_weight_type("luffy") = Field(
        default_factory=LuffyWeight,
        description="objective on demo tokens: luffy p/(p+gamma) (LUFFY) | nll | dft | chord_phi | trapo")
    clip: bool = Field(False, description="clip the on-policy surrogate (SPEC 5: LUFFY's script removes "
                                          "the clip; true = PPO clip with clip_low/clip_high)")
    aggregation: AggregationName = Field("sum_over_lmax", description="[N, T] loss -> scalar "
                                         "(LUFFY: sum_over_lmax)")
    entropy_coef: float = Field(0.001, description="entropy bonus (LUFFY: 0.001)")
    ppo_mini_batches: int = mini_batches_field()


def luffy_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """PPO surrogate on rollouts, -A * J(p) on demo tokens, one aggregation over all tokens."""
    s = inp.settings
    old = inp.old_logp if inp.old_logp is not None else logp.detach()
    tok, metrics = algos.mixed_policy_loss(
        logp, old, inp.advantages[:, None].expand_as(logp), inp.mask, inp.batch.demo_mask,
        demo_weight=s.demo_weight.name, clip=s.clip, **s.clip_kwargs(), **s.demo_weight.params())
    tok, corrected = rollout_corrected(inp, tok, old, inp.mask * (1 - inp.batch.demo_mask))  # rollout tokens
    loss = algos.aggregate(tok, inp.mask, s.aggregation, l_max=inp.l_max)
    m = {f"luffy/{k}": float(v) for k, v in metrics.items()} | corrected
    m["loss/policy"] = float(loss.detach())
    m.update(demo_metrics(inp, logp, ent))
    if ent is not None and s.entropy_coef:
        loss = loss - s.entropy_coef * masked_mean(ent, inp.mask)
    return LossOut(loss, m)


METHODS.register("luffy", Method(LuffySettings, DEMO_ENTRIES.get("group_member"), luffy_loss,
                                 paper="LUFFY arXiv 2504.14945; SPEC 5"),
                 help="LUFFY: G-1 rollouts + 1 demo per group, policy shaping on demo tokens")
