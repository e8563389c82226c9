"""What a method is: a typed settings model, where its demos enter (axis 1), what it needs computed
(rollouts, demos, reference, old log-probs, temperature) and its loss over one update's rows.

The registries `method` and `demo_entry` live here; each method module registers one bundle next to
its settings model. Losses get tensors and plain values (`LossInputs`), never the run config.
Imports torch, pydantic, algos and `duotune.config`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

import torch
from pydantic import BaseModel, ValidationError

from duotune import algos
from duotune.config import Cfg
from duotune.errors import ConfigError, did_you_mean
from duotune.registry import Registry

METHODS: Registry[Method] = Registry("method")
DEMO_ENTRIES: Registry[DemoEntry] = Registry("demo_entry")


@dataclass(frozen=True)
class DemoEntry:
    """Where demonstrations enter a step (axis 1)."""

    on_policy: bool       # sample G rollouts per prompt
    demo_in_group: bool   # one group member is the prompt's demo (LUFFY, SRFT, RL-PLUS)
    demo_rows: bool       # demos as extra rows outside the groups (SFT, RL + SFT loss)
    # a separate draw of demos (not the step's prompts') as extra rows outside the groups, as many as
    # the settings' `expert_rows` asks for (CHORD's expert batch)
    expert_rows: bool = False
    prefix: bool = False  # group rows continue a demo prefix (UFT, Prefix-RFT, TRAPO): settings' prefix_plan


DEMO_ENTRIES.register("none", DemoEntry(True, False, False), help="rollouts only (GRPO)")
DEMO_ENTRIES.register("group_member", DemoEntry(True, True, False),
                      help="G-1 rollouts + the demo in one group (LUFFY, SRFT)")
DEMO_ENTRIES.register("sft_batch", DemoEntry(True, False, True),
                      help="G rollouts per prompt + the demos as a separate SFT batch (RL + SFT loss)")
DEMO_ENTRIES.register("sft_only", DemoEntry(False, False, True), help="demos only, no rollouts (SFT)")
DEMO_ENTRIES.register("expert_batch", DemoEntry(True, False, False, expert_rows=True),
                      help="G rollouts per prompt + a separate draw of demos as an expert batch (CHORD)")
DEMO_ENTRIES.register("prefix", DemoEntry(True, False, False, prefix=True),
                      help="rollouts + rows that continue a prefix of the demo (UFT, Prefix-RFT, TRAPO)")
DEMO_ENTRIES.register("teacher", DemoEntry(True, False, False),
                      help="rollouts scored token by token by a frozen teacher (on-policy distillation)")


class MethodSettings(Cfg):
    """Base of every method's settings (the recipe's `algo:` block). Subclasses declare their fields;
    these hooks say which shared machinery the method uses (default: none of it)."""

    def kl_term(self) -> Any | None:
        """The KL settings (`settings.FixedKLSettings` ...) when the method has a KL term."""
        return None

    def mini_batches(self) -> int:
        """Disjoint updates per pass over a rollout batch (`ppo_mini_batches`)."""
        return 1

    def correction(self) -> tuple[str, float]:
        """(sampler/trainer mismatch correction, its cap) of the policy-gradient term (`none`: off)."""
        return "none", 2.0

    def group_stats(self) -> tuple[str, float, bool] | None:
        """(advantage estimator, eps, demos in the group statistics) for methods with groups."""
        return None

    def expert_rows(self, n_rollouts: int) -> int:
        """Demonstrations drawn per step besides the step's prompts, given its number of rollouts
        (read only by the `expert_batch` demo entry; CHORD's expert ratio)."""
        return 0

    def post_update_hook(self, stage: Any) -> PostUpdate | None:
        """The method's work after each step's RL updates (ReLIFT's SFT on failed questions), built
        once per stage from its `StageState`; None = nothing to do."""
        return None

    def prefix_plan(self, examples: list[Any], encoder: Any, group_size: int, progress: float,
                    seed: int) -> Any | None:
        """The step's expert-prefix rows (`rollout.prefix.PrefixPlan`) for demo_entry `prefix`:
        `progress` = rollout steps done / the stage's, `seed` a pure function of (seed, step, rank)."""
        return None

    def teacher_spec(self) -> TeacherSpec | None:
        """The frozen teacher whose log-probs the step computes on the rollouts (distillation)."""
        return None


class GroupMethodSettings(MethodSettings):
    """Settings of a method that samples rollout groups and updates in PPO mini-batches. Its model
    declares `advantage`, `adv_eps` and `ppo_mini_batches` (with its own defaults); `stats_field` names
    its bool field that says whether demonstrations (or prefix rows) count in the group statistics,
    None when they always do."""

    stats_field: ClassVar[str | None] = None

    def mini_batches(self) -> int:
        return self.ppo_mini_batches

    def group_stats(self) -> tuple[str, float, bool]:
        demos = True if self.stats_field is None else getattr(self, self.stats_field)
        return self.advantage, self.adv_eps, demos


class PostUpdate(Protocol):
    """Called by the step after its RL updates with (stage state, step, rollout, scored batch); returns
    metrics. Its state (plain data and tensors) is saved in checkpoints and restored on resume."""

    def __call__(self, stage: Any, step: int, rollout: Any, batch: Any) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TeacherSpec(NamedTuple):
    """A teacher model (alias or path), how many of its top tokens per position the loss reads (0 =
    only the sampled token's log-prob) and the temperature it is scored at."""

    model: str
    top_k: int = 0
    temperature: float = 1.0


@dataclass(frozen=True)
class Needs:
    """What one step must compute for a method; the step computes nothing else."""

    rollouts: bool        # sample from the policy
    demos: bool           # every training row needs a demonstration
    reference: bool       # a frozen reference model (a KL term with a non-zero weight)
    old_logp: bool        # log-probs of the sampling policy (a PPO ratio that can differ from 1)
    temperature: float    # the temperature training log-probs are computed at (rollouts' T)
    teacher: bool = False  # a frozen teacher scores the rollouts (settings' teacher_spec)


class LossInputs(NamedTuple):
    """What a method's loss sees besides the policy's log-probs/entropies [N, T] of one update."""

    settings: Any               # the method's settings model
    batch: Any                  # the update's rows (CollatedBatch)
    mask: torch.Tensor          # [N, T] response tokens that enter the loss
    rewards: torch.Tensor       # [N] total reward
    correct: torch.Tensor       # [N] bool: the accuracy part of the reward says solved
    advantages: torch.Tensor    # [N]
    old_logp: torch.Tensor | None
    ref_logp: torch.Tensor | None
    beta: float                 # KL weight of this rollout batch
    progress: float             # optimizer updates done / the stage's total, for mixing schedules
    l_max: int                  # max completion length (sum_over_lmax normaliser)
    teacher: Any = None         # the teacher's scores of these rows (`trainers.compute.TeacherScores`)


class LossOut(NamedTuple):
    """A loss value, its metrics, and the KL it observed (token mean; None = no KL term)."""

    loss: torch.Tensor
    metrics: dict[str, float]
    kl: float | None = None


LossFn = Callable[[LossInputs, torch.Tensor, "torch.Tensor | None"], LossOut]


@dataclass(frozen=True)
class Method:
    """A named bundle: typed settings, where demos enter, its loss, and the paper it comes from.

    uses_ratio: the loss reads old log-probs (a PPO ratio); they are computed only when the ratio
    can differ from 1 (a second update on the same samples). The entropy a loss receives carries
    gradient only when the settings' `entropy_coef` != 0, unless `entropy_grad`."""

    settings: type[MethodSettings]
    demo_entry: DemoEntry
    loss: LossFn
    paper: str
    uses_reward: bool = True
    uses_ratio: bool = True
    entropy_grad: bool = False

    def needs(self, settings: MethodSettings, num_iterations: int, temperature: float) -> Needs:
        e = self.demo_entry
        kl = settings.kl_term()
        reused = num_iterations > 1 or settings.mini_batches() > 1
        return Needs(rollouts=e.on_policy, demos=e.demo_in_group or e.demo_rows or e.expert_rows or e.prefix,
                     reference=kl is not None and kl.active(), old_logp=self.uses_ratio and reused,
                     temperature=temperature if e.on_policy and temperature > 0 else 1.0,
                     teacher=settings.teacher_spec() is not None)


# Keys of the flat `algo` block before settings were per method: each names its new place.
MIGRATIONS = {
    "demo_gamma": "demo_weight: {name: luffy, gamma: ...} (luffy) or gamma: ... (srft)",
    "srft_sft_weight_sign": "sft_weight_sign", "srft_entropy_granularity": "entropy_granularity",
    "mix_schedule": "mix: {schedule: constant | warmup_cosine, ...}",
    "policy_loss": "nothing: grpo always uses the clipped surrogate; luffy's on-policy clip is `clip: true`",
}


def settings_for(method: str, raw: Any, where: str = "algo") -> MethodSettings:
    """Validate `raw` (the `algo` mapping) into `method`'s settings model, or one ConfigError naming
    the key, the method and the keys it takes."""
    m = METHODS.get(method)
    if isinstance(raw, m.settings):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: method {method!r} settings must be a mapping, got {raw!r}")
    try:
        return m.settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{where}: {_explain(method, m.settings, e)}") from None


def _explain(method: str, model: type[BaseModel], err: ValidationError) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc)
    if first["type"] == "extra_forbidden":
        sub, path = _model_at(model, loc[:-1])
        key = ".".join(path + loc[-1:])  # without the tags of tagged unions
        valid = sorted(sub.model_fields)
        hint = f" (moved: {loc[-1]} -> {MIGRATIONS[loc[-1]]})" if loc[-1] in MIGRATIONS else ""
        where = f"{'.'.join(path)} of " if path else ""
        return (f"method {method!r} does not take {key!r}{hint}; {where}{method} takes: {', '.join(valid)}"
                + did_you_mean(loc[-1], valid) + f" (see `duotune list method {method}`)")
    return f"{key}: {first['msg']} (got {first.get('input')!r}; method {method!r})"


