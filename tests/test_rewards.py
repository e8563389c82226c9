"""Rewards without math-verify: extraction precedence, MCQ letters, format, digit, IoU, open_rm, registry."""

from __future__ import annotations

import math
import re
import sys
import textwrap

import pytest

from duotune.errors import ConfigError, DataError, UnknownNameError
from duotune.rewards import (
    REWARDS,
    describe_rewards,
    extract_answer,
    get_reward,
    normalize_mcq,
    relative_reward,
    think_answer_format,
    validate_reward_name,
)


@pytest.mark.parametrize("text, expected", [
    ("<answer> 42 </answer>", "42"),
    ("<answer>1</answer> later <answer>2</answer>", "2"),
    ("<answer></answer> so \\boxed{3}", "3"),                # empty tag falls through
    ("<answer>A</answer> \\boxed{B}", "A"),                   # tag beats box
    ("x \\boxed{\\frac{1}{\\sqrt{4}}} y", "\\frac{1}{\\sqrt{4}}"),  # nested braces
    ("\\boxed{a} then \\boxed{b}", "b"),
    ("\\fbox{7}", "7"),
    ("\\boxed{3} and \\boxed{4", "3"),                         # last *balanced* box
    ("\\boxed{5", None),                                      # unbalanced only
    ("\\boxed{B}\n#### 5", "B"),                              # box beats GSM8K
    ("She sells 16 - 3 - 4 = 9 eggs.\n#### 1,000", "1,000"),
    ("#### 5\nthe answer is 6", "5"),                         # GSM8K beats "the answer is"
    ("The answer is 3.5.", "3.5"),
    ("so the answer is $\\frac{1}{2}$. Done", "\\frac{1}{2}"),
    ("So the answer is: **12**", "12"),
    ("I got 12 and then 15 apples", None),                    # no fallback unless asked
    ("", None),
    ("答案是 \\boxed{5} ✓", "5"),                               # unicode around
])
def test_extract_answer_precedence(text, expected):
    assert extract_answer(text) == expected


def test_extract_last_number_only_when_asked():
    assert extract_answer("I got 12 and then 1,500 apples", allow_last_number=True) == "1,500"
    assert extract_answer("negative -2.5 here", allow_last_number=True) == "-2.5"
    assert extract_answer("no digits", allow_last_number=True) is None


def test_extract_adversarial_long_inputs():
    assert extract_answer("x" * 100_000 + "\\boxed{7}") == "7"
    assert extract_answer("\\boxed{" * 15_000) is None               # 105,000 unbalanced braces
    assert extract_answer("<answer>" * 12_000 + "</answer>") is None   # empty tag, nothing else
    assert extract_answer("<answer>" * 12_000 + "9</answer>") == "9"


@pytest.mark.parametrize("text, letter", [
    ("A", "A"), ("A)", "A"), ("(a)", "A"), ("a.", "A"), ("Answer: A", "A"), ("**A**", "A"),
    ("ANSWER: C", "C"), ("answer: b", "B"), ("The answer is (B).", "B"), ("\\boxed{D}", "D"),
    ("<answer>J</answer>", "J"), ("B) 42 because", "B"), ("The correct option is E", "E"),
    ("<answer>K</answer>", None), ("I think so", None), ("", None),
    ("<think>answer: A</think><answer>C</answer>", "C"),      # explicit answer wins over prose
])
def test_normalize_mcq_forms(text, letter):
    assert normalize_mcq(text) == letter


def test_mcq_reward_and_bad_gold():
    mcq = get_reward("mcq")
    assert mcq(["A", "(b)", "Answer: C", "nothing"], answer=["A", "A", "(c)", "D"]) == [1.0, 0.0, 1.0, 0.0]
    assert mcq(["A"], answer=[None]) == [None]
    with pytest.raises(DataError, match=r"row 1.*'42' is not an option letter"):
        mcq(["A", "B"], answer=["A", "42"])


FORMAT_CASES = [
    ("<think>a</think><answer>1</answer>", 1.0),
    ("<think>a\nb</think>\n\n<answer>\n1\n</answer>", 1.0),
    ("Sure! <think>a</think><answer>1</answer>", 0.0),        # text before
    ("<think>a</think><answer>1</answer> thanks", 0.0),       # text after
    ("<think>a</think> so <answer>1</answer>", 0.0),          # text between
    ("<answer>1</answer>", 0.0),                              # missing think
    ("<think>a</think><answer>1", 0.0),                       # missing closing tag
    ("<think><think>a</think></think><answer>1</answer>", 1.0),  # nested: the R1-V regex matches too
    ("<think>a</think><answer>1</answer><answer>2</answer>", 1.0),
    ("", 0.0),
    ("<think>" + "a" * 100_000 + "</think><answer>1</answer>", 1.0),
]


@pytest.mark.parametrize("text, expected", FORMAT_CASES)
def test_format_think_answer(text, expected):
    assert get_reward("format_think_answer")([text]) == [expected]
    regex = re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", text, re.DOTALL)
    assert think_answer_format(text) == float(regex is not None)  # same semantics as SPEC 2's regex


def test_boxed_format():
    assert get_reward("boxed_format")(["\\boxed{5}", "\\boxed{}", "\\boxed{5", "no box"]) == [1.0, 0.0, 0.0, 0.0]


def test_digit_reward():
    digit = get_reward("digit")
    out = digit(["<answer>3</answer>", "\\boxed{1,000}", "<answer>three</answer>", "<answer>3.0</answer>",
                 "<answer>4</answer>", "it is 3"], answer=["3", "1000", "3", "3", "3", "3"])
    assert out == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert get_reward("digit", allow_last_number=True)(["it is 3"], answer=["3"]) == [1.0]
    with pytest.raises(DataError, match=r"row 0.*'2.5' is not an integer"):
        digit(["<answer>2</answer>"], answer=["2.5"])


