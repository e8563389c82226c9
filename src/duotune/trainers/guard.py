"""The guard around one optimizer update (issue 16): a loss past `run.max_loss` is not applied; an update
that leaves the trained weights non-finite, or multiplies their norm by more than
`run.max_param_growth` (lr=1e30 writes finite +-1e30 weights whose next forward is inf), is rolled back
to the copy of the weights and optimizer/scheduler state taken just before it.

The copy lives in CPU memory (one copy of the trained weights and optimizer state), so a GPU run does
not need twice its memory. Imports torch and `duotune.errors`; returns a reason string or None.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from duotune.errors import DuotuneError


@dataclass
class Snapshot:
    """The state an update may be rolled back to; `norm` is the weights' L2 norm before it."""

    norm: float
    params: list[torch.Tensor] | None
    optimizer: dict[str, Any] | None
    scheduler: dict[str, Any] | None


def weight_norm(params: list[torch.Tensor]) -> float:
    """Global L2 norm of `params` (inf or nan when any weight is)."""
    if not params:
        return 0.0
    return float(torch.nn.utils.get_total_norm([p.detach() for p in params], norm_type=2.0))


def loss_problem(loss: float, max_loss: float | None) -> str | None:
    """Why this step's loss must not be applied (past the spike bound), or None."""
    if max_loss is not None and abs(loss) > max_loss:
        return f"loss {loss:.4g} past run.max_loss={max_loss:g}"
    return None


def before_update(params: list[torch.Tensor], optimizer: Any, scheduler: Any, rollback: bool) -> Snapshot:
    """The norm of the weights and, with `rollback`, a CPU copy of everything the update changes."""
    norm = weight_norm(params)
    if not rollback:
        return Snapshot(norm, None, None, None)
    return Snapshot(norm, [p.detach().to("cpu", copy=True) for p in params],
                    _to_cpu(optimizer.state_dict()), copy.deepcopy(scheduler.state_dict()))


def update_problem(norm_before: float, norm_after: float, max_growth: float | None) -> str | None:
    """Why the weights after an update cannot be kept (non-finite, or grown past the bound), or None."""
    if not torch.isfinite(torch.tensor(norm_after)):
        return f"non-finite weights after the update (norm {norm_after})"
    if max_growth is not None and norm_before > 0 and norm_after > max_growth * norm_before:
        return (f"the update grew the weight norm {norm_after / norm_before:.3g}x ({norm_before:.4g} -> "
                f"{norm_after:.4g}), past run.max_param_growth={max_growth:g}")
    return None


def after_update(snap: Snapshot, params: list[torch.Tensor], optimizer: Any, scheduler: Any, run: Any,
                 accelerator: Any) -> str | None:
    """Check the weights an update left (every process agrees); roll a bad update back and return
    why, or None to keep it. Without `run.rollback` a bad update stops the run (DuotuneError)."""
    why = update_problem(snap.norm, weight_norm(params), run.max_param_growth)
    if getattr(accelerator, "num_processes", 1) > 1:  # shards or replicas: one verdict for all
        flag = torch.tensor([float(why is not None)], device=params[0].device)
        if float(accelerator.reduce(flag, reduction="sum")) > 0 and why is None:
            why = "another process saw a bad update"
    if why is None:
        return None
    if snap.params is None:
        raise DuotuneError(f"{why}; stopping before these weights are used or saved (run.rollback=false; "
                           "set it true to roll bad updates back, or lower optim.lr)")
    restore(snap, params, optimizer, scheduler)
    return why


def restore(snap: Snapshot, params: list[torch.Tensor], optimizer: Any, scheduler: Any) -> None:
    """Put back the weights, optimizer state and schedule of `snap` (bit-exact)."""
    assert snap.params is not None and snap.optimizer is not None and snap.scheduler is not None
    with torch.no_grad():
        for p, saved in zip(params, snap.params):
            p.copy_(saved)
    optimizer.load_state_dict(snap.optimizer)
    scheduler.load_state_dict(snap.scheduler)


def _to_cpu(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {k: _to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_to_cpu(v) for v in tree]
    return copy.deepcopy(tree)
