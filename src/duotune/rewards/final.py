"""The final answer of a completion in one of two extraction modes, shared by every math-verify reward,
`math_equal` and the eval (docs: `final_answer`). Pure string work in linear time; imports only the
standard library, `duotune.errors` and the rewards' own extraction helpers (never math-verify).
"""

from __future__ import annotations

import re

from duotune.errors import ConfigError
from duotune.rewards.extract import answer_tag, box_spans

EXTRACTION_MODES = ("strict", "lenient")

# Strong markers: a final-answer phrase written after the last box replaces it (in both modes).
_STRONG = re.compile(
    r"final\s+answer(?:\*\*)?\s*(?:is\b|[:：=])|####|最终答案\s*(?:是|为|[:：])?|réponse\s+finale\s*(?:est\b|[:：])?"
    r"|endgültige\s+antwort\s*(?:ist\b|lautet\b|[:：])?|respuesta\s+final\s*(?:es\b|[:：])?", re.IGNORECASE)
# Weak markers are read only when the completion has no box at all ("the answer is correct" after a box).
_WEAK = re.compile(
    r"\banswer(?:\*\*)?\s*(?:is\b|should\s+be\b|[:：=])|答案\s*(?:是|为|[:：])|答えは|réponse\s+est\b"
    r"|antwort\s+(?:ist|lautet)\b|respuesta\s+es\b|resposta\s+é|risposta\s+è|ответ\s*(?:[:：]|равен)",
    re.IGNORECASE)
