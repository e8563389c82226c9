"""Rewards graded by math-verify in the GradingPool: equivalence fixtures, adversarial inputs, the
watchdog, mixed routing, and RewardManager metrics and error reports."""

from __future__ import annotations

import threading
import time

import pytest

from duotune.errors import ConfigError, DataError
from duotune.rewards import GradingPool, RewardError, RewardManager, get_reward, math_equal

TOWER = "\\boxed{9^{9^{9^{9^{9}}}}}"


@pytest.fixture(scope="module")
def pool():
    with GradingPool(2, timeout_s=1.0) as p:
        yield p


@pytest.fixture(scope="module")
def roomy_pool():
    """5 s per item: sympy's first set or relational comparison in a fresh worker takes about a
    second on a loaded machine, which the 1 s pool above would count as a timeout."""
    with GradingPool(2, timeout_s=5.0) as p:
        yield p


MATH_CASES = [
    ("\\boxed{\\frac12}", "0.5", 1.0),
    ("\\boxed{\\dfrac{1}{2}}", "0.5", 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{10\\%}", "0.1", 1.0),
    ("<answer>x=5</answer>", "5", 1.0),
    ("\\boxed{1,000}", "1000", 1.0),
    # MATH-500 money golds: an escaped \$ is a dollar sign, not an inline-maths delimiter
    ("\\boxed{18.90}", "\\$18.90", 1.0),
    ("\\boxed{\\$18.90}", "\\$18.90", 1.0),
    ("\\boxed{19.80}", "\\$18.90", 0.0),
    ("\\boxed{(1,2]}", "(1,2]", 1.0),
    ("\\boxed{[1,2)}", "(1,2)", 0.0),                        # interval ends differ
    ("\\boxed{\\{1,2\\}}", "\\{2,1\\}", 1.0),                 # sets are unordered
    ("\\boxed{\\sqrt{2}}", "2^{1/2}", 1.0),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", 1.0),
    ("\\boxed{3}", "4", 0.0),
    ("\\boxed{0.51}", "0.5", 0.0),
    ("\\boxed{-3}", "-3", 1.0),
    # strict reads only <answer> and \boxed{}: these stated answers are the lenient mode's
    ("Janet sells 16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n#### 18", "18", 0.0),
    ("The answer is 3.5.", "7/2", 0.0),
    ("<answer>\\boxed{9}</answer>", "9", 1.0),
    ("<answer>12</answer>", "\\boxed{12}", 1.0),              # boxed gold is unwrapped
    ("\\boxed{1} first, then \\boxed{2}", "2", 1.0),
    ("\\fbox{6}", "6", 1.0),
    ("I computed 17 apples", "17", 0.0),                      # no final-number fallback by default
    ("", "5", 0.0),
    ("\\boxed{5", "5", 0.0),                                  # unbalanced braces
    ("答案 \\boxed{5} ✓ 完成", "5", 1.0),                       # unicode
    ("x" * 100_000 + " \\boxed{7}", "7", 1.0),                # 100,000-character completion
    ("<answer>" + "9" * 3000 + "</answer>", "9", 0.0),        # absurdly long answer: 0, never parsed
    ("\\boxed{5}", None, None),                               # no gold: not applicable
]


def test_math_reward_fixtures(pool):
    reward = get_reward("math", pool=pool)
    comps, golds, expected = zip(*MATH_CASES)
    assert reward(list(comps), answer=list(golds)) == list(expected)
    assert reward.stats["timeouts"] == 0


# math-verify 0.9.0 parse failures worked around before parsing (rewards.normalize), one case each.
WORKAROUND_CASES = [
    ("\\boxed{1 - e^{-1}}", "1 - \\frac{1}{\\mathrm{e}}", 1.0),        # gold read as "1 - \frac{1}{"
    ("\\boxed{1 + \\frac{1}{\\mathrm{e}}}", "1 - \\frac{1}{e}", 0.0),
    ("\\boxed{\\frac{1}{\\mathrm{e}^{2}}}", "\\frac{1}{\\mathrm{e}}", 0.0),  # both truncated to "\frac{1}{"
    ("\\boxed{2}", "2\\mathrm{e}", 0.0),                                # trailing \mathrm{e} dropped as a unit
    ("\\boxed{2e}", "2\\mathrm{e}", 1.0),
    ("\\boxed{1}", "1+2\\mathrm{i}", 0.0),                              # ... and \mathrm{i}
    ("\\boxed{1+2i}", "1+2\\mathrm{i}", 1.0),
    ("\\boxed{2\\pi}", "2\\mathrm{\\pi}", 1.0),
    ("\\boxed{e^{3}}", "\\operatorname{e}^{3}", 1.0),
    ("\\boxed{{\\rm e}^{3}}", "e^{3}", 1.0),
    ("\\boxed{n^2-n-1}", "m_{\\max }=n^{2}-n-1", 1.0),                  # operator subscript: no parse
    ("\\boxed{1 + 274 i}", "1+274i", 1.0),                               # i after a coefficient
    ("\\boxed{4.5 \\times 10^{33}}", "4.5e33", 1.0),                      # e-notation read as 4.5*E*33
    ("\\boxed{4.6 \\times 10^{33}}", "4.5e33", 0.0),
    ("\\boxed{4.5 \\times 10^33}", "4.5e33", 1.0),                        # bare exponent 10^33
]

MULTI_BOX_CASES = [
    ("\\boxed{1} and \\boxed{2} and \\boxed{3}", "\\{1, 2, 3\\}", 1.0),    # several boxes: one set
    ("\\boxed{1} and \\boxed{2}", "$\\boxed{1}\\boxed{2}$", 1.0),          # ... and several in the gold
    ("\\boxed{1} and \\boxed{2}", "\\{1, 2, 3\\}", 0.0),
    ("\\boxed{1}, \\boxed{2}", "(1, 2, 3)", 0.0),
    ("\\boxed{2}, \\boxed{1}, \\boxed{3}", "(1, 2, 3)", 0.0),                # a tuple keeps its order
    ("\\boxed{1}, \\boxed{2}, \\boxed{3}", "(1, 2, 3)", 1.0),
    ("The roots are \\boxed{2} and \\boxed{3}.", "3", 0.0),                  # two answers are not 3
    ("x = \\boxed{-2} or x = \\boxed{2}", "\\pm 2", 1.0),
    ("\\boxed{1} and \\boxed{2}", "(1, 2]", 0.0),                            # never an interval
]

NUMBER_FORMAT_CASES = [  # the gold's shape decides: one number, or a list
    ("\\boxed{1 000}", "1000", 1.0), ("\\boxed{1\\,000}", "1000", 1.0), ("\\boxed{1{,}000}", "1000", 1.0),
    ("\\boxed{1\u2009000\u2009000}", "1000000", 1.0), ("\\boxed{1\u202f000}", "1000", 1.0),
    ("\\boxed{1,000}", "1000", 1.0), ("\\boxed{1,000}", "1", 0.0), ("\\boxed{10,455}", "10,\\!455", 1.0),
    ("\\boxed{1000,99}", "1000.99", 1.0), ("\\boxed{1,5}", "1.5", 1.0), ("\\boxed{1,5}", "15", 0.0),
    ("\\boxed{1,5}", "\\{1, 5\\}", 1.0), ("\\boxed{1,5}", "1,5", 1.0), ("\\boxed{1.5}", "1,5", 0.0),
    ("\\boxed{0,111}", "0.111", 1.0), ("\\boxed{1.234,5}", "1234.5", 1.0), ("\\boxed{1,234.5}", "1234.5", 1.0),
    ("\\boxed{1 234,5}", "1234.5", 1.0), ("\\boxed{1,2,3}", "123", 0.0), ("\\boxed{1.000.000}", "1000000", 1.0),
    ("\\boxed{\\$32,348}", "\\$32,\\!348", 1.0), ("\\boxed{1000.0}", "1000", 1.0),
]


@pytest.mark.parametrize("cases", [WORKAROUND_CASES, MULTI_BOX_CASES, NUMBER_FORMAT_CASES],
                         ids=["workarounds", "multiple_boxes", "number_formats"])
def test_strict_math_reward_cases(roomy_pool, cases):
    reward = get_reward("math", pool=roomy_pool)
    comps, golds, expected = zip(*cases)
    got = reward(list(comps), answer=list(golds))
    assert [(c, g) for c, g, e, v in zip(comps, golds, expected, got) if v != e] == []
    assert reward.stats["timeouts"] == 0


LENIENT_CASES = [  # (completion, gold, strict, lenient)
    ("Janet sells 16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n#### 18", "18", 0.0, 1.0),
    ("#### 1,000", "1000", 0.0, 1.0),
    ("The answer is 3.5.", "7/2", 0.0, 1.0),
    ("I computed 17 apples", "17", 0.0, 1.0),                   # the last number
    ("about 1,000 in all", "1000", 0.0, 1.0),
    ("Therefore $x \\geq 5$ is the solution.", "[5, \\infty)", 0.0, 1.0),
    ("The final answer is $10,455$.", "10455", 0.0, 1.0),
    ("First \\boxed{255}.\n\nThe final answer is $10,455$.", "10455", 1.0, 1.0),  # a later phrase wins
    ("First \\boxed{255}.\n\nThe final answer is $10,455$.", "255", 0.0, 0.0),    # in both modes
    ("\\boxed{12 $ and $13 }. $ Final Answer: The final answer is $12$ and $13$.", "12, 13", 1.0, 1.0),
    ("So \\boxed{7}. The answer is correct.", "7", 1.0, 1.0),  # "answer is" after a box is no answer
    ("no answer here", "8", 0.0, 0.0),
]


@pytest.mark.parametrize("mode", ["strict", "lenient"])
def test_math_modes(roomy_pool, mode):
    reward = get_reward("math", mode=mode, pool=roomy_pool)
    comps, golds, strict, lenient = zip(*LENIENT_CASES)
    assert reward(list(comps), answer=list(golds)) == list(strict if mode == "strict" else lenient)
    assert reward.stats["timeouts"] == 0


def test_math_mode_is_checked():
    with pytest.raises(ConfigError, match="extraction mode 'loose'.*'strict'.*'lenient'"):
        get_reward("math", mode="loose")


def test_unparseable_gold_is_none_and_counted(pool):
    reward = get_reward("math", pool=pool)
    assert reward(["\\boxed{5}", "\\boxed{@@@}"], answer=["@@@", "@@@"]) == [None, None]
    assert reward.stats["gold_unparseable"] == 2


def test_tower_of_exponents_scores_zero_within_timeout(pool):
    reward = get_reward("math", pool=pool)
    assert reward(["\\boxed{1}"] * 4, answer=["1"] * 4) == [1.0] * 4  # workers started before timing
    start = time.monotonic()
    assert reward([TOWER, "\\boxed{5}"], answer=["5", "5"]) == [0.0, 1.0]
    assert time.monotonic() - start < pool.watchdog_s    # math-verify's own 1 s timeout fired
    assert reward.stats["timeouts"] == 1


def test_math_equal_is_the_shared_verifier():
    assert math_equal("so \\boxed{\\frac{1}{2}}", "0.5") is True
    assert math_equal("<answer>7</answer>", "8") is False
    assert math_equal("no answer here", "8") is False
    box: list[bool] = []
    worker = threading.Thread(target=lambda: box.append(math_equal("#### 1,000", "1000", mode="lenient")))
    worker.start()
    worker.join()
    assert box == [True]                                     # fine off the main thread too
    assert math_equal("#### 1,000", "1000") is False         # strict is the default


def test_accuracy_format_r1v(pool):
    reward = get_reward("accuracy_format", pool=pool)
    comps = ["<think>t</think><answer>5</answer>", "<answer>5</answer>", "<think>t</think><answer>6</answer>",
             "<think>t</think> <answer>@@@</answer>", "<answer>3</answer>"]
    golds = ["5", "5", "5", "@@@", "<answer> 3 </answer>"]
    assert reward(comps, answer=golds) == [2.0, 1.0, 1.0, 2.0, 1.0]  # R_acc + 1 * R_format


def test_pool_watchdog_replaces_stuck_and_crashed_workers():
    with GradingPool(1, timeout_s=1.0, watchdog_s=1.0) as p:
        start = time.monotonic()
        out = p.map("time:sleep", [(0,), (60,), (0,)])
        assert time.monotonic() - start < 10
        assert [o.timed_out for o in out] == [False, True, False]
        out = p.map("os:_exit", [(3,)])                        # the worker dies mid-batch
        assert out[0].timed_out and p.replacements == 2 and p.timeouts == 2
        out = p.map("math:sqrt", [(-1.0,), (16.0,)])
        assert out[0].error == "ValueError: math domain error" and out[1].value == 4.0
        assert [o.value for o in p.map("math:sqrt", [(float(i * i),) for i in range(40)])] == list(range(40))
        workers = [w.proc for w in p._workers]
    assert all(proc.poll() is not None for proc in workers)  # closed cleanly
    with pytest.raises(RuntimeError, match="closed"):
        p.map("math:sqrt", [(1.0,)])
    with pytest.raises(ConfigError, match="num_workers"):
        GradingPool(0)


def test_pool_group_key_keeps_a_group_on_one_worker():
    """Items sharing a key (a gold answer) are graded by one worker, so it parses that gold once;
    without a key, chunks of 3 split the 5-item groups across the two workers."""
    items = [(g, k) for g in range(6) for k in range(5)]
    with GradingPool(2, chunk_size=3) as p:
        grouped = [o.value for o in p.map("duotune.rewards.worker:worker_pid", items, group_key=lambda a: a[0])]
        plain = [o.value for o in p.map("duotune.rewards.worker:worker_pid", items)]
    assert all(len(set(grouped[g * 5:(g + 1) * 5])) == 1 for g in range(6))
    assert len(set(grouped)) == 2  # both workers took groups
    assert any(len(set(plain[g * 5:(g + 1) * 5])) == 2 for g in range(6))


def test_mixed_routing(pool):
    mixed = get_reward("mixed", pool=pool, open_scorer=lambda qs, ans: [float(len(a)) for a in ans])
    comps = ["<answer>3</answer>", "<answer>(b)</answer>", "<answer>\\frac{1}{2}</answer>",
             "<answer>[0, 0, 0.5, 1]</answer>", "<answer>abcdef</answer>", "\\boxed{3}",
             "<answer>4</answer>", "<answer>anything</answer>"]
    golds = ["3", "B", "0.5", "[0, 0, 1, 1]", "ab", "3", "3", "x"]
    types = ["digit", "mcq", "math", "iou", "open", "digit", "digit", None]
    out = mixed(comps, answer=golds, reward_type=types)
    assert out == [1.0, 1.0, 1.0, 0.5, pytest.approx(1 - 2.718281828459045 ** -0.8), 0.0, 0.0, None]
    assert mixed.stats["by_type"] == {"digit": pytest.approx(1 / 3), "mcq": 1.0, "math": 1.0,
                                      "iou": 0.5, "open": pytest.approx(1 - 2.718281828459045 ** -0.8)}


def test_mixed_bad_rows(pool):
    mixed = get_reward("mixed", pool=pool)
    with pytest.raises(DataError, match="row 1.*unknown reward_type 'count'"):
        mixed(["<answer>1</answer>"] * 2, answer=["1", "1"], reward_type=["digit", "count"])
    with pytest.raises(ConfigError, match="open_scorer"):
        mixed(["<answer>1</answer>"], answer=["1"], reward_type=["open"])
    with pytest.raises(DataError, match="row 2.*not an integer"):
        mixed(["<answer>1</answer>"] * 3, answer=["1", "A", "x"], reward_type=["digit", "mcq", "digit"])


def test_manager_totals_components_metrics(pool):
    manager = RewardManager([("math", 1.0), ("format_think_answer", 0.5), ("mixed", 2.0)], pool=pool)
    comps = ["<think>t</think><answer>5</answer>", "\\boxed{5}", TOWER, "<answer>B</answer>"]
    cols = {"answer": ["5", "5", "5", "B"], "reward_type": ["digit", "math", "math", "mcq"]}
    totals, parts, m = manager.score(comps, cols)
    assert parts == {"math": [1.0, 1.0, 0.0, 1.0], "format_think_answer": [1.0, 0.0, 0.0, 0.0],
                     "mixed": [1.0, 0.0, 0.0, 1.0]}
    assert totals == [3.5, 1.0, 0.0, 3.0]
    assert m["reward/math/mean"] == 0.75 and m["reward/math/std"] == pytest.approx(0.75 ** 0.5 / 2)
    assert m["reward/math/frac_none"] == 0.0
    assert m["reward/math/timeouts"] == 1.0 and m["reward/timeouts"] == 1.0
    assert m["reward/mixed/digit"] == 1.0 and m["reward/mixed/math"] == 0.0 and m["reward/mixed/mcq"] == 1.0
    assert m["reward/mean"] == pytest.approx(7.5 / 4)


def _fails_on_hello(completions, **columns):
    return [1 / 0 if c == "hello" else 1.0 for c in completions]


def _needs_solution(completions, solution, **columns):
    return [float(c == s) for c, s in zip(completions, solution)]


def test_manager_error_reports(pool):
    manager = RewardManager([_fails_on_hello], pool=pool)
    with pytest.raises(RewardError, match=r"reward '_fails_on_hello' failed on sample 2: ZeroDivisionError"):
        manager.score(["a", "b", "hello"], {})
    with pytest.raises(RewardError, match=r"'math'.*needs column 'answer'.*columns: reward_type"):
        RewardManager(["math"], pool=pool).score(["\\boxed{1}"], {"reward_type": ["math"]})
    with pytest.raises(RewardError, match=r"'_needs_solution'.*needs column 'solution'"):
        RewardManager([_needs_solution]).score(["a"], {"answer": ["a"]})
    assert RewardManager([_needs_solution]).score(["a", "b"], {"solution": ["a", "a"]})[0] == [1.0, 0.0]
    with pytest.raises(RewardError, match="returned list of length 1 for 2 completions"):
        RewardManager([lambda completions, **kw: [1.0]]).score(["a", "b"], {})
    with pytest.raises(RewardError, match="column 'answer' has 1 values for 2 completions"):
        RewardManager(["digit"]).score(["a", "b"], {"answer": ["1"]})
