"""Mixing schedules for the demonstration-loss weight (DESIGN axis 3), registry `mix_schedule`.

Each is a pure function `(step, total_steps=1, **params) -> float`; with the default
total_steps = 1 the first argument is the fraction of the stage done. Imports duotune.errors/registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from duotune.errors import ConfigError
from duotune.registry import Registry

MIX_SCHEDULES: Registry[Callable[..., float]] = Registry("mix_schedule")


def _progress(step: float, total_steps: float) -> float:
    if total_steps <= 0:
        raise ConfigError(f"mix schedule total_steps must be > 0, got {total_steps}")
    if not 0 <= step <= total_steps:
        raise ConfigError(f"mix schedule step {step} is outside [0, total_steps={total_steps}]")
    return step / total_steps


@MIX_SCHEDULES.register("constant")
def constant(step: float, total_steps: float = 1, *, value: float = 1.0) -> float:
    """The same weight `value` at every step (RL with SFT loss; SRFT's fixed coefficients)."""
    _progress(step, total_steps)
    return value


@MIX_SCHEDULES.register("warmup_cosine")
def warmup_cosine(step: float, total_steps: float = 1, *, warmup_frac: float = 0.0,
                  decay_frac: float | None = None, peak: float = 0.9, valley: float = 0.05) -> float:
    """CHORD's mu (arXiv 2508.11408): linear 0 -> peak over warmup_frac of the steps, cosine
    peak -> valley over the next decay_frac (default: the rest), then valley. Defaults are
    CHORD's mu_peak 0.9 / mu_valley 0.05 with no warm-up.
    """
    x = _progress(step, total_steps)
    decay = 1.0 - warmup_frac if decay_frac is None else decay_frac
    if warmup_frac < 0 or decay < 0 or warmup_frac + decay > 1 + 1e-12:
        raise ConfigError(f"warmup_cosine needs warmup_frac, decay_frac >= 0 with sum <= 1, "
                          f"got {warmup_frac}, {decay}")
    if x < warmup_frac:
        return peak * x / warmup_frac
    if decay == 0:
        return valley
    t = min(1.0, (x - warmup_frac) / decay)
    return valley + (peak - valley) * 0.5 * (1 + math.cos(math.pi * t))


def mix_schedule(name: str) -> Callable[..., float]:
    """The registered schedule `name`: `(step, total_steps=1, **params) -> float`."""
    return MIX_SCHEDULES.get(name)
