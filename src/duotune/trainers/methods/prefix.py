"""Expert-prefix methods (demo_entry `prefix`, DESIGN axis 1: "a prompt prefix the policy continues"):
some rows of each group start with the first tokens (or solution segments) of the demonstration and
the policy writes the rest; the prefix tokens are off-policy (`CollatedBatch.demo_mask`).

- `uft`: UFT (arXiv 2505.16984; github.com/liumy2010/UFT): every row of a group shares one hint = the
  first k ~ Binomial(#segments <= 5, p(t)) solution segments, p(t) cosine 0.95 -> 0.05 over T_hint
  (300 of 500 steps), then no hint; GRPO on the continuation + 0.001 x token-mean NLL on the hint.
- `prefix_rft`: Prefix-RFT (arXiv 2507.01679; no released code): hybrid rows continue a demo prefix
  whose token fraction decays by a cosine 0.95 -> 0.05; Dr. GRPO on all rows, and of the prefix
  tokens only the 20 % with the highest entropy get gradient (-A x J(logp), J = NLL by default).
- `trapo`: TRAPO (arXiv 2512.17636; github.com/Su-my/TRAPO): SFT-type loss with weight
  p / max(sg(p), 0.1) on prefix tokens, RL on the continuation, group statistics over the on-policy
  rows only; sum / L_max, no clip, entropy 0.001 (the released script).

Open in the papers, chosen here and exposed as `prefix` settings: whether hybrid rows replace sampled
rollouts (`replace`, default true: a group stays G rows, the same budget as GRPO) or join the group;
that a step's prefix fraction is the schedule's value for every prompt (not drawn per prompt); that
Prefix-RFT's top-entropy selection is over all prefix tokens of the update. TRAPO's adaptive
micro-group prefix selection (4/2/1/1 rollouts unlocking prefix ratios 0.25/0.5/1 after failures) is
not reproduced: its prefix rows use the same schedule. Imports torch, pydantic, algos, rollout.prefix.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

from duotune import algos
from duotune.config import Cfg
from duotune.errors import DataError
from duotune.rollout.prefix import PrefixPlan, demo_tokens, segment_bounds, solution_steps, token_prefix
from duotune.trainers.methods.base import (
    DEMO_ENTRIES,
    METHODS,
    GroupMethodSettings,
    LossInputs,
    LossOut,
    Method,
    demo_metrics,
    masked_mean,
    policy_gradient,
)
from duotune.trainers.methods.grpo import GRPOSettings
from duotune.trainers.methods.settings import (
    AdaptiveKLSettings,
    AdvantageName,
    AggregationName,
    ClipSettings,
    FixedKLSettings,
    GrpoDKLSettings,
    NllWeight,
    TrapoWeight,
    _tagged,
    adv_eps_field,
    advantage_field,
    demo_weight_type,
    mini_batches_field,
)


class PrefixSchedule(Cfg):
    """The prefix value over the stage's rollout steps: start -> end by a half cosine over decay_frac,
    then `after` (None = end). A token fraction (cut: tokens) or UFT's hint probability (segments)."""

    start: float = Field(0.95, ge=0, le=1, description="value at the first step (UFT, Prefix-RFT: 0.95)")
    end: float = Field(0.05, ge=0, le=1, description="value at the end of the decay (UFT, Prefix-RFT: 0.05)")
    decay_frac: float = Field(1.0, gt=0, le=1, description="share of the stage the decay spans (UFT: "
                              "T_hint / T = 300 / 500 = 0.6)")
    after: float | None = Field(None, ge=0, le=1, description="value after the decay (UFT: 0 = no hint; "
                                "None = end)")

    def at(self, progress: float) -> float:
        return algos.mix_schedule("cosine_decay")(progress, start=self.start, end=self.end,
                                                  decay_frac=self.decay_frac, after=self.after)


