"""The verifiable rewards (SPEC 2 and 3): math, format_think_answer, accuracy_format, boxed_format, mcq,
digit, iou; and `math_equal`, the one verifier training and evaluation share.

Imports the rewards' extraction, base and pool modules; math-verify runs only in pool workers.
"""

from __future__ import annotations

import re
from typing import Any

from duotune.errors import ConfigError, DataError
from duotune.rewards.base import PooledReward, Reward, gold_letter
from duotune.rewards.extract import answer_tag, canonical_int, extract_answer, last_boxed, normalize_mcq, parse_box
from duotune.rewards.final import check_mode, final_answer
from duotune.rewards.pool import default_pool

_THINK_ANSWER_GAP = re.compile(r"</think>\s*<answer>")


def math_equal(pred_text: str, gold: str, *, mode: str = "strict") -> bool:
    """True iff the answer `pred_text` states is math-verify-equivalent to `gold`: the one verifier
    of training and evaluation. `mode` is the extraction mode (see `final_answer`): "strict" (the
    default, as training rewards: the final `\\boxed{}` or `<answer>`) or "lenient" (as evaluation
    reports: also "the final answer is ...", inline maths, the last number). Both share one
    comparison (`duotune.rewards.verify.verify_answer`). Grades in the process-wide `GradingPool`,
    so a pathological answer times out (False) instead of hanging; the gold is parsed once per
    worker and cached."""
    answer = final_answer(pred_text or "", mode)
    if answer is None or gold is None or not str(gold).strip():
        return False
    pool = default_pool()
    out = pool.map("duotune.rewards.verify:verify_answer", [(answer, str(gold), pool.inner_seconds)])[0]
    if out.error is not None:
        raise RuntimeError(f"math_equal failed on gold {gold!r}: {out.error}")
    return out.value == 1.0


class MathReward(PooledReward):
    """math-verify equivalence of the stated answer with the gold (1/0; None: gold has no maths).

    mode: extraction mode, "strict" (final box or <answer>; training) or "lenient" (see final_answer).
    """

    name = "math"

    def __init__(self, mode: str = "strict", pool: Any = None):
        super().__init__(pool)
        self.mode = check_mode(mode)

    def score(self, completions: list[str], columns: dict[str, Any]) -> list[float | None]:
        answers = [final_answer(c, self.mode) for c in completions]
        idx = list(range(len(completions)))
        graded = self.verify_many(answers, list(columns["answer"]), idx)
        return [graded[i] for i in idx]


def think_answer_format(text: str) -> float:
    """1.0 iff `text` fully matches `<think>.*?</think>\\s*<answer>.*?</answer>` (DOTALL).

    Checked in linear time with the same semantics as the regex: the text starts with `<think>`,
    ends with `</answer>`, and `</think>` whitespace `<answer>` occurs between them. As with the
    R1-V regex, repeated or nested tags inside the two parts still match.
    """
    head, tail = "<think>", "</answer>"
    if not (text.startswith(head) and text.endswith(tail)):
        return 0.0
    return float(_THINK_ANSWER_GAP.search(text, len(head), len(text) - len(tail)) is not None)


class FormatThinkAnswer(Reward):
    """1 if the whole completion is `<think>...</think>` whitespace `<answer>...</answer>`, else 0."""

    name = "format_think_answer"
    kind = "format"
    requires = ()

    def score(self, completions: list[str], columns: dict[str, Any]) -> list[float | None]:
        return [think_answer_format(c) for c in completions]


