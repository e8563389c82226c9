"""Methods as registered bundles on the four SFT+RL axes (DESIGN.md "The SFT+RL family").

Axis 1 (where demos enter) is the `demo_entry` registry here; axis 2 (per-token demo weight) and
axis 3 (mixing schedule) are `duotune.algos` registries named in the config; axis 4 (group
statistics) is `algo.demo_in_group_stats`. A method = a demo entry + a loss function over the
whole batch; every formula comes from `duotune.algos`. Imports torch, algos, rewards, registry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from duotune import algos
from duotune.registry import Registry
from duotune.rewards import RewardManager

METHODS: Registry[Method] = Registry("method")
DEMO_ENTRIES: Registry[DemoEntry] = Registry("demo_entry")


@dataclass(frozen=True)
class DemoEntry:
    """Where demonstrations enter a step (axis 1)."""

    on_policy: bool       # sample G rollouts per prompt
    demo_in_group: bool   # one group member is the prompt's demo (LUFFY, SRFT, RL-PLUS)
    demo_rows: bool       # demos as extra rows outside the groups (SFT, RL + SFT loss, CHORD)


DEMO_ENTRIES.register("none", DemoEntry(True, False, False), help="rollouts only (GRPO)")
DEMO_ENTRIES.register("group_member", DemoEntry(True, True, False),
                      help="G-1 rollouts + the demo in one group (LUFFY, SRFT)")
DEMO_ENTRIES.register("sft_batch", DemoEntry(True, False, True),
                      help="G rollouts per prompt + the demos as a separate SFT batch (RL + SFT loss)")
DEMO_ENTRIES.register("sft_only", DemoEntry(False, False, True), help="demos only, no rollouts (SFT)")


@dataclass
class LossInputs:
    """What a method's loss sees besides the policy's log-probs/entropies [N, T]."""

    cfg: Any
    batch: Any
    mask: torch.Tensor          # [N, T] response tokens that enter the loss
    rewards: torch.Tensor       # [N]
    advantages: torch.Tensor    # [N]
    old_logp: torch.Tensor | None
    ref_logp: torch.Tensor | None
    beta: float
    progress: float             # optimizer steps done / stage total, for mixing schedules


LossFn = Callable[[LossInputs, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Method:
    """A named bundle: where demos enter, its loss, and (for recipes like grpo_d) a forced KL controller.

    The entropy a loss receives carries gradient only when `algo.entropy_coef` != 0 (the built-in
    losses' one entropy term with a gradient); a loss that differentiates it otherwise sets
    `entropy_grad=True`."""

    demo_entry: DemoEntry
    loss: LossFn
    uses_reward: bool = True
    kl_controller: str | None = None
    entropy_grad: bool = False


def _mmean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _rl_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None, rows: torch.Tensor,
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO on `rows`: clipped surrogate (+ beta * KL) aggregated, minus the entropy bonus (SPEC 1)."""
    a = inp.cfg.algo
    mask = inp.mask * rows[:, None].to(inp.mask.dtype)
    old = inp.old_logp if inp.old_logp is not None else logp.detach()
    adv = inp.advantages[:, None].expand_as(logp)
    tok, metrics = algos.policy_loss(a.policy_loss)(logp, old, adv, mask, eps_low=a.clip_low,
                                                    eps_high=a.clip_high)
    out = {f"pg/{k}": float(v) for k, v in metrics.items()}
    if inp.ref_logp is not None:
        kl = algos.kl_estimate(logp, inp.ref_logp, a.kl.estimator)
        out["kl/mean"] = float(_mmean(kl.detach(), mask))
        tok = tok + inp.beta * kl
    loss = algos.aggregate(tok, mask, a.aggregation, l_max=inp.cfg.rollout.max_completion_length)
    out["loss/pg"] = float(loss.detach())
    if ent is not None:
        h = _mmean(ent, mask)
        out["entropy/on_policy"] = float(h.detach())
        if a.entropy_coef:
            loss = loss - a.entropy_coef * h
    return loss, out


def grpo_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None):
    """GRPO / GRPO-D: clipped surrogate on rollouts, KL to the reference when beta > 0."""
    loss, m = _rl_loss(inp, logp, ent, ~inp.batch.is_demo)
    if ent is not None:
        m["entropy/mean"] = float(_mmean(ent.detach(), inp.mask))
    return loss, m


