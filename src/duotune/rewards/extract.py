"""Answer extraction from completions: the documented precedence shared by every reward and the eval.

Pure string work in linear time (completions may be 100,000 characters or adversarial); imports only
the standard library, never math-verify, torch or other duotune modules.
"""

from __future__ import annotations

import re
import unicodedata

_BOX_MARKERS = ("\\boxed{", "\\fbox{")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*", re.IGNORECASE)
_GSM8K = re.compile(r"####\s*([^\n]*)")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")
# Option letters A-J (MMLU-Pro has ten options).
_LETTER_ALONE = re.compile(r"^\(?([A-Ja-j])\)?[.):]?$")
_LETTER_LEADING = re.compile(r"^\(?([A-Ja-j])[).:]\s")
_LETTER_AFTER_WORD = re.compile(
    r"(?:answer|option|choice)\s*(?:is)?\s*[:\uff1a]?\s*(?:\*\*)?\s*\(?([A-Ja-j])\)?(?![A-Za-z])",
    re.IGNORECASE)
_WRAPPERS = re.compile(r"^(?:\\text\{|\\mathrm\{|\\textbf\{)(.*)\}$", re.DOTALL)


def answer_tag(text: str) -> str | None:
    """Contents of the last complete `<answer>...</answer>` (stripped), or None when there is none."""
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return text[start + len("<answer>"):end].strip()


def last_boxed(text: str) -> str | None:
    """Contents of the last `\\boxed{...}` / `\\fbox{...}` whose braces balance (nested braces kept)."""
    spans = box_spans(text, top_level=False)
    return text[spans[-1][1]:spans[-1][2]].strip() if spans else None


def box_spans(text: str, *, top_level: bool = True) -> list[tuple[int, int, int]]:
    """(marker start, content start, content end) of every balanced `\\boxed{}` / `\\fbox{}`, in
    order; with `top_level`, boxes inside another box are left out. One pass pairs every brace from
    the first marker on, so unbalanced or repeated markers stay linear."""
    first = min((i for i in (text.find(m) for m in _BOX_MARKERS) if i >= 0), default=-1)
    if first < 0:
        return []
    match: dict[int, int] = {}
    stack: list[int] = []
    for m in re.finditer(r"[{}]", text[first:]):
        pos = first + m.start()
        if m.group() == "{":
            stack.append(pos)
        elif stack:
            match[stack.pop()] = pos
    starts = sorted((i, i + len(mk) - 1) for mk in _BOX_MARKERS for i in _find_all(text, mk))
    spans: list[tuple[int, int, int]] = []
    for marker, brace in starts:
        if brace in match and not (top_level and spans and marker < spans[-1][2]):
            spans.append((marker, brace + 1, match[brace]))
    return spans


def _find_all(text: str, sub: str) -> list[int]:
    out, i = [], text.find(sub)
    while i >= 0:
        out.append(i)
        i = text.find(sub, i + 1)
    return out


def _gsm8k(text: str) -> str | None:
    idx = text.rfind("####")
    if idx < 0:
        return None
    m = _GSM8K.match(text, idx)
    value = m.group(1).strip() if m else ""
    return value or None


def _answer_is(text: str) -> str | None:
    """X from the last 'the answer is X' up to the end of its sentence or line."""
    lowered = text.lower()
    idx = lowered.rfind("answer is")
    if idx < 0:
        return None
    m = _ANSWER_IS.match(text, idx)
    tail = text[m.end():] if m else ""
    line = tail.split("\n", 1)[0]
    # A sentence ends at '. ' or a final '.', not at a decimal point.
    cut = re.search(r"\.(?:\s|$)", line)
    value = (line[:cut.start()] if cut else line).strip().strip("*").strip()
    if value.startswith("$") and value.endswith("$") and len(value) > 1:
        value = value.strip("$").strip()
    return value or None