# Inline maths delimiters; `\$` is a dollar sign and `\\` a LaTeX line break, never a delimiter.
_MATH_TOKEN = re.compile(r"\\\\|\\\$|\$\$|\$|\\\(|\\\)|\\\[|\\\]")
_CLOSER = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}
# Text between two spans that lists them as one answer: "$1$, $2$ and $3$".
_JOINER = re.compile(r"[\s,;、，]*(?:(?:and|or|et|und|y|o|e|и|или|和|或|及)[\s,;]*)?", re.IGNORECASE)
# ... and between two boxes, which may also name what each holds: "x = \boxed{-2} or x = \boxed{2}".
_BOX_JOINER = re.compile(r"[\s,;$、，]*(?:(?:and|or|et|und|y|o|e|и|или|和|或|及)[\s,;$]*)?"
                         r"(?:\\?[A-Za-z]\w*(?:_\{?\w+\}?)?\s*=\s*)?[\s$]*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"。|[.!?](?:\s|$)|\bI hope\b")
_PLAIN_NUMBER = re.compile(
    r"[-+]?(?:\d{1,3}(?:(?:,|[ \u00a0\u2009\u202f])\d{3})+(?!\d)(?:[.,]\d+)?|\d+(?:[.,]\d+)?(?:/\d+)?|\.\d+)"
    r"(?:\s*%)?")
_CURRENCY = re.compile(r"^(?:\\\$|\$|€|£|¥)\s*")
_WORD = re.compile(r"(?<![\\\w])[^\W\d_]{2,}")  # a word (any script), not a LaTeX command
_VALUE_WINDOW = 600  # characters read after a phrase: a final answer is short
_TAIL_CHARS = 20_000  # lenient phrases, spans and numbers are read in the last 20,000 characters
_MAX_PARTS = 32  # a listed answer has a few parts; a longer run of spans is prose (and bounds the work)
_MAX_TEXT_WORDS = 4  # "the answer is not 6; after fixing the sign it is 5" states no text answer


def check_mode(mode: str) -> str:
    """`mode` when it is an extraction mode, else a ConfigError naming the valid ones."""
    if mode not in EXTRACTION_MODES:
        raise ConfigError(f"extraction mode {mode!r} is not valid; use 'strict' (the final \\boxed{{}} or "
                          "<answer>, as in training) or 'lenient' (also 'the final answer is ...', inline "
                          "maths and the last number, as in evaluation reports)")
    return mode


def final_answer(text: str, mode: str = "strict") -> tuple[str, ...] | None:
    """The answer a completion states, as its parts (one part, or several for a multi-part answer).

    strict (training rewards, the papers' protocol): the last `<answer>...</answer>`, else the final
      `\\boxed{}` (or `\\fbox{}`) together with the boxes listed with it ("\\boxed{1} and \\boxed{2}",
      "x = \\boxed{-2} or x = \\boxed{2}"); nothing else counts, except that a final-answer phrase
      written after the last box ("... \\boxed{255} ... The final answer is $10,455$", "#### 18")
      replaces it: that box was not the final answer.
    lenient (evaluation reports, like lighteval's extractive match): the same, then without a box
      the last final-answer phrase ("The final answer is $x$", "#### 18", "Réponse finale : 7"), the
      last "answer is/answer:" phrase (also Chinese, Japanese, French, German, Spanish, Portuguese,
      Italian, Russian), the last inline-maths span ($..$, $$..$$, \\(..\\), \\[..\\], with the spans
      listed with it), then the last plain number ("18", "1 000", "2,5", "12%"); these fallbacks read
      the last 20,000 characters. Like lighteval's, they also read a number out of a completion cut
      off mid-reasoning, which is why training rewards use strict.
    An intermediate box that is not listed with the final one is ignored. The verifier compares
    several parts as one set (or tuple, when the gold is one) and a single part as itself. Returns
    None when the mode finds no answer (the reward then scores 0).
    """
    check_mode(mode)
    if not text:
        return None
    tag = answer_tag(text)
    if tag:
        return _region(tag)
    boxes = _box_group(text)
    if boxes:
        after = _last_phrase(text[boxes[1]:], _STRONG)
        return after[1] if after else boxes[0]
    if mode == "strict":
        return None
    tail = _tail(text)
    for found in (_last_phrase(tail, _STRONG), _last_phrase(tail, _WEAK), _span_group(tail, _math_spans(tail))):
        if found:
            return found[1]
    number = _last_number(tail)
    return (number,) if number else None


def _tail(text: str) -> str:
    """The end of the text the lenient fallbacks read, from a line start: the answer is stated last,
    and a bounded window keeps a 100,000-character completion cheap."""
    if len(text) <= _TAIL_CHARS:
        return text
    tail = text[-_TAIL_CHARS:]
    return tail[tail.find("\n") + 1:]


def answer_text(parts: tuple[str, ...] | None) -> str | None:
    """One string for an extracted answer (records, majority votes): its parts joined by ', '."""
    return ", ".join(parts) if parts else None


def _clean(part: str) -> str:
    """An answer part without stray maths delimiters, markdown bold, quotes or final punctuation
    (`\\boxed{12 $ and $13}` reads "12 and 13": a `$` inside a box only closed and reopened maths)."""
    value = part.strip()
    for _ in range(3):  # wrappers nest at most a few levels
        before = value
        value = re.sub(r"(?<!\\)\$", " ", value).strip().strip("*\"'“”«»`").strip()
        value = re.sub(r"[.,;:。]+$", "", value).strip()
        spans = box_spans(value)
        if len(spans) == 1 and spans[0][0] == 0 and spans[0][2] == len(value) - 1:
            value = value[spans[0][1]:spans[0][2]]
        if value == before:
            break
    return " ".join(value.split())


def _parts(raw: list[str]) -> tuple[str, ...] | None:
    parts = tuple(p for p in (_clean(r) for r in raw) if p)
    return parts or None


def _box_group(text: str) -> tuple[tuple[str, ...], int] | None:
    """(parts, end) of the final box and the boxes listed just before it; None without a non-empty
    balanced box."""
    spans = box_spans(text)
    if not spans:
        return None
    group = [spans[-1]]  # built backwards from the final box
    for prev in reversed(spans[:-1]):
        if len(group) == _MAX_PARTS or not _BOX_JOINER.fullmatch(text[prev[2] + 1:group[-1][0]]):
            break
        group.append(prev)
    parts = _parts([text[start:end] for _, start, end in reversed(group)])
    return (parts, spans[-1][2]) if parts else None


def _math_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, contents) of the inline/display maths spans, found in one pass over delimiters."""
    spans: list[tuple[int, int, str]] = []
    opener: tuple[str, int, int] | None = None
    for m in _MATH_TOKEN.finditer(text):
        token = m.group()
        if opener is None:
            if token in _CLOSER:
                opener = (token, m.start(), m.end())
        elif token == _CLOSER[opener[0]] or (opener[0] == "$" and token == "$$"):
            spans.append((opener[1], m.end(), text[opener[2]:m.start()]))
            opener = None
    return spans


def _span_group(text: str, spans: list[tuple[int, int, str]]) -> tuple[int, tuple[str, ...]] | None:
    """The last span with the spans listed just before it ("$1$, $2$ and $3$")."""
    if not spans:
        return None
    group = [spans[-1]]  # built backwards from the last span
    for prev in reversed(spans[:-1]):
        if len(group) == _MAX_PARTS or not _JOINER.fullmatch(text[prev[1]:group[-1][0]]):
            break
        group.append(prev)
    parts = _parts([contents for _, _, contents in reversed(group)])
    return (group[-1][0], parts) if parts else None


def _last_phrase(text: str, pattern: re.Pattern[str]) -> tuple[int, tuple[str, ...]] | None:
    """(start, parts) of what the last match of `pattern` states; None without a match or a value."""
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - keep the last match
        pass
    if found is None:
        return None
    value = _phrase_value(text[found.end():found.end() + _VALUE_WINDOW])
    return (found.start(), value) if value else None


def _phrase_value(rest: str) -> tuple[str, ...] | None:
    """What a phrase states: its box or maths spans, else its words to the end of the sentence (a
    leading number alone when words follow it: "18 dollars" is 18; None for a whole sentence)."""
    rest = rest.lstrip(" \t\n*:：-—=")
    line = rest if rest.startswith(("$$", "\\[")) else rest.split("\n", 1)[0]
    boxes = _box_group(line)
    if boxes:
        return boxes[0]
    cut = _SENTENCE_END.search(line)
    spans = _math_spans(line)
    if spans and not (cut and cut.start() < spans[0][0]) and not re.search(r"\d", line[:spans[0][0]]):
        group = [spans[0]]
        for nxt in spans[1:]:
            if len(group) == _MAX_PARTS or not _JOINER.fullmatch(line[group[-1][1]:nxt[0]]):
                break
            group.append(nxt)
        return _parts([contents for _, _, contents in group])
    value = _clean(line[:cut.start()] if cut else line)
    words = _WORD.findall(value)
    if words:
        unsigned = _CURRENCY.sub("", value)
        number = _PLAIN_NUMBER.match(unsigned)
        if number and not re.search(r"\d", unsigned[number.end():]):  # "12 or 13" stays whole
            return (number.group().strip(),)
        if len(words) > _MAX_TEXT_WORDS:  # a sentence, not a text answer: read on
            return None
    return (value,) if value else None


def _region(contents: str) -> tuple[str, ...] | None:
    """The parts of an `<answer>` region: its box group when it has one, else all of it."""
    boxes = _box_group(contents)
    return boxes[0] if boxes else _parts([contents])


def _last_number(text: str) -> str | None:
    found = None
    for found in _PLAIN_NUMBER.finditer(text):  # noqa: B007 - keep the last match
        pass
    return found.group().strip() if found else None