def _model_at(model: type[BaseModel], loc: list[str]) -> tuple[type[BaseModel], list[str]]:
    """The sub-model reached by `loc`; a tagged union's tag in `loc` picks its member."""
    path: list[str] = []
    current: type[BaseModel] = model
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        field = current.model_fields.get(part)
        if field is None:
            break
        members = _models_in(field.annotation)
        if not members:
            break
        path.append(part)
        if len(members) > 1 and parts:
            tag = parts.pop(0)
            members = [c for c in members if tag in {str(f.default) for f in c.model_fields.values()}] or members
        current = members[0]
    return current, path


def _models_in(ann: Any) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out: list[type[BaseModel]] = []
    for a in getattr(ann, "__args__", ()) or ():
        out += _models_in(a)
    return out


# ------------------------------------------------------------------ helpers the losses share

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def policy_gradient(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None, rows: torch.Tensor,
                    ) -> LossOut:
    """GRPO on `rows`: clipped surrogate (+ beta * KL) aggregated, minus the entropy bonus (SPEC 1).

    Reads the settings' clip range (`ClipSettings`), `aggregation`, `entropy_coef` and `kl`."""
    s = inp.settings
    mask = inp.mask * rows[:, None].to(inp.mask.dtype)
    old = inp.old_logp if inp.old_logp is not None else logp.detach()
    adv = inp.advantages[:, None].expand_as(logp)
    tok, metrics = algos.ppo_clip_loss(logp, old, adv, mask, **s.clip_kwargs())
    out = {f"pg/{k}": float(v) for k, v in metrics.items()}
    tok, corrected = rollout_corrected(inp, tok, old, mask)
    out.update(corrected)
    observed = None
    kl_cfg = s.kl_term()
    if inp.ref_logp is not None and kl_cfg is not None:
        kl = algos.kl_estimate(logp, inp.ref_logp, kl_cfg.estimator, clamp=kl_cfg.clamp)
        observed = float(masked_mean(kl.detach(), mask))
        out["kl/mean"] = observed
        tok = tok + inp.beta * kl
    loss = algos.aggregate(tok, mask, s.aggregation, l_max=inp.l_max)
    out["loss/pg"] = float(loss.detach())
    if ent is not None:
        h = masked_mean(ent, mask)
        out["entropy/on_policy"] = float(h.detach())
        if s.entropy_coef:
            loss = loss - s.entropy_coef * h
    return LossOut(loss, out, observed)


