"""Scoring a step's rollout: rewards (weighted sum, and which rows the accuracy part calls solved)
and group advantages over the [B, G] groups, with the metrics of both.

Imports torch, algos and rewards; knows nothing of models or losses.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import torch

from duotune import algos
from duotune.rewards import RewardManager


def reward_manager(cfg: Any) -> RewardManager:
    """The RewardManager of a reward config (`RewardCfg`), built once per config and reused across
    steps; building it imports user reward modules (`pkg.mod:fn`), so the trainer calls it first."""
    weights = tuple(cfg.weights or [1.0] * len(cfg.names))
    return _reward_manager(tuple(cfg.names), weights, json.dumps(cfg.params, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _reward_manager(names: tuple[str, ...], weights: tuple[float, ...], params: str) -> RewardManager:
    by_name = json.loads(params)
    return RewardManager([(n, w, by_name.get(n, {})) for n, w in zip(names, weights)])


def score_rollout(rollout: Any, cfg: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """(weighted reward sum per row (None = not applicable = 0), solved per row, metrics).

    "Solved" reads the accuracy part of the rewards (`RewardManager.correct`): a format bonus alone
    never counts. Means and stds are over on-policy rows only, so a demo in the group (LUFFY/SRFT)
    does not inflate them; the demo's own mean is `reward/demo_mean`.
    """
    manager = reward_manager(cfg)
    columns = rollout.columns()
    columns.setdefault("completion_ids", [list(r) for r in rollout.responses])  # TRL's column
    totals, components, metrics = manager.score(list(rollout.texts), columns)
    rollout.reward_components = components  # per-function values for the rollouts file
    correct = torch.tensor(manager.correct(components), dtype=torch.bool)
    demo = torch.tensor(rollout.is_demo, dtype=torch.bool)
    off = torch.tensor(rollout.off_policy(), dtype=torch.bool)  # demos and expert-prefix rows
    on_policy = ~off if bool((~off).any()) else torch.ones_like(off)
    for name, vals in components.items():
        r = torch.tensor([0.0 if v is None else float(v) for v in vals])[on_policy]
        metrics[f"reward/{name}/mean"] = float(r.mean())
        metrics[f"reward/{name}/std"] = float(r.std(unbiased=False))
    total = torch.tensor(totals, dtype=torch.float32)
    metrics.update({"reward/mean": float(total[on_policy].mean()),
                    "reward/std": float(total[on_policy].std(unbiased=False))})
    if bool(demo.any()):
        metrics["reward/demo_mean"] = float(total[demo].mean())
    if bool((off & ~demo).any()):
        metrics["reward/prefix_mean"] = float(total[off & ~demo].mean())
    return total, correct, metrics


def advantages(stats: tuple[str, float, bool] | None, rollout: Any, rewards: torch.Tensor,
               correct: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Group advantages over the [B, G] groups; rows outside groups (demo rows) get 0.

    stats = (estimator, eps, demos in the statistics) from the method's settings (axis 4: with the
    last False the demo is left out of the mean/std, as RL-PLUS and TRAPO do; expert-prefix rows
    count as demos here); None = no groups.
    """
    gids = torch.tensor(rollout.group_ids)
    adv = torch.zeros_like(rewards)
    in_group = gids >= 0
    if stats is None or not bool(in_group.any()):
        return adv, {}
    name, eps, demo_in_stats = stats
    g = rollout.group_size
    r = rewards[in_group].view(-1, g)
    demo = torch.tensor(rollout.off_policy())[in_group].view(-1, g)
    stats_mask = torch.ones_like(demo) if demo_in_stats else ~demo
    a = algos.advantage(name)(r, eps=eps, include_in_stats=stats_mask)
    adv[in_group] = a.reshape(-1).to(adv.dtype)
    solved = correct[in_group].view(-1, g)
    on = torch.where((~demo).any(1, keepdim=True), ~demo, True)  # a group of hinted rows only (UFT): all
    m = {"adv/mean_abs": float(a.abs().mean()),
         "frac_reward_zero_std": algos.frac_zero_std(rewards[in_group], gids[in_group]),
         "groups/all_solved": float((solved | ~on).all(1).float().mean()),
         "groups/none_solved": float((~solved | ~on).all(1).float().mean()),
         "solve_rate/on_policy": float(solved[on].float().mean()) if bool(on.any()) else 0.0}
    is_demo = torch.tensor(rollout.is_demo)[in_group].view(-1, g)
    if bool(is_demo.any()):
        m["solve_rate/demo"] = float(solved[is_demo].float().mean())
    if bool((demo & ~is_demo).any()):
        m["solve_rate/prefix"] = float(solved[demo & ~is_demo].float().mean())
    return adv, m
