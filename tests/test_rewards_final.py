"""Final answers by extraction mode and the text normalisation before parsing (no math-verify here):
what strict and lenient read, multi-part answers, the gold's shape, number formats, adversarial sizes."""

from __future__ import annotations

import pytest

from duotune.errors import ConfigError
from duotune.rewards import answer_text, final_answer
from duotune.rewards.normalize import GoldShape, gold_shape, normalize_answer, normalize_latex, text_key

NUMBER = GoldShape(number=True)


@pytest.mark.parametrize("text, strict, lenient", [
    ("<answer> 42 </answer>", ("42",), ("42",)),
    ("<answer>$x=1$ and $y=2$</answer>", ("x=1 and y=2",), ("x=1 and y=2",)),
    ("<answer></answer> so \\boxed{3}", ("3",), ("3",)),                    # an empty tag falls through
    ("\\boxed{a} then \\boxed{b}", ("b",), ("b",)),                         # an earlier box is ignored
    ("\\boxed{1} and \\boxed{2} and \\boxed{3}", ("1", "2", "3"), ("1", "2", "3")),
    ("$\\boxed{1}\\boxed{2}$", ("1", "2"), ("1", "2")),
    ("x = \\boxed{-2} or x = \\boxed{2}", ("-2", "2"), ("-2", "2")),
    ("x_1 = \\boxed{1}, x_2 = \\boxed{3}", ("1", "3"), ("1", "3")),
    ("\\boxed{12 $ and $13 }. $", ("12 and 13",), ("12 and 13",)),         # a `$` inside a box
    ("\\boxed{\\boxed{5}}", ("5",), ("5",)),
    ("\\boxed{255}.\n\nThe final answer is $10,455$.", ("10,455",), ("10,455",)),  # a later phrase wins
    ("\\boxed{5}. So the answer is correct.", ("5",), ("5",)),              # a weak phrase does not
    ("\\boxed{7}\n#### 8", ("8",), ("8",)),
    ("The final answer is $10,455$.", None, ("10,455",)),
    ("Final Answer: The final answer is $28 \\%$. I hope it is correct.", None, ("28 \\%",)),
    ("**Final Answer:** 42", None, ("42",)),
    ("#### 1,000", None, ("1,000",)),
    ("The answer is 18 dollars.", None, ("18",)),
    ("The answer is: **Evelyn**", None, ("Evelyn",)),
    ("Final answer: 12 or 13", None, ("12 or 13",)),                         # not just the first number
    ("The answer is not 6; after fixing the sign it is 5.", None, ("5",)),   # a sentence is no answer
    ("Therefore $x \\geq 5$ is the solution.", None, ("x \\geq 5",)),
    ("The solutions are $x=1$ and $x=2$.", None, ("x=1", "x=2")),
    ("Since $a = 3$, we get \\(b = 4\\).", None, ("b = 4",)),
    ("So \\[ \\frac{1}{2} \\]", None, ("\\frac{1}{2}",)),
    ("It costs \\$5, so we pay $7$.", None, ("7",)),                        # \\$ is a dollar sign
    ("She has 18 eggs left.", None, ("18",)),
    ("The total is 1 000 dollars.", None, ("1 000",)),
    ("答案是 $\\frac{1}{2}$。", None, ("\\frac{1}{2}",)),
    ("よって、答えは 6 です。", None, ("6",)),
    ("La réponse finale est 2,5.", None, ("2,5",)),
    ("Ответ: 12.", None, ("12",)),
    ("I do not know.", None, None),
    ("Step 1: 2 + 3 = 5, and then we multiply", None, ("5",)),             # cut off: lenient still reads
    ("", None, None),
])
def test_final_answer_by_mode(text, strict, lenient):
    assert final_answer(text, "strict") == strict
    assert final_answer(text, "lenient") == lenient
    assert final_answer(text) == strict                                     # strict is the default


