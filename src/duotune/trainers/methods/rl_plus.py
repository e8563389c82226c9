"""RL-PLUS (arXiv 2508.00222; code github.com/YihongDong/RL-PLUS, `verl/recipe/rlplus_core_alg.py`,
`exp_scripts/train_RL-PLUS.sh`): LUFFY-style groups (G-1 rollouts + the demo), advantages from the
on-policy samples only, demo tokens weighted by the multiple-importance-sampling ratio
pi_theta / (0.75 pi_old + 0.25) times the exploration advantage A (1 - sg(pi_theta))^0.5, no clip
on demo tokens (`algos.rl_plus_loss`). Defaults are the released script's (no std, no clip on the
rollouts, sum / L_max, entropy 0.001, two mini-batches in the recipe). pi_old is the sampling-time
policy: with one update per batch it equals sg(pi_theta), so no extra forward is run.
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
)
from duotune.trainers.methods.settings import (
    AdvantageName,
    AggregationName,
    ClipSettings,
    adv_eps_field,
    advantage_field,
    mini_batches_field,
)


class RLPlusSettings(GroupMethodSettings, ClipSettings):
    """RL-PLUS: the mixture weight and exploration power, LUFFY-style aggregation and entropy."""

    stats_field = "demo_in_group_stats"

    advantage: AdvantageName = advantage_field("no_std")
    adv_eps: float = adv_eps_field()
    demo_in_group_stats: bool = Field(False, description="the demo counts in the group mean/std (axis 4; "
                                      "RL-PLUS: false, on-policy samples only)")
    old_weight: float = Field(0.75, ge=0, le=1, description="w in r = p / (w p_old + 1 - w) on demo tokens "
                              "(RL-PLUS: 0.75)")
    explore_power: float = Field(0.5, ge=0, description="exponent in A (1 - sg(p))^power on demo tokens "
                                 "(RL-PLUS: 0.5)")
    clip: bool = Field(False, description="clip the on-policy surrogate with clip_low/clip_high (release: "
                                          "loss_remove_clip, no clip); demo tokens are never clipped")
    aggregation: AggregationName = Field("sum_over_lmax", description="[N, T] loss -> scalar (release: "
                                         "sum / L_max)")
    entropy_coef: float = Field(0.001, description="entropy bonus (RL-PLUS: 0.001)")
    ppo_mini_batches: int = mini_batches_field()


def rl_plus_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """PPO surrogate on rollouts, -r A_explore on demo tokens, one aggregation over all tokens."""
    s = inp.settings
    old = inp.old_logp if inp.old_logp is not None else logp.detach()
    tok, metrics = algos.rl_plus_loss(logp, old, inp.advantages[:, None].expand_as(logp), inp.mask,
                                      inp.batch.demo_mask, old_weight=s.old_weight,
                                      explore_power=s.explore_power, clip=s.clip, **s.clip_kwargs())
    loss = algos.aggregate(tok, inp.mask, s.aggregation, l_max=inp.l_max)
    m = {f"rl_plus/{k}": float(v) for k, v in metrics.items()}
    m["loss/policy"] = float(loss.detach())
    m.update(demo_metrics(inp, logp, ent))
    if ent is not None and s.entropy_coef:
        loss = loss - s.entropy_coef * masked_mean(ent, inp.mask)
    return LossOut(loss, m)


METHODS.register("rl_plus", Method(RLPlusSettings, DEMO_ENTRIES.get("group_member"), rl_plus_loss,
                                   paper="RL-PLUS arXiv 2508.00222; github.com/YihongDong/RL-PLUS"),
                 help="RL-PLUS: LUFFY-style groups, MIS ratio and exploration advantage on demo tokens")