class PrefixSettings(Cfg):
    """Which rows continue a demo prefix, and how long the prefix is."""

    rows: int | None = Field(1, ge=1, description="hybrid rows per group (None = every row, as UFT)")
    replace: bool = Field(True, description="hybrid rows take the place of sampled rollouts (the group "
                          "stays rollout.group_size rows) or join the group (G + rows); open in the "
                          "papers")
    cut: Literal["tokens", "segments"] = Field("tokens", description="tokens: the first round(value x "
                                               "demo tokens) (Prefix-RFT, TRAPO); segments: UFT's first "
                                               "k ~ Binomial(#segments, value) solution segments")
    max_segments: int = Field(5, ge=1, description="segments a solution is split into (UFT: 5), by "
                              "lines or else sentences")
    schedule: PrefixSchedule = Field(default_factory=PrefixSchedule, description="the prefix value "
                                     "over the stage: {start, end, decay_frac, after}")

    @model_validator(mode="after")
    def _all_rows_replace(self) -> PrefixSettings:
        if self.rows is None and not self.replace:
            raise ValueError("prefix.rows: null (every row) needs prefix.replace: true")
        return self

    def plan(self, examples: list[Any], encoder: Any, group_size: int, progress: float, seed: int,
             ) -> PrefixPlan:
        value = self.schedule.at(progress)
        gen = torch.Generator().manual_seed(seed)
        tokens = []
        for ex in examples:
            if not ex.demo:
                raise DataError(f"example {ex.id!r} has no demonstration; expert-prefix methods continue a "
                                "prefix of it, so every training row needs a `demo` column", field="demo")
            if self.cut == "tokens":
                tokens.append(token_prefix(demo_tokens(encoder, ex.demo), value))
                continue
            steps = solution_steps(ex.demo)
            bounds = segment_bounds(len(steps), self.max_segments)
            k = algos.uft_hint_segments(len(bounds) - 1, value, gen)
            tokens.append(demo_tokens(encoder, "".join(steps[:bounds[k]])) if bounds[k] else [])
        return PrefixPlan(group_size if self.rows is None else self.rows, self.replace, tokens)


class UFTSchedule(PrefixSchedule):
    """UFT's hint probability: 0.95 -> 0.05 over T_hint = 300 of 500 steps, then no hint."""

    decay_frac: float = Field(0.6, gt=0, le=1, description="share of the stage the decay spans (UFT: "
                              "T_hint / T = 300 / 500)")
    after: float | None = Field(0.0, ge=0, le=1, description="hint probability after the decay (UFT: 0)")


class UFTPrefix(PrefixSettings):
    """UFT's hint: every row of a group, the first k ~ Binomial(<= 5 segments, p(t)) segments."""

    rows: int | None = Field(None, ge=1, description="hybrid rows per group (UFT: None = every row)")
    cut: Literal["tokens", "segments"] = Field("segments", description="UFT: segments (see prefix.cut)")
    schedule: UFTSchedule = Field(default_factory=UFTSchedule, description="p(t): {start, end, decay_frac, "
                                  "after}")


class TRAPOSchedule(PrefixSchedule):
    """A constant prefix fraction 0.5 (the middle of TRAPO's adaptive levels 0.25 / 0.5 / 1)."""

    start: float = Field(0.5, ge=0, le=1, description="prefix fraction at the first step")
    end: float = Field(0.5, ge=0, le=1, description="prefix fraction at the end of the decay")


class TRAPOPrefix(PrefixSettings):
    schedule: TRAPOSchedule = Field(default_factory=TRAPOSchedule, description="the prefix fraction "
                                    "(constant 0.5): {start, end, decay_frac, after}")


class UFTFixedKL(FixedKLSettings):
    beta: float = Field(0.001, ge=0, description="KL weight (UFT: 0.001, k3)")


UFTKL = Annotated[UFTFixedKL | AdaptiveKLSettings | GrpoDKLSettings, Field(discriminator="controller"),
                  _tagged("controller", "fixed")]


class _PrefixMixin:
    """The `prefix_plan` hook of every expert-prefix method, from its `prefix` settings."""

    prefix: PrefixSettings

    def prefix_plan(self, examples: list[Any], encoder: Any, group_size: int, progress: float, seed: int,
                    ) -> PrefixPlan:
        return self.prefix.plan(examples, encoder, group_size, progress, seed)


