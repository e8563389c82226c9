"""Grading of eval samples with the training rewards (`duotune.rewards.get_reward("math" | "mcq")`, i.e.
the verifier behind `math_equal`), batched through the rewards' grading pool (timeouts per item).

Imports `duotune.rewards` lazily (its pool starts math-verify workers); no torch, no models.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any


def grade(kind: str, completions: Sequence[str],
          golds: Sequence[str]) -> list[tuple[str | None, float | None]]:
    """(extracted answer, score) per completion against its gold, with the reward named `kind`.

    Scores are 1.0 or 0.0; an empty or garbled completion extracts nothing and scores 0.0. None means
    the reward cannot grade the gold (math-verify parses no maths in it; the reward logs a warning):
    the harness counts such samples as wrong and reports how many there were.
    """
    from duotune.rewards import extract_answer, normalize_mcq

    if not completions:
        return []
    scores = _reward(kind)(list(completions), answer=list(golds))
    read = normalize_mcq if kind == "mcq" else extract_answer
    return [(read(text), None if score is None else float(score)) for text, score in zip(completions, scores)]


@cache
def _reward(kind: str) -> Any:
    """One reward object per kind for the process (they are stateless apart from per-call stats)."""
    from duotune.rewards import get_reward

    return get_reward(kind)
