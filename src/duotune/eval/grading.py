"""Grading of eval samples with the training rewards (`duotune.rewards.get_reward("math" | "mcq")`, i.e.
the verifier behind `math_equal`), batched through the rewards' grading pool (timeouts per item).

Imports `duotune.rewards` lazily (its pool starts math-verify workers); no torch, no models.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any


def grade(kind: str, completions: Sequence[str], golds: Sequence[str],
          mode: str = "lenient") -> list[tuple[str | None, float | None]]:
    """(extracted answer, score) per completion against its gold, with the reward named `kind`.

    mode: the math extraction mode ("strict" | "lenient", see `duotune.rewards.final_answer`); MCQ
    reads the option letter whatever the mode. The extracted answer is what the mode read (several
    parts joined by ', '), None when it read nothing. Scores are 1.0 or 0.0; an empty or garbled
    completion extracts nothing and scores 0.0. None means the reward cannot grade the gold
    (math-verify parses no maths in it; the reward logs a warning): the harness counts such samples
    as wrong and reports how many there were.
    """
    from duotune.rewards import answer_text, final_answer, normalize_mcq

    if not completions:
        return []
    math_mode = "strict" if kind == "mcq" else mode
    scores = _reward(kind, math_mode)(list(completions), answer=list(golds))
    if kind == "mcq":
        extracted = [normalize_mcq(text) for text in completions]
    else:
        extracted = [answer_text(final_answer(text, math_mode)) for text in completions]
    return [(e, None if score is None else float(score)) for e, score in zip(extracted, scores)]


@cache
def _reward(kind: str, mode: str) -> Any:
    """One reward object per kind and mode for the process (stateless apart from per-call stats)."""
    from duotune.rewards import get_reward

    return get_reward(kind) if kind == "mcq" else get_reward(kind, mode=mode)
