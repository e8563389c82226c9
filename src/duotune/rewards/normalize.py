"""Answer text rewritten before math-verify parses it: workarounds for its parse failures, unicode
maths, and number formats read by the gold's shape. Pure string work; imports only the standard
library (math-verify itself runs in `duotune.rewards.verify`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# math-verify 0.9.0 rewrites \mathrm{..} to \text{..} and then drops a trailing \text{..} as a unit,
# so `1 - \frac{1}{\mathrm{e}}` parses as `1 - \frac{1}{` and `2\mathrm{e}` as 2 (the `\mathrm{e}` case
# of huggingface/Math-Verify#14, closed upstream, still so in 0.9.0). Upright constants become plain
# letters first, which math-verify reads as Euler's number, the imaginary unit and pi.
_CONSTANT = re.compile(r"\\(?:mathrm|text|textrm|operatorname|mathit|rm)\s*\{\s*(e|i|\\pi|pi)\s*\}|\{\\rm\s+(e|i)\}")
# `m_{\max }` (a subscript that is an operator name) makes math-verify 0.9.0 parse nothing at all
# (no upstream issue found, nor for the two cases below).
_SUBSCRIPT_OPERATOR = re.compile(r"_\{\s*\\(max|min|sup|inf)\s*\}")
# math-verify treats `i` as the imaginary unit only where it stands alone ("274 i", not "274i"), so
# "1+274i" and "1 + 274 i" parsed differently; a coefficient gets a space.
_COEFFICIENT_I = re.compile(r"(?<=\d)i(?![A-Za-z])")
# "4.5e33": math-verify reads 4.5 * E * 33 (Minerva's golds are written so).
_E_NOTATION = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?)[eE]([+-]?\d+)(?![\w.])")
# "10^33" means 10^{33}; LaTeX would read 10^3 * 3.
_BARE_EXPONENT = re.compile(r"\^\s*(-?\d{2,})")
_UNICODE = {"−": "-", "×": "\\times ", "·": "\\cdot ", "÷": "\\div ", "π": "\\pi ", "√": "\\sqrt",
            "∞": "\\infty ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "°": "^\\circ", "∪": "\\cup ",
            "∩": "\\cap ", "∈": "\\in ", "\u00a0": " "}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))

# A single-number gold: "1000", "10,\!080", "\$32,\!348", "45\%", "90^\circ", "5.4 \text{ cents}".
_GOLD_NOISE = re.compile(r"\\!|\\\$|\$|\\?%|\^\s*\{?\\circ\}?|\\(?:text|mbox|mathrm)\s*\{[^{}]*\}(?:\^\d)?|\s")
_SINGLE_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_TEXT_GOLD = re.compile(r"\\(?:text|textbf|mbox|mathrm)\s*\{([^{}\d\\]*)\}")
_BARE_WORDS = re.compile(r"[A-Za-z][A-Za-z ]{2,}")
# Thousands spacing between digit groups: "1 000", "1\,000", "1~000", thin and narrow spaces.
_GROUP_SPACE = re.compile(r"(?<=\d)(?:\\[,;: ]|~|[ \u00a0\u2009\u202f])(?=\d{3}(?!\d))")
_NUMBER_TOKEN = re.compile(r"(?<![\d.,])\d+(?:[.,]\d+)+(?!\d)")


@dataclass(frozen=True)
class GoldShape:
    """What the gold looks like, which decides ambiguous prediction formats.

    number: the gold is one number (then "1,000" is a thousand, "1,5" and "1000,99" have a decimal
        comma, "1 000" is a thousand); otherwise commas in a prediction separate list items.
    text: the gold's words, lower case, when it is a text answer (`\\text{east}`, `\\text{(C)}`,
        "Evelyn"); a prediction with the same words is equal.
    """

    number: bool = False
    text: str | None = None


def normalize_latex(text: str) -> str:
    """Workarounds applied to golds and predictions alike: upright constants, operator subscripts,
    the imaginary unit after a coefficient, e-notation, bare exponents, unicode maths symbols."""
    text = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], text)
    text = _CONSTANT.sub(lambda m: _constant(m.group(1) or m.group(2)), text)
    text = _SUBSCRIPT_OPERATOR.sub(r"_{\1}", text)
    text = _COEFFICIENT_I.sub(" i", text)
    text = _E_NOTATION.sub(lambda m: f"{m.group(1)}\\times 10^{{{m.group(2)}}}", text)
    return _BARE_EXPONENT.sub(lambda m: f"^{{{m.group(1)}}}", text)


def _constant(name: str) -> str:
    return "\\pi " if name in ("\\pi", "pi") else name


def gold_shape(gold: str) -> GoldShape:
    """The shape of a gold answer text (already reduced to its answer part)."""
    number = bool(_SINGLE_NUMBER.fullmatch(_GOLD_NOISE.sub("", gold.replace("{,}", ","))))
    return GoldShape(number=number, text=_text_words(gold))


def _text_words(gold: str) -> str | None:
    m = _TEXT_GOLD.fullmatch(gold.strip())
    words = m.group(1) if m else (gold.strip() if _BARE_WORDS.fullmatch(gold.strip()) else None)
    return text_key(words) if words is not None and text_key(words) else None


def text_key(text: str) -> str:
    """Words of a text answer compared case-insensitively, without `\\text{}`, brackets or punctuation."""
    inner = re.sub(r"\\(?:text|textbf|mbox|mathrm)\s*\{([^{}]*)\}", r"\1", text)
    return " ".join(re.sub(r"[^\w ]", " ", inner).lower().split())


def normalize_answer(answer: str, shape: GoldShape) -> str:
    """A prediction's answer part, ready for math-verify: `normalize_latex`, then (for a one-number
    gold) number formats: thousands separators (comma, dot groups, space, thin space, `\\,`, `{,}`)
    removed and a decimal comma made a point."""
    answer = normalize_latex(answer)
    if not shape.number:
        return answer
    answer = re.sub(r",\s*\\!\s*", ",", answer).replace("{,}", ",")
    answer = _GROUP_SPACE.sub("", answer)
    return _NUMBER_TOKEN.sub(lambda m: _plain_number(m.group()), answer)


def _plain_number(token: str) -> str:
    """'1,000' -> '1000', '1,000.5' -> '1000.5', '1.234,5' -> '1234.5', '1,5' -> '1.5',
    '1000,99' -> '1000.99', '0,111' -> '0.111'; '1,2,3' (not thousands groups) unchanged."""
    commas, dots = token.count(","), token.count(".")
    if commas and dots:
        decimal = "," if token.rfind(",") > token.rfind(".") else "."
        whole, _, frac = token.rpartition(decimal)
        return whole.replace("," if decimal == "." else ".", "") + "." + frac
    sep = "," if commas else "."
    groups = token.split(sep)
    thousands = 1 <= len(groups[0]) <= 3 and not groups[0].startswith("0") and all(
        len(g) == 3 for g in groups[1:])
    if len(groups) > 2:
        return "".join(groups) if thousands else token
    if sep == ".":
        return token  # one dot is a decimal point
    return "".join(groups) if thousands else groups[0] + "." + groups[1]
