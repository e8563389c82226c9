"""Multiple-choice items: parse options out of verl user text, shuffle them with a per-item seed, and
render the question with lettered options; the gold letter follows the permutation (SPEC 8).

Imports `duotune.errors` only; no torch, no models.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from duotune.errors import DataError

LETTERS = "ABCDEFGHIJ"  # MMLU-Pro has up to 10 options (A-J)
MCQ_SUFFIX = ("Answer with the letter of the correct option. Please reason step by step, and put the "
              "letter of your final answer within \\boxed{}.")
# LUFFY's ARC/GPQA rows mark options as "A) text" (or "1) text" for some ARC items) at line starts.
_MARKER_RE = re.compile(r"(?m)^([A-J]|[1-9])\)[ \t]")


@dataclass(frozen=True)
class Choice:
    """A multiple-choice question: stem, options in display order and the index of the right one."""

    question: str
    options: tuple[str, ...]
    answer_index: int

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer_index]


def parse_options(text: str, gold_label: str) -> Choice:
    """Split user text "question\\n\\nA) ...\\nB) ..." (labels A.. or 1..) into a `Choice`.

    The option block is the last run of markers, walked back from the final one so that "a)" or
    "1)" lines inside the question stay part of it. Raises DataError when no consistent block exists.
    """
    markers = list(_MARKER_RE.finditer(text))
    if not markers:
        raise DataError("no options found: expected lines 'A) ...' or '1) ...'", field="prompt")
    last = markers[-1].group(1)
    labels = LETTERS if last.isalpha() else "123456789"
    count = labels.index(last) + 1
    chain: list[re.Match[str]] = []
    for label in reversed(labels[:count]):
        limit = chain[-1].start() if chain else len(text) + 1
        found = [m for m in markers if m.group(1) == label and m.start() < limit]
        if not found:
            raise DataError(f"option {label}) is missing from the option block", field="prompt")
        chain.append(found[-1])
    chain.reverse()
    ends = [m.start() for m in chain[1:]] + [len(text)]
    options = tuple(text[m.end():end].strip() for m, end in zip(chain, ends))
    gold = gold_label.strip()
    if gold not in labels[:count]:
        raise DataError(f"gold answer {gold!r} is not one of the option labels "
                        f"{', '.join(labels[:count])}", field="reward_model.ground_truth")
    return Choice(text[:chain[0].start()].strip(), options, labels.index(gold))


def shuffle_choice(choice: Choice, key: str) -> tuple[Choice, list[int]]:
    """Shuffle the options with a generator seeded by `key` (e.g. "seed:benchmark:item").

    Returns the shuffled choice and the permutation `perm`, where new option i is old option perm[i];
    the gold index moves with its option. String seeds are hashed with SHA-512 by `random`, so the
    order is the same on every machine and Python run.
    """
    perm = list(range(len(choice.options)))
    random.Random(key).shuffle(perm)
    options = tuple(choice.options[p] for p in perm)
    return Choice(choice.question, options, perm.index(choice.answer_index)), perm


def render_mcq(choice: Choice, suffix: str = MCQ_SUFFIX) -> str:
    """The user turn: question, blank line, "A) ..." lines, blank line, the answer instruction."""
    if not 2 <= len(choice.options) <= len(LETTERS):
        raise DataError(f"a multiple-choice item needs 2 to {len(LETTERS)} options, "
                        f"got {len(choice.options)}", field="options")
    lines = "\n".join(f"{LETTERS[i]}) {opt}" for i, opt in enumerate(choice.options))
    return f"{choice.question}\n\n{lines}\n\n{suffix}"


def choice_from_list(question: str, options: Sequence[str], answer_letter: str) -> Choice:
    """A `Choice` from MMLU-Pro style fields (question, options list, answer letter)."""
    if not isinstance(options, Sequence) or isinstance(options, str) or not options:
        raise DataError("must be a non-empty list of option strings", field="options")
    if answer_letter not in LETTERS[:len(options)]:
        raise DataError(f"answer {answer_letter!r} is not a letter among the {len(options)} options",
                        field="answer")
    return Choice(question.strip(), tuple(str(o) for o in options), LETTERS.index(answer_letter))
