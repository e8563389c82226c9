"""Aggregation of a per-token loss matrix [N, T] into one scalar (SPEC 1), registry `aggregation`.

The choice changes the effective per-token weight (DAPO, Dr. GRPO). Pure torch; imports only
duotune.registry and the local shape checks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from duotune.algos import _shapes
from duotune.registry import Registry

AGGREGATIONS: Registry[Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = Registry("aggregation")


def _masked(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # where (not multiply) so that non-finite values at padded positions cannot leak in.
    return torch.where(mask, loss, torch.zeros_like(loss))


@AGGREGATIONS.register("token_mean")
def token_mean(loss: torch.Tensor, mask: torch.Tensor, l_max: int) -> torch.Tensor:
    """Sum over all valid tokens / their count (DAPO, arXiv 2503.14476)."""
    return _masked(loss, mask).sum() / mask.sum().clamp(min=1)


@AGGREGATIONS.register("seq_mean_token_mean")
def seq_mean_token_mean(loss: torch.Tensor, mask: torch.Tensor, l_max: int) -> torch.Tensor:
    """Mean over each sequence's tokens, then over sequences with >= 1 token (original GRPO)."""
    n_tok = mask.sum(-1)
    per_seq = _masked(loss, mask).sum(-1) / n_tok.clamp(min=1)
    return per_seq.sum() / (n_tok > 0).sum().clamp(min=1)


@AGGREGATIONS.register("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(loss: torch.Tensor, mask: torch.Tensor, l_max: int) -> torch.Tensor:
    """Sum over all valid tokens / (N * L_max), a length-independent constant (Dr. GRPO, arXiv 2503.20783)."""
    return _masked(loss, mask).sum() / (loss.shape[0] * l_max)


@AGGREGATIONS.register("sum_over_lmax")
def sum_over_lmax(loss: torch.Tensor, mask: torch.Tensor, l_max: int) -> torch.Tensor:
    """Sum over all valid tokens in the batch / L_max (LUFFY and SRFT released code)."""
    return _masked(loss, mask).sum() / l_max


def aggregate(loss: torch.Tensor, mask: torch.Tensor, mode: str, l_max: int | None = None) -> torch.Tensor:
    """Reduce `loss` [N, T] over `mask` [N, T] with aggregation `mode`; `l_max` defaults to T."""
    fn = AGGREGATIONS.get(mode)
    _shapes.tensor("loss", loss, 2, "[N, T]")
    m = _shapes.mask("mask", mask, "loss", loss)
    return fn(loss, m, _shapes.positive_length(loss.shape[1] if l_max is None else l_max))
