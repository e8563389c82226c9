"""RewardManager: score a batch with several weighted rewards, returning totals, per-reward components
and metrics (mean, std, fraction None, timeouts; per-type means for the mixed reward).

The entry point trainers and the eval call. Imports the rewards' own modules only (no torch).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from duotune.errors import DuotuneError
from duotune.rewards.base import PooledReward, RewardError, check_columns
from duotune.rewards.build import get_reward
from duotune.rewards.mixed import MixedReward
from duotune.rewards.pool import GradingPool

Spec = str | Callable[..., Any] | tuple


def _params(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []


def _required_columns(fn: Callable[..., Any]) -> tuple[str, ...]:
    """Keyword parameters a user's reward needs with no default (besides the completions: the one named
    `completions`, else the first)."""
    required = getattr(fn, "requires", None)
    if required is not None:
        return tuple(required)
    params = _params(fn)
    named = [p for p in params if p.name == "completions"]
    rest = [p for p in params if p not in (named or params[:1])]
    return tuple(p.name for p in rest if p.default is inspect.Parameter.empty
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def call_reward(fn: Callable[..., Any], completions: list[str], columns: dict[str, Any]) -> Any:
    """`fn(completions, **columns)`, or by keyword when `fn` names a `completions` parameter: TRL calls
    every reward with keywords only (`prompts=..., completions=..., completion_ids=..., **columns`),
    so its functions may put `prompts` first."""
    if any(p.name == "completions" and p.kind != p.POSITIONAL_ONLY for p in _params(fn)):
        return fn(completions=completions, **columns)
    return fn(completions, **columns)


def _stats(values: list[float | None]) -> tuple[float, float, float]:
    """(mean, population std, fraction None) of a reward's values; mean/std over non-None."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return 0.0, 0.0, 1.0 if values else 0.0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return mean, std, 1.0 - len(vals) / len(values)


class RewardManager:
    """Weighted sum of rewards: `score(completions, columns) -> (totals, components, metrics)`.

    rewards: each a name/import path/callable, or (spec, weight), or (name, weight, params dict).
    pool: the GradingPool for the math-verify rewards (default: the process-wide one).
    A None value contributes 0 to the total. A reward that raises is re-raised as RewardError with
    its name and the first sample index that fails on its own.
    """

    def __init__(self, rewards: Sequence[Spec], pool: GradingPool | None = None):
        self.pool = pool
        self.entries: list[tuple[str, Callable[..., Any], float]] = []
        for spec in rewards:
            parts = tuple(spec) if isinstance(spec, tuple) else (spec,)
            target, weight, params = (parts + (1.0, {})[len(parts) - 1:])[:3]
            fn = get_reward(target, **dict(params))
            if isinstance(fn, (PooledReward, MixedReward)) and fn.pool is None:
                fn.pool = pool
            key = target if isinstance(target, str) else getattr(fn, "__name__", "reward")
            taken = {k for k, _, _ in self.entries}
            if key in taken:
                key = next(f"{key}_{n}" for n in range(2, len(taken) + 3) if f"{key}_{n}" not in taken)
            self.entries.append((key, fn, float(weight)))

    def score(self, completions: Sequence[str], columns: dict[str, Any]
              ) -> tuple[list[float], dict[str, list[float | None]], dict[str, float]]:
        """Totals per sample, each reward's values by name, and metrics `reward/<name>/<stat>`."""
        completions = list(completions)
        totals = [0.0] * len(completions)
        components: dict[str, list[float | None]] = {}
        metrics: dict[str, float] = {"reward/timeouts": 0.0}
        for key, fn, weight in self.entries:
            values = self._call(key, fn, completions, columns)
            components[key] = values
            for i, v in enumerate(values):
                totals[i] += 0.0 if v is None else weight * float(v)
            mean, std, frac_none = _stats(values)
            stats = getattr(fn, "stats", {}) or {}
            metrics.update({f"reward/{key}/mean": mean, f"reward/{key}/std": std,
                            f"reward/{key}/frac_none": frac_none,
                            f"reward/{key}/timeouts": float(stats.get("timeouts", 0))})
            metrics["reward/timeouts"] += float(stats.get("timeouts", 0))
            for extra, value in stats.items():
                if extra == "by_type":
                    metrics.update({f"reward/{key}/{t}": float(m) for t, m in value.items()})
                elif extra != "timeouts":
                    metrics[f"reward/{key}/{extra}"] = float(value)
        mean, std, _ = _stats(list(totals))
        metrics.update({"reward/mean": mean, "reward/std": std})
        return totals, components, metrics

    def correct(self, components: dict[str, list[float | None]]) -> list[bool]:
        """Per sample: solved by the accuracy part of the rewards (mean of the accuracy values that
        apply > 0.5). Format rewards are never read; a sum like `accuracy_format` is read through its
        accuracy part. With no accuracy reward at all, the weighted total decides."""
        columns = []
        for key, fn, _ in self.entries:
            kind = getattr(fn, "kind", "accuracy")
            if kind == "accuracy_format":
                columns.append(list(getattr(fn, "parts", {}).get("accuracy", components[key])))
            elif kind != "format":
                columns.append(components[key])
        n = len(next(iter(components.values()), []))
        if not columns:
            totals = [sum(0.0 if components[k][i] is None else w * float(components[k][i])
                          for k, _, w in self.entries) for i in range(n)]
            return [t > 0.5 for t in totals]
        out = []
        for i in range(n):
            vals = [float(c[i]) for c in columns if c[i] is not None]
            out.append(bool(vals) and sum(vals) / len(vals) > 0.5)
        return out

    def _call(self, key: str, fn: Callable[..., Any], completions: list[str],
              columns: dict[str, Any]) -> list[float | None]:
        check_columns(key, _required_columns(fn), completions, columns)
        try:
            values = call_reward(fn, completions, columns)
        except DuotuneError:
            raise
        except Exception as exc:
            raise RewardError(key, f"{type(exc).__name__}: {exc}",
                              index=_first_failing(fn, completions, columns)) from exc
        if not isinstance(values, (list, tuple)) or len(values) != len(completions):
            raise RewardError(key, f"returned {type(values).__name__} of length "
                                   f"{len(values) if hasattr(values, '__len__') else '?'} for "
                                   f"{len(completions)} completions; return one float or None each")
        for i, v in enumerate(values):
            if v is not None and not isinstance(v, numbers.Real):
                raise RewardError(key, f"returned {v!r}; rewards must be float or None", index=i)
            if v is not None and not math.isfinite(v):  # one NaN would void the whole group's advantages
                raise RewardError(key, f"returned {v!r}; rewards must be finite numbers, or None for "
                                       "'not applicable'", index=i)
        return list(values)


def _first_failing(fn: Callable[..., Any], completions: list[str], columns: dict[str, Any]) -> int | None:
    """Index of the first sample on which `fn` raises when called alone (None if none does)."""
    for i, c in enumerate(completions):
        cols = {k: [v[i]] if isinstance(v, (list, tuple)) and len(v) == len(completions) else v
                for k, v in columns.items()}
        try:
            call_reward(fn, [c], cols)
        except Exception:
            return i
    return None
