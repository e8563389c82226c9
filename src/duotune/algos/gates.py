"""Per-question gates on how many rollouts were solved (DESIGN axis 3), registry `gate`.

A gate maps the solved count of each question [P] to two per-question coefficients: the weight of
its RL term (its rollouts) and the weight of the SFT term on its demonstration. A coefficient 0
means the term is absent for that question. Pure torch; imports only duotune.errors/registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from duotune.algos import _shapes
from duotune.errors import ConfigError
from duotune.registry import Registry

GATES: Registry[Callable[..., tuple[torch.Tensor, torch.Tensor]]] = Registry("gate")

# HPT's soft table (Unify-Post-Training, `mix_trainer.py`, soft_type 0), indexed here by the number of
# solved rollouts (the release indexes by solved + 1, its demo being a solved group member), with
# the off-policy RL column dropped: (RL weight, SFT weight).
HPT_SOFT_TABLE: tuple[tuple[float, float], ...] = (
    (0.0, 1.0), (0.125, 0.5), (0.25, 0.25), (0.5, 0.125), (1.0, 0.0))


@GATES.register("switch")
def switch_gate(solved: torch.Tensor, *, gamma: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A question with at most `gamma` solved rollouts trains on its demonstration only (SFT weight 1,
    its rollouts dropped); any other question trains on its rollouts only (HPT arXiv 2509.04419,
    gamma 0; SuperRL arXiv 2506.01096 is gamma 0)."""
    _shapes.tensor("solved", solved, 1, "[P]")
    if gamma < 0:
        raise ConfigError(f"switch gate gamma must be >= 0, got {gamma}")
    routed = solved <= gamma
    return (~routed).float(), routed.float()


@GATES.register("soft")
def soft_gate(solved: torch.Tensor, *, table: Sequence[Sequence[float]] = HPT_SOFT_TABLE,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Row k of `table` = (RL weight, SFT weight) of a question with k solved rollouts; counts past the
    table's end use its last row (HPT's soft variant interpolating GRPO and SFT by the number solved)."""
    _shapes.tensor("solved", solved, 1, "[P]")
    t = torch.tensor([list(r) for r in table], dtype=torch.float32)
    if t.dim() != 2 or t.shape[1] != 2 or t.shape[0] == 0 or bool((t < 0).any()):
        raise ConfigError(f"soft gate table must be a non-empty list of [rl_weight, sft_weight] pairs >= 0, "
                          f"got {table!r}")
    row = t[solved.long().clamp(min=0, max=t.shape[0] - 1)]
    return row[:, 0], row[:, 1]


def gate(name: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The registered gate `name`: `(solved [P], **params) -> (rl_weight [P], sft_weight [P])`."""
    return GATES.get(name)
