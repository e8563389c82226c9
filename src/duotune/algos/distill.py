"""On-policy distillation divergences (GKD arXiv 2306.13649, KDRL arXiv 2506.02208), registry
`divergence`: per-token losses [N, T] between the student and a frozen teacher on the student's own
samples (DESIGN axis 1: "teacher log-probs on the student's own rollouts").

- `reverse_kl`: the per-token reward r_t = log pi_T - log pi_S as a policy gradient,
  l_t = -sg(r_t) log pi_S(y_t). Its gradient (log pi_S - log pi_T) grad log pi_S is that of KDRL's
  k2 estimate 1/2 (log pi_S - log pi_T)^2, an unbiased gradient of KL(pi_S || pi_T) per token.
- `forward_kl`, `jsd`: supervised divergences over the teacher's top-k ids at each position, both
  distributions coarse-grained to those k ids + one bucket for the rest of the vocabulary: k = V is
  the full-vocabulary value, any k a lower bound, and the student's mass outside the teacher's top-k
  is pushed in (renormalising over the k ids, TRL's top-k mode, ignores it: measured here, a tiny
  student matched the teacher within its top 8 while its sampled KL to the teacher did not fall).
  jsd_beta as TRL's generalized JSD: M = beta T + (1 - beta) S, JSD = beta KL(T || M) + (1 - beta) KL(S || M).
Pure torch; imports only duotune.errors/registry and the local shape checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from duotune.algos import _shapes
from duotune.errors import ConfigError, ShapeError
from duotune.registry import Registry

DIVERGENCES: Registry[Callable[..., torch.Tensor]] = Registry("divergence")


@DIVERGENCES.register("reverse_kl")
def reverse_kl_pg(logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """l_t = -sg(log pi_T - log pi_S) * log pi_S on sampled tokens (GKD's on-policy reverse KL as
    REINFORCE with a per-token reward; KDRL's k2 gradient)."""
    _shapes.tensor("logp", logp, 2, "[N, T]")
    _shapes.same_shape("teacher_logp", teacher_logp, "logp", logp)
    return -(teacher_logp - logp).detach() * logp


def _with_rest(student_topk: torch.Tensor, teacher_topk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both distributions coarse-grained to the k ids + one bucket for the rest of the vocabulary:
    log-probs [N, T, k + 1] (the rest = log(1 - sum of the k probabilities))."""
    _shapes.tensor("student_topk", student_topk, 3, "[N, T, k]")
    _shapes.same_shape("teacher_topk", teacher_topk, "student_topk", student_topk)
    if student_topk.shape[-1] < 1:
        raise ShapeError("top-k divergences need k >= 1 teacher tokens per position")

    def rest(lp: torch.Tensor) -> torch.Tensor:
        # floored at 1e-8 on both sides, so k = V (a rest of 0 up to rounding) adds nothing, not inf
        mass = torch.logsumexp(lp, dim=-1, keepdim=True).exp()
        return torch.cat([lp, (1 - mass).clamp(min=1e-8).log()], -1)

    return rest(student_topk), rest(teacher_topk.detach())


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) over the last dim, with 0 log 0 = 0."""
    return torch.where(p_log > -math.inf, p_log.exp() * (p_log - q_log), torch.zeros_like(p_log)).sum(-1)


@DIVERGENCES.register("forward_kl")
def forward_kl_topk(student_topk: torch.Tensor, teacher_topk: torch.Tensor) -> torch.Tensor:
    """KL(T || S) over the teacher's top-k ids + the rest (log-probs [N, T, k] of both at those ids)."""
    s, t = _with_rest(student_topk, teacher_topk)
    return _kl(t, s)


@DIVERGENCES.register("jsd")
def jsd_topk(student_topk: torch.Tensor, teacher_topk: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Generalized JSD_beta over the teacher's top-k ids + the rest (GKD eq. 1; TRL's beta, 0 < beta < 1)."""
    if not 0 < beta < 1:
        raise ConfigError(f"jsd beta must be in (0, 1) (0 and 1 are forward_kl and reverse KL), got {beta}")
    s, t = _with_rest(student_topk, teacher_topk)
    m = torch.logaddexp(t + math.log(beta), s + math.log1p(-beta))
    return beta * _kl(t, m) + (1 - beta) * _kl(s, m)


def divergence(name: str) -> Callable[..., torch.Tensor]:
    """The registered per-token divergence `name`."""
    return DIVERGENCES.get(name)
