"""The `arithmetic` task: every demo step is right and ends in \\boxed{answer}, few-shot turns come from
their own seed stream, and train/test never share a question."""

import re

import pytest

from duotune.data import last_boxed
from duotune.errors import ConfigError
from duotune.tasks import fewshot_messages, make_examples, make_rows, split_of
from duotune.tasks.arithmetic import expression_key

STEP = re.compile(r"(\d+) ([*+-]) (\d+) = (\d+)")
OPS = {"*": lambda a, b: a * b, "+": lambda a, b: a + b, "-": lambda a, b: a - b}


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("word", [False, True])
def test_demo_steps_are_right_and_boxed_answer_is_the_answer(level, word):
    rows = make_rows("arithmetic", 300, seed=level, level=level, word=word, fewshot=0)
    for row, image in rows:
        assert image is None and row["reward_type"] == "math"
        products, const = row["terms"], row["constant"]
        value = sum(a * b for a, b in products) + const
        assert row["answer"] == str(value) and value >= 0
        assert last_boxed(row["demo"]) == row["answer"]
        assert row["demo"].endswith(f"The answer is \\boxed{{{value}}}.")
        steps = STEP.findall(row["demo"])
        assert len(steps) == 2 * len(products)  # each product, each addition of a product, the constant
        assert all(OPS[op](int(a), int(b)) == int(c) for a, op, b, c in steps)
        assert int(steps[-1][3]) == value
        if not word:
            expr = re.fullmatch(r"What is ([\d *+-]+)\?", row["question"]).group(1)
            assert eval(expr) == value  # noqa: S307 - the regex admits digits and + - * only
        else:
            assert all(str(x) in row["question"] for pair in products for x in pair)
            assert str(abs(const)) in row["question"] and row["question"].endswith("have now?")
        bounds = {1: ((2, 9), (2, 9), (1, 20)), 2: ((2, 9), (2, 9), (1, 20)), 3: ((11, 99), (2, 9), (1, 99))}
        (alo, ahi), (blo, bhi), (clo, chi) = bounds[level]
        assert len(products) == (2 if level == 2 else 1)
        assert all(alo <= a <= ahi and blo <= b <= bhi for a, b in products) and clo <= abs(const) <= chi
        if level == 1:
            assert const > 0


def test_level_one_demo_text():
    row, _ = make_rows("arithmetic", 1, seed=0, fewshot=0)[0]
    (a, b), c = row["terms"][0], row["constant"]
    assert row["question"] == f"What is {a} * {b} + {c}?"
    assert row["demo"] == (f"First, {a} * {b} = {a * b}. Then, {a * b} + {c} = {a * b + c}. "
                           f"The answer is \\boxed{{{a * b + c}}}.")


def test_fewshot_turns_precede_the_question():
    examples = make_examples("arithmetic", 30, seed=5, split="test", fewshot=2)
    shots = fewshot_messages("arithmetic", 2, seed=5)
    assert [m["role"] for m in shots] == ["user", "assistant", "user", "assistant"]
    rows = make_rows("arithmetic", 30, seed=5, split="test", fewshot=2)
    for ex, (row, _) in zip(examples, rows):
        assert ex.prompt == [*shots, {"role": "user", "content": row["question"]}]
        assert last_boxed(ex.demo) == ex.answer == row["answer"]
    assert all(last_boxed(m["content"]) for m in shots[1::2])
    # The shots come from the "fewshot" stream: not the train split's first items for the same seed ...
    train = make_rows("arithmetic", 2, seed=5, split="train", fewshot=0)
    assert [r["question"] for r, _ in train] != [m["content"] for m in shots[0::2]]
    # ... from train-split content only, and never one of the rows they are prepended to.
    shot_keys = {expression_key(*_parse(m["content"])) for m in shots[0::2]}
    assert all(split_of(k) == "train" for k in shot_keys)
    train_rows = make_rows("arithmetic", 900, seed=5, split="train", fewshot=2)
    assert not shot_keys & {r["key"] for r, _ in train_rows}
    assert make_examples("arithmetic", 1, seed=5, fewshot=0)[0].prompt[0]["role"] == "user"


def _parse(question):
    a, b, c = map(int, re.fullmatch(r"What is (\d+) \* (\d+) \+ (\d+)\?", question).groups())
    return [(a, b)], c


def test_train_and_test_never_share_a_question():
    space = [expression_key([(a, b)], c) for a in range(2, 10) for b in range(2, 10) for c in range(1, 21)]
    n_test = sum(split_of(k) == "test" for k in space)
    assert 0.2 < n_test / len(space) < 0.3  # TEST_FRACTION = 0.25 of the 1,280 level-1 questions
    test = make_rows("arithmetic", n_test, seed=0, split="test")
    train = make_rows("arithmetic", len(space) - n_test - 2, seed=0, split="train")  # 2 keys are the shots
    test_q = {r["question"] for r, _ in test}
    train_q = {r["question"] for r, _ in train}
    assert len(test_q) == n_test and len(train_q) == len(train)  # unique within each split
    assert not test_q & train_q
    # Word problems with the same numbers count as the same item: they land in the same split.
    word = make_rows("arithmetic", 200, seed=9, split="test", word=True, fewshot=0)
    assert {r["key"] for r, _ in word} <= {r["key"] for r, _ in test}
    with pytest.raises(ConfigError, match=f"ran out of distinct test items after {n_test} rows"):
        make_rows("arithmetic", n_test + 1, seed=1, split="test")
    assert len(make_rows("arithmetic", n_test + 50, seed=1, split="test", unique=False)) == n_test + 50