def sft_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None):
    """SFT: token-mean NLL of the demonstrations."""
    mask = inp.mask * inp.batch.is_demo[:, None].to(inp.mask.dtype)
    loss = algos.sft_nll(logp, mask)
    m = {"loss/nll": float(loss.detach())}
    if ent is not None:
        m["entropy/mean"] = float(_mmean(ent.detach(), mask))
    return loss, m


def rl_sft_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None):
    """RL with SFT loss (SPEC 7): GRPO on rollouts + sft_coef x schedule x token-mean NLL on demos."""
    rl, m = _rl_loss(inp, logp, ent, ~inp.batch.is_demo)
    nll, m2 = sft_loss(inp, logp, None)
    w = inp.cfg.algo.sft_coef * algos.mix_schedule(inp.cfg.algo.mix_schedule)(inp.progress)
    m.update(m2, **{"loss/sft_weight": w})
    if ent is not None:
        m["entropy/mean"] = float(_mmean(ent.detach(), inp.mask))
    return rl + w * nll, m


def luffy_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None):
    """LUFFY (SPEC 5): PPO surrogate on rollouts, -A * f(p) on demo tokens, one aggregation."""
    a = inp.cfg.algo
    old = inp.old_logp if inp.old_logp is not None else logp.detach()
    tok, metrics = algos.mixed_policy_loss(
        logp, old, inp.advantages[:, None].expand_as(logp), inp.mask, inp.batch.demo_mask,
        demo_weight=a.demo_weight, gamma=a.demo_gamma, eps_low=a.clip_low, eps_high=a.clip_high)
    loss = algos.aggregate(tok, inp.mask, a.aggregation, l_max=inp.cfg.rollout.max_completion_length)
    m = {f"luffy/{k}": float(v) for k, v in metrics.items()}
    m["loss/policy"] = float(loss.detach())
    m.update(_demo_metrics(inp, logp, ent))
    if ent is not None and a.entropy_coef:
        loss = loss - a.entropy_coef * _mmean(ent, inp.mask)
    return loss, m


def srft_loss(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None):
    """SRFT (SPEC 6): entropy-weighted SFT + off-policy RL on the demo + outcome-split self-rollouts."""
    a = inp.cfg.algo
    loss, metrics = algos.srft_loss(
        logp=logp, token_entropy=ent, mask=inp.mask, is_demo=inp.batch.demo_mask,
        advantages=inp.advantages, rewards=inp.rewards, l_max=inp.cfg.rollout.max_completion_length,
        gamma=a.demo_gamma, entropy_coef=a.entropy_coef, sft_weight_sign=a.srft_sft_weight_sign,
        entropy_granularity=a.srft_entropy_granularity)
    m = {k if "/" in k else f"srft/{k}": float(v) for k, v in metrics.items()}
    m.update(_demo_metrics(inp, logp, ent))
    return loss, m


def _demo_metrics(inp: LossInputs, logp: torch.Tensor, ent: torch.Tensor | None) -> dict[str, float]:
    """SPEC 6 logs: mean p on demo tokens, entropy over all tokens and over on-policy tokens."""
    dm = inp.batch.demo_mask.to(logp.dtype)
    out = {"demo/p_mean": float(_mmean(logp.detach().exp(), dm))}
    if ent is not None:
        out["entropy/mean"] = float(_mmean(ent.detach(), inp.mask))
        out["entropy/on_policy"] = float(_mmean(ent.detach(), inp.mask * (1 - dm)))
    return out


METHODS.register("sft", Method(DEMO_ENTRIES.get("sft_only"), sft_loss, uses_reward=False),
                 help="supervised fine-tuning on the demonstrations (token-mean NLL)")
METHODS.register("grpo", Method(DEMO_ENTRIES.get("none"), grpo_loss),
                 help="GRPO; KL controller from algo.kl (fixed | adaptive | grpo_d)")
METHODS.register("grpo_d", Method(DEMO_ENTRIES.get("none"), grpo_loss, kl_controller="grpo_d"),
                 help="GRPO-D (OThink-MR1): GRPO with the grpo_d dynamic KL schedule")
METHODS.register("luffy", Method(DEMO_ENTRIES.get("group_member"), luffy_loss),
                 help="LUFFY: G-1 rollouts + 1 demo per group, policy shaping on demo tokens")
METHODS.register("srft", Method(DEMO_ENTRIES.get("group_member"), srft_loss),
                 help="SRFT: one-stage SFT + RL with entropy-aware weights")
