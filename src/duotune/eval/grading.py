"""Grading of eval samples with the training verifier: math items by `duotune.rewards.math_equal` on the
completion, MCQ items by the option letter `duotune.rewards.normalize_mcq` reads from it.

Imports `duotune.rewards` lazily (it may pull math-verify); no torch, no models.
"""

from __future__ import annotations

from collections.abc import Sequence


def grade(kind: str, completions: Sequence[str], gold: str) -> list[tuple[str | None, float]]:
    """(extracted answer, score 1.0/0.0) per completion; an empty or garbled completion scores 0."""
    from duotune.rewards import extract_answer, math_equal, normalize_mcq

    out: list[tuple[str | None, float]] = []
    for text in completions:
        if kind == "mcq":
            letter = normalize_mcq(text)
            out.append((letter, float(letter is not None and letter == gold)))
        else:
            out.append((extract_answer(text), float(bool(text.strip()) and math_equal(text, gold))))
    return out