def last_number(text: str) -> str | None:
    """The last number in the text ('1,000', '-2.5', '3/4'), or None."""
    found = None
    for found in _NUMBER.finditer(text):  # noqa: B007 - keep the last match
        pass
    return found.group() if found else None


def extract_answer(text: str, *, allow_last_number: bool = False) -> str | None:
    """The final answer in `text`, by this precedence (first that yields a non-empty value wins):

    1. the last `<answer>...</answer>`;  2. the last balanced `\\boxed{...}` or `\\fbox{...}`;
    3. GSM8K `#### N`;  4. "the answer is X" (to the end of the sentence);
    5. the last number, only when `allow_last_number` is True.
    Returns the stripped answer text, or None when nothing applies (the reward then scores 0).
    """
    if not text:
        return None
    for step in (answer_tag, last_boxed, _gsm8k, _answer_is):
        value = step(text)
        if value:
            return value
    return last_number(text) if allow_last_number else None


def unwrap(answer: str) -> str:
    """Strip `$...$`, `\\boxed{}`, `\\text{}` and markdown bold around an extracted answer."""
    value = answer.strip()
    for _ in range(4):  # wrappers nest at most a few levels in practice
        before = value
        value = value.strip().strip("*").strip()
        if len(value) > 1 and value[0] == "$" and value[-1] == "$":
            value = value.strip("$")
        boxed = last_boxed(value) if value.startswith(_BOX_MARKERS) else None
        if boxed is not None and value.endswith("}"):
            value = boxed
        m = _WRAPPERS.match(value)
        if m:
            value = m.group(1)
        if value == before:
            break
    return value.strip()


def normalize_mcq(text: str) -> str | None:
    """The option letter (A-J, upper case) a completion chose, or None.

    Reads the extracted answer when there is one, else the whole text. Accepted forms: "A", "A)",
    "(a)", "a.", "A: ...", "A) 42", "**A**", "\\boxed{A}", "Answer: A", "ANSWER: A", "the answer is (B)",
    "option C". Free prose without such a form gives None (no guessing from stray capitals).
    """
    if not text:
        return None
    # An explicit answer (tag, box, "the answer is") is trusted alone: prose elsewhere is ignored.
    source = extract_answer(text) or text
    value = unwrap(source)
    for pattern in (_LETTER_ALONE, _LETTER_LEADING):
        m = pattern.match(value)
        if m:
            return m.group(1).upper()
    found = None
    for found in _LETTER_AFTER_WORD.finditer(source):  # noqa: B007 - keep the last match
        pass
    return found.group(1).upper() if found else None


def canonical_int(answer: str | None) -> str | None:
    """An integer answer ('12', '1,000', '$7$', '3.0', '+007') in canonical decimal form ('-12', '0'),
    or None when it is not one. Kept as text, so integers of any length compare (Python's int() stops
    at 4,300 digits) in linear time."""
    if answer is None:
        return None
    value = unwrap(answer).replace(",", "").rstrip(".").strip()
    m = re.fullmatch(r"([+-]?)(\d+)(?:\.0+)?", value)
    if not m:
        return None
    # Any decimal digits count, as for int(): fullwidth '１２' and Arabic-Indic '١٢' are 12.
    digits = "".join(c if c.isascii() else str(unicodedata.decimal(c)) for c in m.group(2)).lstrip("0") or "0"
    return digits if m.group(1) != "-" or digits == "0" else "-" + digits


def parse_box(value: object) -> tuple[float, float, float, float] | None:
    """A box [x1, y1, x2, y2] from a list or text holding exactly four numbers, else None."""
    if isinstance(value, (list, tuple)):
        nums = list(value)
    elif isinstance(value, str):
        nums = re.findall(r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?", value)
    else:
        return None
    if len(nums) != 4:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in nums)
    except (TypeError, ValueError):
        return None
    if x2 < x1 or y2 < y1:
        return None
    return x1, y1, x2, y2
