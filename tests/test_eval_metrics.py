"""pass@k against brute-force enumeration, maj@k by hand, the summary of hand-built records, and the
MCQ option parser/shuffle (deterministic, gold letter follows the permutation)."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from duotune.errors import DataError
from duotune.eval.mcq import parse_options, render_mcq, shuffle_choice
from duotune.eval.metrics import maj_at_k, pass_at_k, summarize


def _brute_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Fraction of the k-subsets of n samples (c correct) that hold at least one correct sample."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_enumeration_over_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(_brute_pass_at_k(n, c, k)), abs=1e-12)


def test_pass_at_k_closed_forms_and_bad_arguments():
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(32, 0, 32) == 0.0
    assert pass_at_k(32, 1, 32) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_maj_at_k_votes_first_k_ties_to_first_seen_and_ignores_missing():
    answers, scores = ["1", "2", "2", "3"], [1.0, 0.0, 0.0, 0.0]
    assert [maj_at_k(answers, scores, k) for k in (1, 2, 3, 4)] == [1.0, 1.0, 0.0, 0.0]
    assert maj_at_k(["7", "8"], [0.0, 1.0], 2) == 0.0  # tie: "7" was seen first
    assert maj_at_k([None, "", "5"], [0.0, 0.0, 1.0], 3) == 1.0  # no answer, no vote
    assert maj_at_k([None, None], [0.0, 0.0], 2) == 0.0
    assert maj_at_k(["1 / 2", "1/2", "3"], [1.0, 1.0, 0.0], 3) == 1.0  # whitespace-free votes


def _rec(item, j, score, extracted="x", length=10, truncated=False):
    return {"item_id": item, "sample_index": j, "score": score, "extracted": extracted,
            "length": length, "truncated": truncated}


def test_summarize_hand_built_records():
    records = [_rec("a", 0, 1.0, "4", 10), _rec("a", 1, 0.0, "5", 20), _rec("a", 2, 0.0, "5", 30, True),
               _rec("b", 0, 0.0, None, 40, True), _rec("b", 1, 0.0, "9", 50), _rec("b", 2, 1.0, "8", 60)]
    meta = {"a": {"level": 1}, "b": {"level": 2}}
    s = summarize(records, meta, breakdown=("level", "subject"))
    assert (s["items"], s["samples"], s["n"]) == (2, 6, 3)
    assert s["accuracy"] == pytest.approx(1 / 3) and s["avg@3"] == pytest.approx(1 / 3)
    assert s["pass@k"]["1"] == pytest.approx(1 / 3)
    assert s["pass@k"]["2"] == pytest.approx(2 / 3)  # each item: 1 - C(2,2)/C(3,2)
    assert s["pass@k"]["3"] == 1.0
    # maj@1/2/3 for a: "4" (right), tie 4-5 -> "4" (right), "5" (wrong); b: none, "9", tie 9-8 -> "9".
    assert s["maj@k"] == {"1": 0.5, "2": 0.5, "3": 0.0}
    assert s["mean_length"] == 35.0
    assert s["truncated_fraction"] == pytest.approx(2 / 6)
    assert s["answered_fraction"] == pytest.approx(5 / 6)
    assert s["ungradable_items"] == 0
    assert s["breakdown"] == {"level": {"1": {"items": 1, "accuracy": pytest.approx(1 / 3)},
                                        "2": {"items": 1, "accuracy": pytest.approx(1 / 3)}}}


def test_summarize_counts_items_whose_gold_cannot_be_graded():
    records = [_rec("a", 0, 0.0), _rec("a", 1, 0.0), _rec("b", 0, 1.0)]
    records[1]["gradable"] = False
    s = summarize(records, {})
    assert s["ungradable_items"] == 1 and s["accuracy"] == 0.5


def test_summarize_of_nothing_is_zero():
    s = summarize([], {})
    assert (s["items"], s["accuracy"], s["pass@k"]) == (0, 0.0, {})


ARC_LIKE = "Which is a gas?\n\nA) ice\nB) steam\nC) rock\nD) wood\n"


def test_parse_options_letters_numbers_and_inner_markers():
    c = parse_options(ARC_LIKE, "B")
    assert (c.question, c.options, c.answer_index, c.answer_letter) == (
        "Which is a gas?", ("ice", "steam", "rock", "wood"), 1, "B")
    c = parse_options("Pick one.\n\n1) red\n2) blue\n3) green\n", "3")
    assert (c.options, c.answer_letter) == (("red", "blue", "green"), "C")
    # Lines like "a)" or "A)" inside the question stay in it; the block is walked back from the end.
    text = "Facts:\na) one\nA) not an option\n\n\nA) x\nB) y\n\nC) z\nD) w"
    c = parse_options(text, "D")
    assert c.question == "Facts:\na) one\nA) not an option" and c.options == ("x", "y", "z", "w")


def test_parse_options_errors_name_the_problem():
    with pytest.raises(DataError, match="no options"):
        parse_options("no options here", "A")
    with pytest.raises(DataError, match=r"option A\) is missing"):
        parse_options("Q\n\nB) y\nC) z", "B")
    with pytest.raises(DataError, match="gold answer 'E'"):
        parse_options(ARC_LIKE, "E")


def test_shuffle_is_deterministic_and_gold_follows_the_permutation():
    c = parse_options(ARC_LIKE, "B")
    s1, p1 = shuffle_choice(c, "0:arc_c:item-7")
    s2, p2 = shuffle_choice(c, "0:arc_c:item-7")
    assert (s1, p1) == (s2, p2)
    assert sorted(p1) == [0, 1, 2, 3]
    assert s1.options == tuple(c.options[p] for p in p1)
    assert s1.options[s1.answer_index] == "steam"
    perms = {tuple(shuffle_choice(c, f"0:arc_c:{i}")[1]) for i in range(40)}
    assert len(perms) > 5  # the seed really varies per item
    ten = parse_options("Q\n\n" + "\n".join(f"{L}) opt{L}" for L in "ABCDEFGHIJ"), "J")
    s, perm = shuffle_choice(ten, "1:mmlu_pro:5")
    assert s.options[s.answer_index] == "optJ" and sorted(perm) == list(range(10))
    rendered = render_mcq(s)
    assert rendered.startswith("Q\n\nA) ") and f"\n{s.answer_letter}) optJ\n" in rendered
    assert rendered.endswith("within \\boxed{}.")
