"""math-verify equivalence of one extracted answer (its parts) with a gold answer, after the text
normalisation of `duotune.rewards.normalize`; runs inside grading workers.

math-verify's timeouts use `signal.alarm`, so call these only from a process's main thread (the
`GradingPool` workers do). Imports math-verify and sympy; never torch or other duotune subsystems.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from math_verify import parse, verify
from sympy import Basic, Interval, MatrixBase, Tuple

from duotune.rewards.extract import answer_tag, extract_answer
from duotune.rewards.final import answer_text, final_answer
from duotune.rewards.normalize import GoldShape, gold_shape, normalize_answer, normalize_latex, text_key

# Answers longer than this are not final answers (a 100,000-character "answer" is a degenerate
# completion); they score 0 without reaching the parser.
MAX_ANSWER_CHARS = 2000
_GOLD_CACHE_SIZE = 8192


class _TimeoutCounter(logging.Handler):
    """Counts math-verify's own timeout warnings ("Timeout during parsing/comparison")."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Timeout"):
            self.count += 1


_COUNTER = _TimeoutCounter()
logging.getLogger("math_verify").addHandler(_COUNTER)
_gold_cache: dict[tuple[str, int], _Gold] = {}


def timeouts_seen() -> int:
    """How many math-verify timeouts this process has hit so far."""
    return _COUNTER.count


def gold_answer(gold: str) -> str:
    """The gold's answer text: its `<answer>` or final `\\boxed{}` group (several boxes joined by
    ', ', so `$\\boxed{1}\\boxed{2}$` is "1, 2"), else its `####`/"answer is" part, else all of it."""
    return answer_text(final_answer(gold, "strict")) or extract_answer(gold) or gold.strip()


_MATH_DELIMITER = re.compile(r"(?<!\\)\$")  # an unescaped `$` opens inline maths; `\$` is a dollar sign


def as_latex(answer: str) -> str:
    """Wrap a bare answer in `\\boxed{}` so math-verify's LaTeX extraction reads exactly it
    (an escaped `\\$18.90` is a money amount, not a maths delimiter, so it is wrapped too)."""
    if "\\boxed" in answer or _MATH_DELIMITER.search(answer):
        return answer
    return "\\boxed{" + answer + "}"


@dataclass(frozen=True)
class _Gold:
    """A parsed gold: math-verify's values, its shape, and how several predicted parts are joined:
    "({})" (a tuple, ordered), "{}" (a set or list), None (never: the gold is an interval)."""

    parsed: tuple
    shape: GoldShape
    join: str | None

    @property
    def has_maths(self) -> bool:
        return any(isinstance(g, (Basic, MatrixBase)) for g in self.parsed)


def _parsed_gold(gold: str, seconds: int) -> _Gold:
    """Gold parsed once per worker; a parse that timed out is not cached (it may succeed later)."""
    key = (gold, seconds)
    if key in _gold_cache:
        return _gold_cache[key]
    before = timeouts_seen()
    text = gold_answer(gold)
    parsed = tuple(parse(as_latex(normalize_latex(text)), parsing_timeout=seconds))
    value = _Gold(parsed, gold_shape(text), _join_style(parsed))
    if timeouts_seen() == before:
        if len(_gold_cache) >= _GOLD_CACHE_SIZE:
            _gold_cache.clear()
        _gold_cache[key] = value
    return value


def _join_style(parsed: tuple) -> str | None:
    """How several predicted parts form one answer for this gold: a tuple of two or more keeps
    their order; an interval is never several separate parts (math-verify would equal "(1, 2)" and
    the set "1, 2"); anything else makes them a set."""
    first = next((g for g in parsed if isinstance(g, (Basic, MatrixBase))), None)
    if isinstance(first, Tuple) and len(first) > 1:
        return "({})"
    return None if isinstance(first, Interval) else "{}"


def verify_answer(answer: str | Sequence[str], gold: str, seconds: int) -> float | None:
    """1.0 if the predicted answer is math-verify-equivalent to `gold`, 0.0 if not, None if the gold
    holds no parseable maths and is no text answer (the caller counts and warns).

    `answer` is one part or the parts `final_answer` extracted: several parts are compared as one
    answer, a tuple "(a, b)" when the gold is a tuple, else a set "a, b" (so "\\boxed{2} and \\boxed{3}"
    never equals the gold 3). Each part is normalised for the gold's shape first (`normalize_answer`).
    A text gold also equals a prediction with the same words. `seconds` is math-verify's own timeout."""
    g = _parsed_gold(gold, seconds)
    if not g.has_maths and g.shape.text is None:
        return None
    parts = (answer,) if isinstance(answer, str) else tuple(answer)
    if not parts or not all(parts) or sum(map(len, parts)) > MAX_ANSWER_CHARS:
        return 0.0
    parts = tuple(normalize_answer(p, g.shape) for p in parts)
    if len(parts) > 1 and g.join is None:
        return 0.0
    candidate = parts[0] if len(parts) == 1 else g.join.format(", ".join(parts))
    if g.shape.text is not None and text_key(candidate) == g.shape.text:
        return 1.0
    return float(g.has_maths and _equal(g.parsed, candidate, seconds))


def _equal(parsed_gold: tuple, candidate: str, seconds: int) -> bool:
    pred = parse(as_latex(candidate), parsing_timeout=seconds)
    # allow_set_relation_comp: "x \\geq 5" equals the gold "[5, \\infty)" (math-verify compares a
    # relation with a set only when the prediction is the set otherwise).
    return verify(list(parsed_gold), pred, timeout_seconds=seconds, allow_set_relation_comp=True)


def accuracy_score(answer: str | Sequence[str] | None, tag: str | None, gold: str, seconds: int) -> float:
    """R_acc of R1-V / OThink-MR1 (SPEC 2): 1 if math-verify judges the completion's extracted
    `answer` (one part or `final_answer`'s parts) equal to the gold, else 1 if the completion's
    `<answer>` contents (`tag`) equal the gold's (the gold itself when it has no tags) as stripped
    strings, else 0."""
    if answer and verify_answer(answer, gold, seconds) == 1.0:
        return 1.0
    theirs = answer_tag(gold)
    theirs = gold.strip() if theirs is None else theirs
    return float(bool(tag) and tag == theirs)
