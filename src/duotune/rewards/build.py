"""The `reward` registry and `get_reward(name, **params)`: built-in names, a user's own function by
import path (`pkg.mod:fn` or `pkg.mod.fn`; the current folder is importable), and verl `compute_score`
functions (`verl:pkg.mod.fn`).

Imports `duotune.registry`/`duotune.errors` and the reward classes; never torch or math-verify.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from duotune.errors import ConfigError, UnknownNameError
from duotune.registry import Registry, signature_params
from duotune.rewards.functions import (
    AccuracyFormat,
    BoxedFormat,
    DigitReward,
    FormatThinkAnswer,
    IouReward,
    MathReward,
    McqReward,
)
from duotune.rewards.length import OverlongPenalty
from duotune.rewards.mixed import MixedReward
from duotune.rewards.open_rm import OpenRM

RewardFn = Callable[..., list]
REWARDS: Registry[Callable[..., RewardFn]] = Registry("reward")

for _cls in (MathReward, FormatThinkAnswer, AccuracyFormat, BoxedFormat, McqReward, DigitReward,
             IouReward, OpenRM, MixedReward, OverlongPenalty):
    _doc = (inspect.getdoc(_cls) or "").splitlines()[0]
    _params = signature_params(_cls)
    REWARDS.register(_cls.name, _cls, help=f"{_doc} [{_params}]" if _params else _doc)


def describe_rewards() -> list[tuple[str, str, str]]:
    """(name, parameters with defaults, one-line doc) for every registered reward (`duotune list`)."""
    return [(n, signature_params(REWARDS.get(n)), (inspect.getdoc(REWARDS.get(n)) or "").splitlines()[0])
            for n in REWARDS.names()]


def _import(path: str) -> Any:
    """The object at 'pkg.mod:attr' or 'pkg.mod.attr'; ConfigError naming the path otherwise."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise ConfigError(f"reward {path!r} is neither a registered name nor an import path like "
                          f"'my_pkg.rewards:my_reward'; registered: {', '.join(REWARDS.names())}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:  # `my_rewards.py` beside the config, as `python -m` allows
        sys.path.append(cwd)
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"reward {path!r} could not be imported ({exc}); check the module is in the "
                          "current folder or on PYTHONPATH and the function name is right") from None
    if not callable(obj):
        raise ConfigError(f"reward {path!r} is not callable; point it at a function "
                          "(completions, **columns) -> list[float | None]")
    return obj


def from_verl_compute_score(fn: Callable[..., Any], *, data_source: str = "duotune") -> RewardFn:
    """Adapt verl's `compute_score(data_source, solution_str, ground_truth, extra_info)` to a reward.

    Reads the `answer` column as ground_truth, and `data_source` / `extra_info` columns when present
    (else `data_source` and None). A dict result (verl's extended form) contributes its "score".
    """
    def reward(completions: list[str], **columns: Any) -> list[float | None]:
        from duotune.rewards.base import check_columns

        check_columns(name, ("answer",), completions, columns)
        n = len(completions)
        sources = columns.get("data_source", [data_source] * n)
        extras = columns.get("extra_info", [None] * n)
        out: list[float | None] = []
        for c, src, gt, extra in zip(completions, sources, columns["answer"], extras):
            value = fn(src, c, gt, extra)
            out.append(None if value is None else float(value["score"] if isinstance(value, dict) else value))
        return out

    name = f"verl:{getattr(fn, '__module__', '?')}.{getattr(fn, '__name__', 'compute_score')}"
    reward.__name__ = name
    return reward


def get_reward(name: str | Callable[..., Any], **params: Any) -> RewardFn:
    """Build a reward: a registered name (a registered class gets params as constructor arguments,
    see `duotune list rewards`; a registered function gets them bound as keyword arguments),
    'verl:pkg.mod.compute_score' (verl adapter), or 'pkg.mod:fn' / 'pkg.mod.fn' (a function
    `(completions, **columns) -> list[float | None]`; params are bound as keyword arguments).
    A callable is returned as is (params bound the same way)."""
    if callable(name):
        return functools.partial(name, **params) if params else name
    if name in REWARDS:
        factory = REWARDS.get(name)
        if not isinstance(factory, type):  # a reward function registered directly (TRL style)
            return functools.partial(factory, **params) if params else factory
        try:
            inspect.signature(factory).bind(**params)
        except TypeError:
            raise ConfigError(f"reward {name!r} got parameters {sorted(params)}; it takes: "
                              f"{signature_params(factory) or '(none)'}") from None
        return factory(**params)
    if name.startswith("verl:"):
        return from_verl_compute_score(_import(name[len("verl:"):]), **params)
    if ":" not in name and "." not in name:
        raise UnknownNameError("reward", name, REWARDS.names())
    fn = _import(name)
    return functools.partial(fn, **params) if params else fn


def validate_reward_name(name: str) -> str:
    """Return `name` when it is a registered reward or shaped like an import path (config validation).

    An import path is only checked for its shape here: importing runs the module's code, which
    happens when training starts (`get_reward`), never while a config is merely loaded."""
    if name in REWARDS:
        return name
    path = name[len("verl:"):] if name.startswith("verl:") else name
    if ":" not in path and "." not in path:
        raise UnknownNameError("reward", name, REWARDS.names())
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    if not (all(part.isidentifier() for part in module.split(".")) and attr.isidentifier()):
        raise ConfigError(f"reward {name!r} is neither a registered name nor an import path like "
                          f"'my_pkg.rewards:my_reward'; registered: {', '.join(REWARDS.names())}")
    return name