def test_modes_are_checked_and_answers_joined():
    with pytest.raises(ConfigError, match="extraction mode 'loose' is not valid"):
        final_answer("\\boxed{1}", "loose")
    assert answer_text(("1", "2")) == "1, 2" and answer_text(None) is None


def test_adversarial_sizes_stay_correct():
    assert final_answer("x" * 100_000 + "\\boxed{7}", "lenient") == ("7",)
    assert final_answer("$" * 100_001, "lenient") is None
    assert final_answer("answer is " * 20_000 + "9", "lenient") == ("9",)
    assert final_answer("\\boxed{" * 15_000, "lenient") is None
    assert final_answer("$1$ and " * 10_000 + "$2$", "lenient")[-1] == "2"


@pytest.mark.parametrize("gold, number, text", [
    ("1000", True, None), ("10,\\!080", True, None), ("\\$32,\\!348", True, None), ("45\\%", True, None),
    ("90^\\circ", True, None), ("5.4 \\text{ cents}", True, None), ("-3.5", True, None),
    ("1,-2", False, None), ("3, 5, 7", False, None), ("1,5", False, None), ("\\frac{1}{2}", False, None),
    ("\\text{Evelyn}", False, "evelyn"), ("\\text{(C)}", False, "c"), ("Navin", False, "navin"),
    ("x", False, None), ("\\frac{270}7\\text{ degrees}", False, None),
])
def test_gold_shape(gold, number, text):
    assert gold_shape(gold) == GoldShape(number=number, text=text)


@pytest.mark.parametrize("pred, number_gold, list_gold", [
    ("1,000", "1000", "1,000"), ("1,000,000", "1000000", "1,000,000"), ("1,000.5", "1000.5", "1,000.5"),
    ("1.234,5", "1234.5", "1.234,5"), ("1,5", "1.5", "1,5"), ("1000,99", "1000.99", "1000,99"),
    ("0,111", "0.111", "0,111"), ("1,2,3", "1,2,3", "1,2,3"), ("1.000.000", "1000000", "1.000.000"),
    ("1.5", "1.5", "1.5"), ("1 000", "1000", "1 000"), ("1\\,000", "1000", "1\\,000"),
    ("1{,}000", "1000", "1{,}000"), ("1\u2009000\u202f000", "1000000", "1\u2009000\u202f000"),
    ("10,\\!080", "10080", "10,\\!080"), ("1 2", "1 2", "1 2"), ("12 345,5", "12345.5", "12 345,5"),
])
def test_number_formats_follow_the_gold(pred, number_gold, list_gold):
    assert normalize_answer(pred, NUMBER) == number_gold
    assert normalize_answer(pred, GoldShape()) == list_gold                 # a list gold: commas separate


@pytest.mark.parametrize("text, expected", [
    ("1 - \\frac{1}{\\mathrm{e}}", "1 - \\frac{1}{e}"), ("2\\mathrm{i}", "2 i"), ("\\text{e}^{x}", "e^{x}"),
    ("\\operatorname{e}", "e"), ("{\\rm e}^2", "e^2"), ("2\\mathrm{\\pi}", "2\\pi "), ("m_{\\max }", "m_{max}"),
    ("1+274i", "1+274 i"), ("4.5e33", "4.5\\times 10^{33}"), ("1.6E-19", "1.6\\times 10^{-19}"),
    ("10^33", "10^{33}"), ("10^{33}", "10^{33}"), ("−3 × π", "-3 \\times  \\pi "), ("x ≥ 5", "x \\ge  5"),
    ("\\sin x", "\\sin x"), ("e^{2x}", "e^{2x}"), ("3in", "3in"),
])
def test_normalize_latex_workarounds(text, expected):
    assert normalize_latex(text) == expected


def test_text_key():
    assert text_key("\\text{(C)}") == text_key("C") == "c"
    assert text_key("\\textbf{No Solution.}") == "no solution"
