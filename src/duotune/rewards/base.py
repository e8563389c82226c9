"""Shared pieces of the built-in rewards: `RewardError`, the `Reward` base (TRL calling convention,
column checks, per-call stats) and the pooled math-verify grading every math reward goes through.

Imports `duotune.errors` and the rewards' extraction/pool modules; never torch or math-verify.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from duotune.errors import DataError, DuotuneError
from duotune.rewards.pool import GradingPool, default_pool

log = logging.getLogger(__name__)
_warned_golds: set[str] = set()


def _gold_of(job: tuple) -> str:
    """Grouping key of a verify job (answer, gold, seconds): one worker parses each gold once."""
    return job[1]


class RewardError(DuotuneError, RuntimeError):
    """A reward function failed or got unusable input; names the reward and, when known, the sample."""

    def __init__(self, reward: str, message: str, *, index: int | None = None):
        self.reward, self.index = reward, index
        where = f" on sample {index}" if index is not None else ""
        super().__init__(f"reward {reward!r} failed{where}: {message}")


def check_columns(reward: str, required: Sequence[str], completions: Sequence[str],
                  columns: dict[str, Any]) -> None:
    """Raise RewardError naming the missing column (and the reward needing it) or a misaligned one."""
    for col in required:
        if col not in columns:
            have = ", ".join(sorted(columns)) or "(none)"
            raise RewardError(reward, f"needs column {col!r}, which the data does not have (columns: "
                                      f"{have}); add {col!r} to every row or drop this reward")
        value = columns[col]
        if isinstance(value, (list, tuple)) and len(value) != len(completions):
            raise RewardError(reward, f"column {col!r} has {len(value)} values for "
                                      f"{len(completions)} completions; give one per completion")


class Reward(ABC):
    """Base of the built-in rewards: `reward(completions, **columns) -> list[float | None]`.

    Subclasses set `name`, `requires` (columns they read) and implement `score`. After each call
    `stats` holds counters for the metrics (`timeouts`, and per reward extras such as
    `gold_unparseable` or `by_type`). `kind` says what the value measures: "accuracy" (the answer
    is right; read for the solve rate), "format" (never read as solved) or "accuracy_format" (a sum
    whose accuracy part the reward leaves in `parts["accuracy"]` after each call).
    """

    name = "reward"
    kind = "accuracy"
    requires: tuple[str, ...] = ("answer",)

    def __init__(self) -> None:
        self.__name__ = self.name  # TRL logs reward functions by __name__
        self.stats: dict[str, Any] = {}
        self.parts: dict[str, list[float | None]] = {}

    def __call__(self, completions: Sequence[str], **columns: Any) -> list[float | None]:
        completions = list(completions)
        check_columns(self.name, self.requires, completions, columns)
        self.stats = {"timeouts": 0}
        return self.score(completions, columns)

    @abstractmethod
    def score(self, completions: list[str], columns: dict[str, Any]) -> list[float | None]:
        """One value per completion; `columns` are already checked to hold `requires`."""

    def per_gold(self, completions: list[str], columns: dict[str, Any],
                 one: Callable[[int, str, Any], float]) -> list[float | None]:
        """`one(index, completion, gold)` for each sample; a None gold is not applicable (None)."""
        return [None if g is None else one(i, c, g)
                for i, (c, g) in enumerate(zip(completions, columns["answer"]))]

    def __repr__(self) -> str:
        return f"<reward {self.name}>"


class PooledReward(Reward):
    """A reward that grades with math-verify in a `GradingPool` (the process-wide one by default)."""

    def __init__(self, pool: GradingPool | None = None) -> None:
        super().__init__()
        self.pool = pool

    def grading_pool(self) -> GradingPool:
        return self.pool if self.pool is not None else default_pool()

    def run_pool(self, fn: str, jobs: list[tuple], where: list[int], *,
                 group_key: Callable[[tuple], Hashable] | None = None) -> list[Any]:
        """Values of `fn(*job)` in the pool; a timed-out job gives 0.0 and is counted; an error raises
        RewardError naming the sample index from `where`. `group_key`: see `GradingPool.map`."""
        values: list[Any] = []
        for i, out in zip(where, self.grading_pool().map(fn, jobs, group_key=group_key)):
            if out.error is not None:
                raise RewardError(self.name, out.error, index=i)
            if out.timed_out:
                self.stats["timeouts"] += 1
            values.append(0.0 if out.timed_out else out.value)
        return values

    def verify_many(self, answers: list[str | tuple[str, ...] | None], golds: list[Any],
                    indices: list[int]) -> dict[int, float | None]:
        """math-verify `answers[k]` (a string or `final_answer`'s parts) against `golds[k]` for sample
        `indices[k]`: a missing answer
        scores 0; an empty gold gives None; a gold without parseable maths gives None and a counted
        warning (`gold_unparseable`)."""
        out: dict[int, float | None] = {}
        jobs, where = [], []
        seconds = self.grading_pool().inner_seconds
        for ans, gold, i in zip(answers, golds, indices):
            if gold is None or str(gold).strip() == "":
                out[i] = None
            elif ans is None:
                out[i] = 0.0
            else:
                jobs.append((ans, str(gold), seconds))
                where.append(i)
        values = self.run_pool("duotune.rewards.verify:verify_answer", jobs, where, group_key=_gold_of)
        for (_, gold, _), i, value in zip(jobs, where, values):
            if value is None:
                self._warn_gold(gold)
            out[i] = value
        return out

    def _warn_gold(self, gold: Any) -> None:
        self.stats["gold_unparseable"] = self.stats.get("gold_unparseable", 0) + 1
        if str(gold) not in _warned_golds:
            _warned_golds.add(str(gold))
            log.warning("reward %r: gold answer %r has no maths math-verify can parse; the sample "
                        "scores None (not applicable). Fix the 'answer' column or use another reward",
                        self.name, str(gold)[:200])


def gold_letter(reward: str, gold: Any, index: int) -> str:
    """The option letter of an MCQ gold ('A', '(b)', 'C)'), or DataError naming the sample."""
    from duotune.rewards.extract import normalize_mcq

    letter = normalize_mcq(str(gold)) if gold is not None else None
    if letter is None:
        raise DataError(f"reward {reward!r}: gold {gold!r} is not an option letter A-J; fix the "
                        "'answer' column or route the sample to another reward", row=index, field="answer")
    return letter