def test_iou_reward_cases():
    iou = get_reward("iou")
    gold = "[0, 0, 1, 1]"
    out = iou(["<answer>[0, 0, 1, 1]</answer>", "<answer>[0, 0, 0.5, 1]</answer>",
               "<answer>[0.5, 0.5, 0.75, 0.75]</answer>", "<answer>[0.1, 0.2, 0.3]</answer>",
               "<answer>[0.5, 0.5, 0.2, 0.9]</answer>", "no box"], answer=[gold] * 6)
    assert out == [1.0, 0.5, 0.0625, 0.0, 0.0, 0.0]          # identical, half, inside, malformed x3
    assert iou(["<answer>[2, 2, 3, 3]</answer>"], answer=[[0, 0, 1, 1]]) == [0.0]  # list gold, disjoint
    pixel = get_reward("iou", frame="pixel")
    assert pixel(["<answer>(0, 0, 2, 2)</answer>"], answer=["[1, 1, 3, 3]"]) == [pytest.approx(1 / 7)]


def test_iou_frame_mismatch():
    iou = get_reward("iou")
    assert iou(["<answer>[10, 10, 50, 50]</answer>"], answer=["[0.1, 0.1, 0.5, 0.5]"]) == [0.0]
    assert iou.stats["frame_mismatch"] == 1
    with pytest.raises(DataError, match="normalized"):
        iou(["<answer>[0, 0, 1, 1]</answer>"], answer=["[10, 10, 50, 50]"])
    with pytest.raises(ConfigError, match="frame"):
        get_reward("iou", frame="percent")


def _length_scorer(calls):
    def scorer(questions, answers):
        calls.append(list(answers))
        return [float(len(a)) for a in answers]
    return scorer


def test_open_rm_with_callable_exact_values():
    calls: list[list[str]] = []
    rm = get_reward("open_rm", scorer=_length_scorer(calls))
    comps = ["<answer>abcdef</answer>", "<answer>a</answer>", "<answer>ab</answer>", "no tag", "<answer>abc</answer>"]
    out = rm(comps, answer=["ab", "ab", "ab", "ab", None])
    assert out == [pytest.approx(1 - math.exp(-0.2 * 4)), 0.0, 0.0, 0.0, None]
    assert calls[0] == ["ab"]                                  # one reference score for the group
    strong = get_reward("open_rm", scorer=_length_scorer([]), beta_s=1.0)
    assert strong(["<answer>abcdef</answer>"], answer=["ab"]) == [pytest.approx(1 - math.exp(-4))]
    assert relative_reward(1.0, 3.0) == 0.0
    with pytest.raises(ConfigError, match="scorer"):
        get_reward("open_rm")


def test_open_rm_with_tiny_random_model():
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)} | {"<pad>": len(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, num_labels=1, pad_token_id=len(alphabet))
    model = LlamaForSequenceClassification(cfg).eval()
    rm = get_reward("open_rm", scorer=model, tokenizer=tokenizer)
    preds = ["a cat on a mat", "two dogs", "x"]
    out = rm([f"<answer>{p}</answer>" for p in preds], answer=["a cat"] * 3, question=["what?"] * 3)
    with torch.no_grad():
        def s(text):
            return float(model(**tokenizer([text], return_tensors="pt")).logits[0, 0])
        expected = [relative_reward(s(f"what?\n{p}"), s("what?\na cat")) for p in preds]
    assert out == pytest.approx(expected, abs=1e-5)
    assert all(0.0 <= v < 1.0 for v in out)


def test_registry_names_and_listing():
    assert set(REWARDS.names()) == {"math", "format_think_answer", "accuracy_format", "boxed_format",
                                    "mcq", "digit", "iou", "open_rm", "mixed", "overlong"}
    rows = {name: (params, doc) for name, params, doc in describe_rewards()}
    assert rows["iou"][0] == "frame='normalized'"
    assert "[frame='normalized']" in REWARDS.describe("iou")   # `duotune list` shows the parameters
    with pytest.raises(UnknownNameError, match="did you mean 'math'"):
        get_reward("maths")
    with pytest.raises(ConfigError, match="takes: frame='normalized'"):
        get_reward("iou", fram="pixel")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        def length_reward(completions, scale=1.0, **kw):
            return [scale * len(c) for c in completions]

        def compute_score(data_source, solution_str, ground_truth, extra_info=None):
            return 1.0 if ground_truth in solution_str else 0.0

        def compute_score_dict(data_source, solution_str, ground_truth, extra_info=None):
            return {"score": float(len(data_source)), "acc": 1.0}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


def test_user_function_by_import_path(user_module):
    assert get_reward("my_rewards:length_reward")(["ab", "abc"]) == [2.0, 3.0]
    assert get_reward("my_rewards.length_reward", scale=2.0)(["ab"]) == [4.0]
    assert validate_reward_name("my_rewards:length_reward") == "my_rewards:length_reward"
    with pytest.raises(ConfigError, match="could not be imported"):
        get_reward("my_rewards:nope")


def test_verl_compute_score_adapter(user_module):
    verl = get_reward("verl:my_rewards.compute_score")
    assert verl(["it is 42", "it is 41"], answer=["42", "42"]) == [1.0, 0.0]
    by_source = get_reward("verl:my_rewards:compute_score_dict")
    assert by_source(["x", "y"], answer=["1", "2"], data_source=["gsm8k", "math"]) == [5.0, 4.0]