METHODS.register("rl_sft_loss", Method(DEMO_ENTRIES.get("sft_batch"), rl_sft_loss),
                 help="GRPO on rollouts + 1.0 x token-mean NLL on the demonstrations")


def kl_controller_name(cfg: Any) -> str:
    return METHODS.get(cfg.method).kl_controller or cfg.algo.kl.controller


def kl_active(cfg: Any) -> bool:
    """A reference model is needed unless the KL weight is identically 0 (SPEC 1)."""
    k = cfg.algo.kl
    name = kl_controller_name(cfg)
    if name == "grpo_d":
        return max(k.beta_min, k.beta_max) > 0
    return k.beta > 0


def build_kl(cfg: Any, total_opt_steps: int) -> Any:
    """The KL controller; GRPO-D's schedule spans the stage's total optimizer steps (SPEC 2)."""
    k = cfg.algo.kl
    name = kl_controller_name(cfg)
    return algos.build_kl_controller(name, beta=k.beta, beta_min=k.beta_min, beta_max=k.beta_max,
                                     explore_frac=k.explore_frac, total_steps=total_opt_steps,
                                     target=k.target, horizon=k.horizon)


@functools.lru_cache(maxsize=8)
def _reward_manager(names: tuple[str, ...], weights: tuple[float, ...]) -> RewardManager:
    """One RewardManager per reward config, built once and reused across steps."""
    return RewardManager(list(zip(names, weights)))


def score_rollout(rollout: Any, cfg: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the configured rewards per row (None = not applicable = 0) and metrics.

    The RewardManager gives timeouts, fraction None and the mixed reward's per-type means
    (`reward/mixed/<type>`); means and stds here are over on-policy rows only, so a demo in
    the group (LUFFY/SRFT) does not inflate them; the demo's own mean is `reward/demo_mean`.
    """
    weights = tuple(cfg.weights or [1.0] * len(cfg.names))
    totals, components, metrics = _reward_manager(tuple(cfg.names), weights).score(
        list(rollout.texts), rollout.columns())
    rollout.reward_components = components  # per-function values for the rollouts file
    demo = torch.tensor(rollout.is_demo, dtype=torch.bool)
    on_policy = ~demo if bool((~demo).any()) else torch.ones_like(demo)
    for name, vals in components.items():
        r = torch.tensor([0.0 if v is None else float(v) for v in vals])[on_policy]
        metrics[f"reward/{name}/mean"] = float(r.mean())
        metrics[f"reward/{name}/std"] = float(r.std(unbiased=False))
    total = torch.tensor(totals, dtype=torch.float32)
    metrics.update({"reward/mean": float(total[on_policy].mean()),
                    "reward/std": float(total[on_policy].std(unbiased=False))})
    if bool(demo.any()):
        metrics["reward/demo_mean"] = float(total[demo].mean())
    return total, metrics


def advantages(cfg: Any, rollout: Any, rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Group advantages over the [B, G] groups; rows outside groups (demo rows) get 0.

    Axis 4: with demo_in_group_stats False the demo is left out of the mean/std (RL-PLUS, TRAPO).
    """
    gids = torch.tensor(rollout.group_ids)
    adv = torch.zeros_like(rewards)
    in_group = gids >= 0
    if not bool(in_group.any()):
        return adv, {}
    g = rollout.group_size
    r = rewards[in_group].view(-1, g)
    demo = torch.tensor(rollout.is_demo)[in_group].view(-1, g)
    stats_mask = torch.ones_like(demo) if cfg.algo.demo_in_group_stats else ~demo
    a = algos.advantage(cfg.algo.advantage)(r, eps=cfg.algo.adv_eps, include_in_stats=stats_mask)
    adv[in_group] = a.reshape(-1).to(adv.dtype)
    solved = (r > 0.5)
    on = ~demo
    m = {"adv/mean_abs": float(a.abs().mean()),
         "frac_reward_zero_std": algos.frac_zero_std(rewards[in_group], gids[in_group]),
         "groups/all_solved": float((solved | ~on).all(1).float().mean()),
         "groups/none_solved": float((~solved | ~on).all(1).float().mean()),
         "solve_rate/on_policy": float(solved[on].float().mean()) if bool(on.any()) else 0.0}
    if bool(demo.any()):
        m["solve_rate/demo"] = float(solved[demo].float().mean())
    return adv, m