def _prefix_tokens(inp: LossInputs) -> torch.Tensor:
    """[N, T] bool: the demo-prefix tokens of hybrid rows that enter the loss."""
    return inp.batch.demo_mask.bool() & ~inp.batch.is_demo[:, None] & inp.mask.bool()


# ------------------------------------------------------------------ UFT

class UFTSettings(_PrefixMixin, GRPOSettings):
    """UFT: GRPO settings (clip, KL 0.001 k3, entropy 0.001 as the released script) + the hint."""

    kl: UFTKL = Field(default_factory=UFTFixedKL, description="KL to the reference (UFT: k3, 0.001): "
                      "{controller: fixed, beta} | adaptive | grpo_d")
    entropy_coef: float = Field(0.001, description="entropy bonus (UFT: 0.001)")
    hint_coef: float = Field(0.001, ge=0, description="weight of the token-mean NLL on hint tokens (UFT: "
                             "sft_loss_coef 0.001)")
    prefix: UFTPrefix = Field(default_factory=UFTPrefix, description="the hint: every row (rows: null), "
                              "UFT's segments, p(t) 0.95 -> 0.05 over 60 % of the stage, then 0")


def uft_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """GRPO on the policy's tokens (the hint is part of the state, as UFT puts it in the prompt)
    + hint_coef x token-mean NLL over the hint tokens."""
    hint = _prefix_tokens(inp)
    own = inp._replace(mask=inp.mask * (~hint).to(inp.mask.dtype))
    out = policy_gradient(own, logp, ent, ~inp.batch.is_demo)
    nll = -masked_mean(logp, hint.to(logp.dtype))
    m = {**out.metrics, "loss/hint_nll": float(nll.detach()), "prefix/token_frac": float(hint.float().mean())}
    m.update(demo_metrics(inp, logp, ent))
    return LossOut(out.loss + inp.settings.hint_coef * nll, m, out.kl)


# ------------------------------------------------------------------ Prefix-RFT

class PrefixRFTSettings(_PrefixMixin, GroupMethodSettings, ClipSettings):
    """Prefix-RFT: Dr. GRPO (r - mean, sum / (N L_max), PPO clip) + entropy-selected prefix tokens."""

    stats_field = "prefix_in_group_stats"

    advantage: AdvantageName = advantage_field("dr_grpo")
    adv_eps: float = adv_eps_field()
    aggregation: AggregationName = Field("seq_mean_token_sum_norm", description="[N, T] loss -> scalar "
                                         "(Dr. GRPO: seq_mean_token_sum_norm)")
    prefix_in_group_stats: bool = Field(True, description="hybrid rows count in the group mean (axis 4)")
    entropy_top: float = Field(0.2, ge=0, le=1, description="share of prefix tokens (highest entropy) "
                               "that get gradient (Prefix-RFT: 0.2)")
    demo_weight: demo_weight_type("nll") = Field(
        default_factory=NllWeight, description="objective J on the selected prefix tokens, loss -A x J: "
                                               "nll (J = log p) | luffy | dft | chord_phi | trapo")
    entropy_coef: float = Field(0.0, description="entropy bonus")
    ppo_mini_batches: int = mini_batches_field()
    prefix: PrefixSettings = Field(default_factory=PrefixSettings, description="hybrid rows: {rows 1, "
                                   "replace, cut tokens, schedule 0.95 -> 0.05}")


