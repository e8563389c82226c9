"""Per-token objectives on demonstration tokens (DESIGN axis 2), registry `demo_weight`.

Each function maps logp [N, T] to a per-token objective J (to be maximised) whose gradient is
w(p) * grad(logp) for the method's weight w; an SFT-style loss is -J, an RL-style one -A * J.
Pure torch; imports only duotune.errors/registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from duotune.errors import ConfigError
from duotune.registry import Registry

DEMO_WEIGHTS: Registry[Callable[..., torch.Tensor]] = Registry("demo_weight")


def luffy_shaping(logp: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """f(p) = p / (p + gamma), p = exp(logp): LUFFY's policy shaping (arXiv 2504.14945)."""
    if gamma <= 0:
        raise ConfigError(f"luffy gamma must be > 0, got {gamma}")
    p = logp.exp()
    return p / (p + gamma)


@DEMO_WEIGHTS.register("nll")
def nll_objective(logp: torch.Tensor) -> torch.Tensor:
    """J = logp: plain NLL, weight 1 on every demo token (SFT)."""
    return logp


@DEMO_WEIGHTS.register("dft")
def dft_objective(logp: torch.Tensor) -> torch.Tensor:
    """J = sg(p) * logp: weight p, detached (DFT, arXiv 2508.05629: L = -sg(p) log p)."""
    return logp.detach().exp() * logp


@DEMO_WEIGHTS.register("chord_phi")
def chord_phi_objective(logp: torch.Tensor) -> torch.Tensor:
    """J = sg(p(1-p)) * logp: CHORD's phi weighting (arXiv 2508.11408), the weight detached as in DFT.

    phi peaks at p = 0.5, so tokens the policy already knows (p ~ 1) and far-off ones (p ~ 0) move least.
    """
    p = logp.detach().exp()
    return p * (1 - p) * logp


@DEMO_WEIGHTS.register("luffy")
def luffy_objective(logp: torch.Tensor, gamma: float = 0.1) -> torch.Tensor:
    """J = p/(p+gamma) with the gradient through it: grad J = gamma*p/(p+gamma)^2 * grad logp (LUFFY)."""
    return luffy_shaping(logp, gamma)


@DEMO_WEIGHTS.register("trapo")
def trapo_objective(logp: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """J = p / sg(max(p, alpha)): gradient weight min(1, p/alpha) on grad logp (TRAPO-style truncation).

    The denominator is detached, so tokens with p >= alpha get the NLL gradient and rarer tokens are
    down-weighted in proportion to p, a truncated importance weight.
    """
    if alpha <= 0:
        raise ConfigError(f"trapo alpha must be > 0, got {alpha}")
    p = logp.exp()
    return p / p.detach().clamp(min=alpha)


def demo_weight(name: str) -> Callable[..., torch.Tensor]:
    """The registered demo objective `name`: `(logp, **its params) -> J`."""
    return DEMO_WEIGHTS.get(name)


def demo_objective(name: str, logp: torch.Tensor, **params: Any) -> torch.Tensor:
    """J for demo weight `name`; of `params` (e.g. gamma, alpha) each function takes what it declares,
    so a caller may pass its whole demo config whatever the name.
    """
    fn = DEMO_WEIGHTS.get(name)
    accepted = inspect.signature(fn).parameters
    return fn(logp, **{k: v for k, v in params.items() if k in accepted})