def rollout_corrected(inp: LossInputs, tok: torch.Tensor, old: torch.Tensor, mask: torch.Tensor,
                      ) -> tuple[torch.Tensor, dict[str, float]]:
    """`tok` times the settings' truncated importance weights min(exp(old - rollout_logp), C) on the
    sampled tokens of `mask` (`algos.rollout_correction`; old = the trainer's log-probs of the sampling
    policy), with their metrics; unchanged when the correction is off or the sampler gave no log-probs."""
    kind, cap = inp.settings.correction()
    if kind == "none" or inp.batch.rollout_logp is None:
        return tok, {}
    weights, m = algos.rollout_correction(kind, old, inp.batch.rollout_logp, mask, cap=cap)
    return tok * weights, {f"rollout/{k}": v for k, v in m.items() if k.startswith("is_")}


def demo_metrics(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> dict[str, float]:
    """SPEC 6 logs: mean p on demo tokens, entropy over all tokens and over on-policy tokens."""
    dm = inp.batch.demo_mask.to(logp.dtype)
    out = {"demo/p_mean": float(masked_mean(logp.detach().exp(), dm))}
    if ent is not None:
        out["entropy/mean"] = float(masked_mean(ent.detach(), inp.mask))
        out["entropy/on_policy"] = float(masked_mean(ent.detach(), inp.mask * (1 - dm)))
    return out


def demo_nll(inp: LossInputs, logp: torch.Tensor, weight: Any) -> torch.Tensor:
    """Token mean over demo tokens of -J(logp), J the demo objective `weight` (1: NLL; p: DFT ...)."""
    mask = inp.mask * inp.batch.is_demo[:, None].to(inp.mask.dtype)
    j = algos.demo_objective(weight.name, logp, **weight.params())
    return -masked_mean(j, mask)


# ------------------------------------------------------------------ help text (`duotune list method NAME`)

def describe_method(name: str) -> str:
    """A method's paper, what it needs computed, and every setting with its default and description."""
    m = METHODS.get(name)
    e = m.demo_entry
    needs = [n for n, on in (("rollouts", e.on_policy), ("demos", e.demo_in_group or e.demo_rows or e.prefix),
                             ("expert demos (a separate draw)", e.expert_rows),
                             ("a teacher model", m.settings.model_fields.get("teacher") is not None)) if on]
    if m.settings().kl_term() is not None:
        needs.append("reference model (when the KL weight is not 0)")
    needs.append("old log-probs when num_iterations or ppo_mini_batches > 1" if m.uses_ratio and e.on_policy
                 else "no old log-probs")
    rows = _setting_rows(m.settings)
    width = max((len(k) for k, _, _ in rows), default=0)
    lines = [f"method {name}: {METHODS.describe(name)}", f"  from: {m.paper}", f"  needs: {', '.join(needs)}",
             "  settings (the recipe's `algo:` block, or algo.<key>=value):"]
    lines += [f"    {k:<{width}}  {desc} [default: {d}]" for k, d, desc in rows]
    return "\n".join(lines)


TAGS = ("controller", "name", "schedule")  # the keys that pick a variant of a tagged setting


def _setting_rows(model: type[BaseModel], prefix: str = "", tag: str = "",
                  instance: BaseModel | None = None) -> list[tuple[str, str, str]]:
    """(key, default, description) rows; a tagged setting lists its default variant's keys, then
    each other variant's own keys marked with its tag. `instance`: the method's default value of
    this sub-setting (e.g. CHORD-phi's constant mu 0.1), whose values are the defaults shown."""
    rows: list[tuple[str, str, str]] = []
    for fname, f in model.model_fields.items():
        if tag and fname in TAGS:
            continue
        value = getattr(instance, fname) if instance is not None else f.get_default(call_default_factory=True)
        members = _models_in(f.annotation)
        if members:
            default = type(value)
            for sub in sorted(members, key=lambda c: c is not default):
                label = "" if sub is default else next(
                    f" ({k}: {v.default})" for k, v in sub.model_fields.items() if k in TAGS)
                rows += _setting_rows(sub, f"{prefix}{fname}.", label, value if sub is default else None)
            continue
        default = "(required)" if f.is_required() and instance is None else repr(value)
        rows.append((f"{prefix}{fname}{tag}", default, f.description or ""))
    return rows
