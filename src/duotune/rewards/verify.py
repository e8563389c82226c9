"""math-verify equivalence of one extracted answer with a gold answer; runs inside grading workers.

math-verify's timeouts use `signal.alarm`, so call these only from a process's main thread (the
`GradingPool` workers do). Imports math-verify and sympy; never torch or other duotune subsystems.
"""

from __future__ import annotations

import logging
import re

from math_verify import parse, verify
from sympy import Basic, MatrixBase

from duotune.rewards.extract import answer_tag, extract_answer

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
_gold_cache: dict[tuple[str, int], tuple] = {}


def timeouts_seen() -> int:
    """How many math-verify timeouts this process has hit so far."""
    return _COUNTER.count


def gold_answer(gold: str) -> str:
    """The gold's answer text: its `<answer>`/`\\boxed{}`/`####` part when it has one, else all of it."""
    return extract_answer(gold) or gold.strip()


_MATH_DELIMITER = re.compile(r"(?<!\\)\$")  # an unescaped `$` opens inline maths; `\$` is a dollar sign


def as_latex(answer: str) -> str:
    """Wrap a bare answer in `\\boxed{}` so math-verify's LaTeX extraction reads exactly it
    (an escaped `\\$18.90` is a money amount, not a maths delimiter, so it is wrapped too)."""
    if "\\boxed" in answer or _MATH_DELIMITER.search(answer):
        return answer
    return "\\boxed{" + answer + "}"


def _parsed_gold(gold: str, seconds: int) -> tuple:
    """Gold parsed once per worker; a parse that timed out is not cached (it may succeed later)."""
    key = (gold, seconds)
    if key in _gold_cache:
        return _gold_cache[key]
    before = timeouts_seen()
    parsed = tuple(parse(as_latex(gold_answer(gold)), parsing_timeout=seconds))
    if timeouts_seen() == before:
        if len(_gold_cache) >= _GOLD_CACHE_SIZE:
            _gold_cache.clear()
        _gold_cache[key] = parsed
    return parsed


def verify_answer(answer: str, gold: str, seconds: int) -> float | None:
    """1.0 if `answer` is math-verify-equivalent to `gold`, 0.0 if not, None if the gold holds no
    parseable maths (the caller counts and warns). `seconds` is math-verify's own timeout."""
    parsed_gold = _parsed_gold(gold, seconds)
    if not any(isinstance(g, (Basic, MatrixBase)) for g in parsed_gold):
        return None
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return 0.0
    pred = parse(as_latex(answer), parsing_timeout=seconds)
    return float(verify(list(parsed_gold), pred, timeout_seconds=seconds))


def accuracy_score(answer: str | None, tag: str | None, gold: str, seconds: int) -> float:
    """R_acc of R1-V / OThink-MR1 (SPEC 2): 1 if math-verify judges the completion's extracted
    `answer` equal to the gold, else 1 if the completion's `<answer>` contents (`tag`) equal the
    gold's (the gold itself when it has no tags) as stripped strings, else 0."""
    if answer and verify_answer(answer, gold, seconds) == 1.0:
        return 1.0
    theirs = answer_tag(gold)
    theirs = gold.strip() if theirs is None else theirs
    return float(bool(tag) and tag == theirs)
