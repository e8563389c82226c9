"""Group-relative advantages (SPEC 1; DESIGN axis 4: which members enter the group statistics).

Registry `advantage`: `grpo` (mean/std), `dr_grpo` and `no_std` (mean only). Pure torch; imports
only duotune.errors/registry and the local shape checks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from duotune.algos import _shapes
from duotune.errors import ShapeError
from duotune.registry import Registry

ADVANTAGES: Registry[Callable[..., torch.Tensor]] = Registry("advantage")


def group_advantages(rewards: torch.Tensor, std_normalize: bool, eps: float = 1e-6,
                     include_in_stats: torch.Tensor | None = None) -> torch.Tensor:
    """A[b, g] = (r - mean_b) (/ (std_b + eps)) over each row b of `rewards` [B, G].

    std is torch.std (unbiased), as TRL and verl use. `include_in_stats` [B, G] (bool) picks the
    members that define mean/std (axis 4); excluded members still get an advantage from the
    others' statistics. A group whose included rewards are all equal gets A = 0 for its included
    members (SPEC 1).
    """
    _shapes.tensor("rewards", rewards, 2, "[B, G]")
    b, g = rewards.shape
    ids = torch.arange(b, device=rewards.device).repeat_interleave(g)
    inc = None if include_in_stats is None else \
        _shapes.mask("include_in_stats", include_in_stats, "rewards", rewards).reshape(-1)
    out = grouped_advantages(rewards.reshape(-1), ids, std_normalize=std_normalize, eps=eps,
                             include_in_stats=inc)
    return out.view(b, g)


def grouped_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, *, std_normalize: bool,
                       eps: float = 1e-6, include_in_stats: torch.Tensor | None = None) -> torch.Tensor:
    """Advantages for flat rows: `rewards` [N] with `group_ids` [N] (rows with a negative id are in
    no group and get 0). Same rules as `group_advantages`; groups may have different sizes.
    """
    _shapes.tensor("rewards", rewards, 1, "[N]")
    n = rewards.shape[0]
    gid = _shapes.rows("group_ids", group_ids, n).to(rewards.device)
    inc = torch.ones(n, dtype=torch.bool, device=rewards.device) if include_in_stats is None else \
        _shapes.mask("include_in_stats", include_in_stats, "rewards", rewards)
    r = rewards.detach().double()
    in_group = gid >= 0
    _, inv = torch.unique(torch.where(in_group, gid, -1), return_inverse=True)
    k = int(inv.max()) + 1 if n else 0
    w = (inc & in_group).double()
    cnt = torch.zeros(k, dtype=r.dtype, device=r.device).index_add_(0, inv, w)
    has_group = torch.zeros(k, dtype=torch.bool, device=r.device).index_fill_(0, inv[in_group], True)
    if bool((has_group & (cnt == 0)).any()):
        raise ShapeError("include_in_stats leaves a group with no member in its mean/std; "
                         "include at least one member of every group")
    mean = torch.zeros_like(cnt).index_add_(0, inv, w * r) / cnt.clamp(min=1)
    dev = r - mean[inv]
    adv = dev
    # "All equal" is decided exactly on the included rewards (max == min), not through std == 0,
    # so that rounding in the mean never turns a zero-variance group into a tiny non-zero signal.
    big = torch.finfo(r.dtype).max
    hi = torch.full_like(cnt, -big).scatter_reduce_(0, inv, torch.where(w > 0, r, -big), "amax")
    lo = torch.full_like(cnt, big).scatter_reduce_(0, inv, torch.where(w > 0, r, big), "amin")
    flat = (hi <= lo)[inv]
    if std_normalize:
        var = torch.zeros_like(cnt).index_add_(0, inv, w * dev.pow(2)) / (cnt - 1).clamp(min=1)
        std = var.sqrt()[inv]
        # In a flat group std = 0; dividing an excluded member's (r - mean) by eps alone would give
        # ~1e6, so the scale falls back to 1 there (included members are 0 either way).
        adv = torch.where(flat, dev, dev / (std + eps))
    adv = torch.where(flat & inc, torch.zeros_like(adv), adv)
    adv = torch.where(in_group, adv, torch.zeros_like(adv))
    return adv.to(rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype())


def frac_zero_std(rewards: torch.Tensor, group_ids: torch.Tensor) -> float:
    """Share of groups (ids >= 0) whose rewards are all equal (SPEC 1 `frac_reward_zero_std`)."""
    _shapes.tensor("rewards", rewards, 1, "[N]")
    gid = _shapes.rows("group_ids", group_ids, rewards.shape[0]).to(rewards.device)
    keep = gid >= 0
    if not bool(keep.any()):
        return 0.0
    r, gid = rewards[keep].detach().double(), gid[keep]
    uniq, inv = torch.unique(gid, return_inverse=True)
    init = torch.zeros(len(uniq), dtype=r.dtype, device=r.device)
    hi = (init - torch.inf).scatter_reduce_(0, inv, r, "amax")
    lo = (init + torch.inf).scatter_reduce_(0, inv, r, "amin")
    return float((hi == lo).double().mean())


@ADVANTAGES.register("grpo")
def grpo_advantage(rewards: torch.Tensor, *, eps: float = 1e-6,
                   include_in_stats: torch.Tensor | None = None) -> torch.Tensor:
    """GRPO: (r - mean) / (std + eps) inside each group (DeepSeekMath, arXiv 2402.03300)."""
    return group_advantages(rewards, True, eps, include_in_stats)


@ADVANTAGES.register("dr_grpo")
def dr_grpo_advantage(rewards: torch.Tensor, *, eps: float = 1e-6,
                      include_in_stats: torch.Tensor | None = None) -> torch.Tensor:
    """Dr. GRPO: r - mean, no std division (arXiv 2503.20783; LUFFY's released script)."""
    return group_advantages(rewards, False, eps, include_in_stats)


ADVANTAGES.register("no_std", dr_grpo_advantage,
                    help="r - mean, no std division (same as dr_grpo; LUFFY's released script)")


def advantage(name: str) -> Callable[..., torch.Tensor]:
    """The registered advantage function `name`: `(rewards [B, G], *, eps, include_in_stats) -> [B, G]`."""
    return ADVANTAGES.get(name)