def test_deterministic_by_seed_and_split():
    a = make_rows("arithmetic", 50, seed=3, level=2)
    assert a == make_rows("arithmetic", 50, seed=3, level=2)
    b = make_rows("arithmetic", 50, seed=4, level=2)
    assert [r["question"] for r, _ in a] != [r["question"] for r, _ in b]
    # Item i depends only on items before it, so a longer run extends a shorter one.
    assert make_rows("arithmetic", 80, seed=3, level=2)[:50] == a
    with pytest.raises(ConfigError, match="n=-1"):
        make_rows("arithmetic", -1, 0)
    with pytest.raises(ConfigError, match="split 'dev'"):
        make_rows("arithmetic", 1, 0, split="dev")
    with pytest.raises(ConfigError, match="level"):
        make_rows("arithmetic", 1, 0, level=4)


def test_max_constant_widens_the_item_space_and_keeps_the_default_stream():
    # The default (20) draws the same rows as before the parameter existed: old comparisons reproduce.
    assert make_rows("arithmetic", 40, seed=2, max_constant=20) == make_rows("arithmetic", 40, seed=2)
    space = [expression_key([(a, b)], c) for a in range(2, 10) for b in range(2, 10) for c in range(1, 51)]
    n_test = sum(split_of(k) == "test" for k in space)
    assert n_test >= 800  # vs 332 at 1-20: room for a 400-item ID set (docs/protocol.md)
    test = make_rows("arithmetic", n_test, seed=0, split="test", max_constant=50)
    consts = [r["constant"] for r, _ in test]
    assert len({r["key"] for r, _ in test}) == n_test and min(consts) == 1 and max(consts) == 50
    with pytest.raises(ConfigError, match=f"after {n_test} rows"):
        make_rows("arithmetic", n_test + 1, seed=0, split="test", max_constant=50)
    with pytest.raises(ConfigError, match="max_constant"):
        make_rows("arithmetic", 1, 0, max_constant=0)


def test_prose_style_writes_the_same_items_in_other_words_and_at_another_length():
    """`style: prose` (regime (b)'s teacher data, docs/protocol.md) changes the demo text only: the same
    questions, answers, keys and few-shot items in the same order, the demos in other words and longer."""
    steps = make_rows("arithmetic", 60, seed=3, max_constant=50, fewshot=2)
    prose = make_rows("arithmetic", 60, seed=3, max_constant=50, fewshot=2, style="prose")
    for (s, _), (p, _) in zip(steps, prose, strict=True):
        assert (p["question"], p["answer"], p["key"]) == (s["question"], s["answer"], s["key"])
        assert [m["content"] for m in p["prompt"][0::2]] == [m["content"] for m in s["prompt"][0::2]]
        assert p["prompt"][1]["content"] != s["prompt"][1]["content"]  # the shots' demos are prose too
        assert last_boxed(p["demo"]) == p["answer"] and len(p["demo"]) > 1.4 * len(s["demo"])
        assert not any(w in p["demo"] for w in ("First,", "Then,", " = "))
    row, _ = make_rows("arithmetic", 1, seed=0, fewshot=0, style="prose")[0]
    (a, b), c = row["terms"][0], row["constant"]
    assert row["demo"] == (f"Multiplication comes before addition, so we work it out in two parts. {a} times "
                           f"{b} is {a * b}. Adding {c} to {a * b} makes {a * b + c}. So the result is "
                           f"{a * b + c}, and the answer is \\boxed{{{a * b + c}}}.")


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("word", [False, True])
def test_prose_demos_say_every_step_right(level, word):
    said = re.compile(r"(\d+) times (\d+) is (\d+)|Adding (\d+) to (\d+) makes (\d+)|"
                      r"Taking (\d+) away from (\d+) leaves (\d+)")
    for row, _ in make_rows("arithmetic", 200, seed=level, level=level, word=word, fewshot=0, style="prose"):
        found = said.findall(row["demo"])
        assert len(found) == 2 * len(row["terms"])
        for g in found:
            x = [int(v) if v else None for v in g]
            if x[0] is not None:
                assert x[0] * x[1] == x[2]
            elif x[3] is not None:
                assert x[3] + x[4] == x[5]
            else:
                assert x[7] - x[6] == x[8]
        assert last_boxed(row["demo"]) == row["answer"]
    with pytest.raises(ConfigError, match="style"):
        make_rows("arithmetic", 1, 0, style="poem")