def prefix_rft_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """PPO surrogate on the policy's tokens, -A x J(logp) on the top-entropy prefix tokens, the other
    prefix tokens out of the loss; one aggregation over the tokens that stay."""
    s = inp.settings
    pre = _prefix_tokens(inp)
    keep = algos.top_fraction_mask(ent, pre, s.entropy_top) if ent is not None else pre
    train = inp.mask.bool() & (~pre | keep)
    old = inp.old_logp if inp.old_logp is not None else logp.detach()
    tok, metrics = algos.mixed_policy_loss(
        logp, old, inp.advantages[:, None].expand_as(logp), train, keep, demo_weight=s.demo_weight.name,
        clip=True, **s.clip_kwargs(), **s.demo_weight.params())
    loss = algos.aggregate(tok, train, s.aggregation, l_max=inp.l_max)
    m = {f"prefix_rft/{k}": float(v) for k, v in metrics.items()}
    m.update({"loss/policy": float(loss.detach()), "prefix/kept_frac": float(keep.sum() / pre.sum().clamp(min=1))})
    m.update(demo_metrics(inp, logp, ent))
    if ent is not None and s.entropy_coef:
        loss = loss - s.entropy_coef * masked_mean(ent, train.to(ent.dtype))
    return LossOut(loss, m)


# ------------------------------------------------------------------ TRAPO

class TRAPOSettings(_PrefixMixin, GroupMethodSettings, ClipSettings):
    """TRAPO: released-script defaults (no std, no clip, sum / L_max, entropy 0.001, alpha 0.1)."""

    stats_field = "prefix_in_group_stats"

    advantage: AdvantageName = advantage_field("no_std")
    adv_eps: float = adv_eps_field()
    prefix_in_group_stats: bool = Field(False, description="hybrid rows count in the group mean/std "
                                        "(axis 4; TRAPO: on-policy rows only)")
    demo_weight: demo_weight_type("trapo") = Field(
        default_factory=TrapoWeight, description="SFT objective on prefix tokens, loss -J: trapo "
                                                 "p / max(sg(p), alpha) (TRAPO) | nll | dft | luffy | chord_phi")
    clip: bool = Field(False, description="clip the on-policy surrogate (TRAPO's script: loss_remove_clip)")
    aggregation: AggregationName = Field("sum_over_lmax", description="[N, T] loss -> scalar (TRAPO: "
                                         "sum / L_max, loss_remove_token_mean)")
    entropy_coef: float = Field(0.001, description="entropy bonus (TRAPO: 0.001)")
    ppo_mini_batches: int = mini_batches_field()
    prefix: TRAPOPrefix = Field(default_factory=TRAPOPrefix, description="hybrid rows: {rows 1, replace, "
                                "cut tokens, constant fraction 0.5}")


def trapo_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> LossOut:
    """-J(logp) on prefix tokens (advantage 1), PPO surrogate with A on the policy's tokens."""
    s = inp.settings
    old = inp.old_logp if inp.old_logp is not None else logp.detach()
    tok, metrics = algos.prefix_sft_loss(
        logp, old, inp.advantages[:, None].expand_as(logp), inp.mask, _prefix_tokens(inp),
        demo_weight=s.demo_weight.name, clip=s.clip, eps_low=s.clip_low, eps_high=s.clip_high,
        **s.demo_weight.params())
    loss = algos.aggregate(tok, inp.mask, s.aggregation, l_max=inp.l_max)
    m = {f"trapo/{k}": float(v) for k, v in metrics.items()}
    m["loss/policy"] = float(loss.detach())
    m.update(demo_metrics(inp, logp, ent))
    if ent is not None and s.entropy_coef:
        loss = loss - s.entropy_coef * masked_mean(ent, inp.mask)
    return LossOut(loss, m)


ENTRY = DEMO_ENTRIES.get("prefix")
METHODS.register("uft", Method(UFTSettings, ENTRY, uft_loss, paper="UFT arXiv 2505.16984; SPEC 10"),
                 help="UFT: GRPO on rollouts that continue a decaying hint + NLL on the hint")
METHODS.register("prefix_rft", Method(PrefixRFTSettings, ENTRY, prefix_rft_loss,
                                      paper="Prefix-RFT arXiv 2507.01679; SPEC 10"),
                 help="Prefix-RFT: Dr. GRPO with hybrid rows that continue a demo prefix (top-20 % entropy)")
METHODS.register("trapo", Method(TRAPOSettings, ENTRY, trapo_loss, paper="TRAPO arXiv 2512.17636; SPEC 10"),
                 help="TRAPO: trust-region SFT on demo prefixes, RL on the policy's continuations")
