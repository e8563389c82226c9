"""Prompt styles, demo rendering and chat-template rendering give exact strings."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from duotune.data import (
    LUFFY_SYSTEM_PROMPT,
    R1_SYSTEM_PROMPT,
    apply_prompt_style,
    last_boxed,
    prompt_styles,
    render_chat,
    render_demo,
)
from duotune.errors import ConfigError, DataError, UnknownNameError
from duotune.paths import data_dir

CHAT = [{"role": "system", "content": "row system"}, {"role": "user", "content": "What is 2+3?"}]
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def make_tokenizer(template: str | None = TEMPLATE) -> PreTrainedTokenizerFast:
    vocab = models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(vocab))
    tok.chat_template = template
    return tok


def test_registered_styles():
    assert prompt_styles.names() == ["boxed", "luffy", "none", "think_answer", "vlaa"]
    with pytest.raises(UnknownNameError, match="did you mean 'boxed'"):
        apply_prompt_style(CHAT, "boxd")


def test_boxed_and_think_answer_exact():
    assert apply_prompt_style(CHAT, "boxed") == [{"role": "user", "content": (
        "What is 2+3?\nPlease reason step by step, and put your final answer within \\boxed{}.")}]
    assert apply_prompt_style(CHAT, "think_answer") == [{"role": "user", "content": (
        "What is 2+3?  Output the thinking process in <think> </think> and final answer (number) "
        "in <answer> </answer> tags.")}]
    assert apply_prompt_style(CHAT, "vlaa") == [{"role": "system", "content": R1_SYSTEM_PROMPT},
                                                {"role": "user", "content": "What is 2+3?"}]
    assert R1_SYSTEM_PROMPT.startswith("A conversation between User and Assistant.")


def test_luffy_none_and_system_override():
    assert apply_prompt_style(CHAT, "luffy") == CHAT
    luffy_system = {"role": "system", "content": LUFFY_SYSTEM_PROMPT}
    assert apply_prompt_style(CHAT[1:], "luffy") == [luffy_system, CHAT[1]]
    assert apply_prompt_style(CHAT, "none") == CHAT
    assert apply_prompt_style(CHAT, "boxed", system_prompt="S")[0] == {"role": "system", "content": "S"}
    assert apply_prompt_style(CHAT, "none", system_prompt="S") == [
        {"role": "system", "content": "S"}, CHAT[1]]


def test_luffy_system_prompt_is_verbatim():
    row = pq.read_table(data_dir() / "luffy_math_eval" / "valid.all.parquet").slice(0, 1).to_pylist()[0]
    assert row["prompt"][0]["content"] == LUFFY_SYSTEM_PROMPT


def test_suffix_idempotent_input_untouched_and_multimodal():
    once = apply_prompt_style(CHAT, "boxed")
    assert apply_prompt_style(once, "boxed") == once
    assert CHAT[1]["content"] == "What is 2+3?"
    mm = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count."}]}]
    assert apply_prompt_style(mm, "boxed")[0]["content"] == [
        {"type": "image"}, {"type": "text", "text": "Count.\nPlease reason step by step, and put your final "
                                                    "answer within \\boxed{}."}]
    assert mm[0]["content"][1]["text"] == "Count."
    with pytest.raises(DataError, match="the chat has none"):
        apply_prompt_style([{"role": "system", "content": "s"}], "think_answer")


def test_render_demo():
    demo = "2+3 = 5.\nThe final answer is \\boxed{5}."
    assert render_demo(demo, "boxed") == demo and render_demo(demo, "luffy") == demo
    assert render_demo(demo, "think_answer") == \
        "<think>\n2+3 = 5.\nThe final answer is \\boxed{5}.\n</think>\n<answer>5</answer>"
    done = "<think>add</think> <answer>5</answer>"
    assert render_demo(done, "vlaa") == done
    assert render_demo("<think>\nadd them\n</think>\nSo 5.", "think_answer", answer="5") == \
        "<think>\nadd them\n\nSo 5.\n</think>\n<answer>5</answer>"
    with pytest.raises(DataError, match="needs a final answer"):
        render_demo("no answer", "think_answer")


def test_last_boxed():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{a}{b^{2}}} c") == "\\frac{a}{b^{2}}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed{unclosed") is None and last_boxed("none") is None


def test_render_chat_uses_template():
    tok = make_tokenizer()
    assert render_chat(tok, CHAT) == "<|system|>row system\n<|user|>What is 2+3?\n<|assistant|>"
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
             {"role": "assistant", "content": "c"}]
    assert render_chat(tok, parts, add_generation_prompt=False) == "<|user|>ab\n<|assistant|>c\n"
    with pytest.raises(ConfigError, match="plain tokenizer"):
        render_chat(tok, [{"role": "user", "content": [{"type": "image"}]}])
    with pytest.raises(ConfigError, match="has no chat template"):
        render_chat(make_tokenizer(None), CHAT)
