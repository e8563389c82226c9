"""The labelled verifier corpus (tests/data/verifier_cases.jsonl; sources in verifier_cases.md): the
math reward, i.e. `math_equal`'s comparison, agrees with the labels per category in both extraction
modes, never accepts a wrong answer, and agrees on >= 95 % of the cases in the lenient mode."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from duotune.rewards import GradingPool, final_answer, get_reward

CORPUS = Path(__file__).parent / "data" / "verifier_cases.jsonl"
CASES = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
# How each prediction states its answer: every form the lenient mode documents.
FORMS = {"boxed", "answer_tag", "final_answer", "answer_is", "inline", "prose", "gsm8k"}
CATEGORIES = {"numbers", "expressions", "equations", "sets_tuples", "inequalities", "intervals", "matrices",
              "percentages", "units", "text", "non_english", "number_formats", "multiple_boxes", "prose_inline"}


@pytest.fixture(scope="module")
def accepted():
    """{mode: [accepted?] per case}: what the math reward does (`final_answer` in the mode, then
    `verify_answer` in the grading pool), with each distinct (answer, gold) pair graded once."""
    answers = {mode: [final_answer(c["pred"], mode) for c in CASES] for mode in ("strict", "lenient")}
    jobs = sorted({(a, c["gold"]) for parts in answers.values() for a, c in zip(parts, CASES) if a})
    with GradingPool(2, timeout_s=5.0) as pool:
        outs = pool.map("duotune.rewards.verify:verify_answer", [(a, g, pool.inner_seconds) for a, g in jobs],
                        group_key=lambda job: job[1])
    assert not any(o.timed_out or o.error for o in outs)
    equal = {job: o.value == 1.0 for job, o in zip(jobs, outs)}
    return {mode: [bool(a) and equal[(a, c["gold"])] for a, c in zip(parts, CASES)]
            for mode, parts in answers.items()}


def _table(accepted: dict[str, list[bool]]) -> str:
    """Agreement with the labels per category and mode (printed; shown when a test fails)."""
    rows: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for mode, flags in accepted.items():
        for case, ok in zip(CASES, flags):
            rows[case["category"]][mode].append(ok == case["equal"])
    lines = [f"{'category':<16}{'cases':>6}{'strict %':>10}{'lenient %':>11}"]
    for cat in sorted(rows):
        s, ln = rows[cat]["strict"], rows[cat]["lenient"]
        lines.append(f"{cat:<16}{len(s):>6}{100 * sum(s) / len(s):>10.1f}{100 * sum(ln) / len(ln):>11.1f}")
    return "\n".join(lines)


def test_corpus_covers_every_category_with_both_labels():
    assert len(CASES) >= 300
    assert len({c["id"] for c in CASES}) == len(CASES)
    assert {c["category"] for c in CASES} == CATEGORIES
    for cat in CATEGORIES:
        labels = {c["equal"] for c in CASES if c["category"] == cat}
        assert labels == {True, False}, cat
    assert all(c["form"] in FORMS and c["source"] and isinstance(c["equal"], bool) for c in CASES)


@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_no_false_accepts(accepted, mode):
    false_accepts = [c["id"] for c, ok in zip(CASES, accepted[mode]) if ok and not c["equal"]]
    assert false_accepts == [], _table(accepted)


def test_lenient_agrees_on_95_percent_of_stated_answers(accepted):
    print("\n" + _table(accepted))
    agree = [ok == c["equal"] for c, ok in zip(CASES, accepted["lenient"]) if c["form"] in FORMS]
    assert sum(agree) / len(agree) >= 0.95, _table(accepted)


def test_the_math_reward_grades_as_the_fixture_does(accepted):
    """The fixture's shortcut equals the reward itself on a slice with both labels and modes."""
    sample = CASES[::25]
    with GradingPool(1, timeout_s=5.0) as pool:
        for mode in ("strict", "lenient"):
            scores = get_reward("math", mode=mode, pool=pool)([c["pred"] for c in sample],
                                                              answer=[c["gold"] for c in sample])
            assert [s == 1.0 for s in scores] == accepted[mode][::25]


def test_strict_accepts_only_boxed_or_tagged_answers(accepted):
    """strict reads the final box or <answer> and nothing else: every answer it accepts is one."""
    loose = [c["id"] for c, ok in zip(CASES, accepted["strict"])
             if ok and "\\boxed" not in c["pred"] and "<answer>" not in c["pred"]]
    assert loose == []
    assert sum(accepted["strict"]) < sum(accepted["lenient"])
