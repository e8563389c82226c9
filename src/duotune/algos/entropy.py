"""Entropy of the policy's next-token distribution from logits (SPEC notation H[i, t]).

Pure torch; imports only duotune.errors and the local shape checks.
"""

from __future__ import annotations

import torch

from duotune.algos import _shapes
from duotune.errors import ShapeError


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p_v log p_v over the last dim of `logits` [..., V] -> [...] (e.g. [N, T, V] -> [N, T]).

    Uses log_softmax (no overflow for large logits); tokens with p = 0 (logit -inf) contribute 0
    instead of 0 * -inf = nan. Half-precision inputs are computed in float32 (returned in float32)
    because a bf16 sum over a 50k vocabulary loses about two digits.
    """
    _shapes.tensor("logits", logits, None, "[..., V]")
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ShapeError(f"logits has shape {tuple(logits.shape)}; expected [..., V] with V >= 1")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