class AccuracyFormat(PooledReward):
    """OThink-MR1 / R1-V reward R_acc + alpha * R_format (SPEC 2), alpha = 1: range [0, 1 + alpha].

    mode: extraction mode of R_acc's answer, "strict" (final box or <answer>) or "lenient".
    """

    name = "accuracy_format"
    kind = "accuracy_format"

    def __init__(self, alpha: float = 1.0, mode: str = "strict", pool: Any = None):
        super().__init__(pool)
        self.alpha = float(alpha)
        self.mode = check_mode(mode)

    def score(self, completions: list[str], columns: dict[str, Any]) -> list[float | None]:
        golds = list(columns["answer"])
        seconds = self.grading_pool().inner_seconds
        jobs = [(final_answer(c, self.mode), answer_tag(c), "" if g is None else str(g), seconds)
                for c, g in zip(completions, golds)]
        idx = list(range(len(completions)))
        acc = self.run_pool("duotune.rewards.verify:accuracy_score", jobs, idx, group_key=lambda job: job[2])
        self.parts = {"accuracy": list(acc)}  # "solved" reads this part, never the format bonus
        return [a + self.alpha * think_answer_format(c) for a, c in zip(acc, completions)]


class BoxedFormat(Reward):
    """1 if the completion has a balanced, non-empty `\\boxed{...}` (the boxed prompt style), else 0."""

    name = "boxed_format"
    kind = "format"
    requires = ()

    def score(self, completions: list[str], columns: dict[str, Any]) -> list[float | None]:
        return [float(bool(last_boxed(c))) for c in completions]


class McqReward(Reward):
    """1 if the chosen option letter (see `normalize_mcq`) equals the gold letter, else 0."""

    name = "mcq"

    def score(self, completions: list[str], columns: dict[str, Any]) -> list[float | None]:
        return self.per_gold(completions, columns,
                             lambda i, c, g: float(normalize_mcq(c) == gold_letter(self.name, g, i)))


class DigitReward(Reward):
    """1 if the extracted answer is the integer gold ('1,000' = 1000, '7.0' = 7), else 0."""

    name = "digit"

    def __init__(self, allow_last_number: bool = False):
        super().__init__()
        self.allow_last_number = allow_last_number

    def score(self, completions: list[str], columns: dict[str, Any]) -> list[float | None]:
        return self.per_gold(completions, columns, self._one)

    def _one(self, i: int, c: str, g: Any) -> float:
        gold = canonical_int(str(g))
        if gold is None:
            raise DataError(f"reward 'digit': gold {g!r} is not an integer; fix the 'answer' "
                            "column or route the sample to 'math'", row=i, field="answer")
        return float(canonical_int(extract_answer(c, allow_last_number=self.allow_last_number)) == gold)


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (0 when the union is empty)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class IouReward(Reward):
    """IoU of one predicted box [x1, y1, x2, y2] with the gold box (continuous in [0, 1]).

    frame: "normalized" means every coordinate is a fraction of the image side in [0, 1];
    "pixel" means absolute pixels of the (resized) image the model saw. Gold and prediction must use
    the same frame: a normalized gold outside [0, 1] raises (a frame mix-up), and a prediction
    outside [0, 1] under "normalized" scores 0 and is counted (`frame_mismatch`). A malformed box
    (not exactly four numbers, x2 < x1 or y2 < y1) scores 0.
    """

    name = "iou"

    def __init__(self, frame: str = "normalized"):
        super().__init__()
        if frame not in ("normalized", "pixel"):
            raise ConfigError(f"iou frame {frame!r} is not valid; use 'normalized' (0-1) or 'pixel'")
        self.frame = frame

    def _in_frame(self, box: tuple[float, ...]) -> bool:
        return all(v >= 0 for v in box) and (self.frame == "pixel" or all(v <= 1.0 for v in box))

    def score(self, completions: list[str], columns: dict[str, Any]) -> list[float | None]:
        return self.per_gold(completions, columns, self._one)

    def _one(self, i: int, c: str, g: Any) -> float:
        gold = parse_box(g)
        if gold is None or not self._in_frame(gold):
            raise DataError(f"reward 'iou': gold box {g!r} is not four {self.frame} coordinates "
                            "[x1, y1, x2, y2]; fix the 'answer' column or the reward's frame "
                            "parameter", row=i, field="answer")
        pred = parse_box(extract_answer(c) or "")
        if pred is not None and not self._in_frame(pred):
            self.stats["frame_mismatch"] = self.stats.get("frame_mismatch", 0) + 1
            pred = None
        return 0.0 if pred is None else box_iou(pred, gold)
