"""Prompt styles (registry `prompt_style`), demonstration rendering and chat-template rendering.

A style says which system prompt a chat gets, what instruction is appended to the user turn, and
how a demonstration becomes the assistant turn. Imports `duotune.errors`/`duotune.registry` only
(tokenizers and processors are duck-typed: anything with `apply_chat_template`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from duotune.errors import ConfigError, DataError
from duotune.registry import Registry

# DeepSeek-R1's evaluation instruction, also used by Qwen2.5-Math and SimpleRL for boxed answers.
BOXED_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
# R1-V's QUESTION_TEMPLATE, reused by OThink-MR1 (SPEC 2): "{Question}  Output the thinking ...".
THINK_ANSWER_SUFFIX = ("Output the thinking process in <think> </think> and final answer (number) "
                       "in <answer> </answer> tags.")
# The R1-Zero system prompt (DeepSeek-R1 paper, Table 1) that VLAA-Thinking's GRPO uses (SPEC 3).
R1_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer here "
    "</answer>")
# LUFFY's system prompt, verbatim from its parquet rows (ElliottYan/LUFFY data/*.parquet).
LUFFY_SYSTEM_PROMPT = (
    "Your task is to follow a systematic, thorough reasoning process before providing the final solution. "
    "This involves analyzing, summarizing, exploring, reassessing, and refining your thought process "
    "through multiple iterations. Structure your response into two sections: Thought and Solution. In the "
    "Thought section, present your reasoning using the format: \"<think>\n {thoughts} </think>\n\". Each "
    "thought should include detailed analysis, brainstorming, verification, and refinement of ideas. After "
    "\"</think>\n,\" in the Solution section, provide the final, logical, and accurate answer, clearly "
    "derived from the exploration in the Thought section. If applicable, include the answer in \\boxed{} "
    "for closed-form results like multiple choices or mathematical solutions.")

# SPEC 2: R_format = 1 iff the whole completion is <think>...</think> whitespace <answer>...</answer>.
_THINK_ANSWER_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_THINK_TAG_RE = re.compile(r"</?think>")


@dataclass(frozen=True)
class PromptStyle:
    """How a chat is dressed for one prompt convention.

    keep_row_system: keep a system message the row already has (else it is dropped, so one style
        gives the same prompt whatever the source).
    system: system prompt to add when the chat has none after that step (None: add nothing).
    suffix / separator: instruction appended to the last user turn as `text + separator + suffix`.
    demo_format: "plain" keeps demonstrations as they are; "think_answer" wraps them (see render_demo).
    """

    name: str
    keep_row_system: bool = False
    system: str | None = None
    suffix: str | None = None
    separator: str = "\n"
    demo_format: str = "plain"


prompt_styles: Registry[PromptStyle] = Registry("prompt_style")
prompt_styles.register("boxed", PromptStyle("boxed", suffix=BOXED_SUFFIX),
                       help="user suffix asking for step-by-step reasoning and a final \\boxed{} answer")
prompt_styles.register("think_answer", PromptStyle("think_answer", suffix=THINK_ANSWER_SUFFIX,
                                                   separator="  ", demo_format="think_answer"),
                       help="R1-V/OThink-MR1 user suffix: <think> </think> then <answer> </answer>")
prompt_styles.register("vlaa", PromptStyle("vlaa", system=R1_SYSTEM_PROMPT, demo_format="think_answer"),
                       help="VLAA-Thinking/R1 system prompt asking for <think> </think><answer> </answer>")
prompt_styles.register("luffy", PromptStyle("luffy", keep_row_system=True, system=LUFFY_SYSTEM_PROMPT),
                       help="keep the row's own system prompt; rows without one get LUFFY's")
prompt_styles.register("none", PromptStyle("none", keep_row_system=True),
                       help="leave the chat exactly as the row gives it")


def get_prompt_style(style: str | PromptStyle) -> PromptStyle:
    """A registered style by name (unknown names list the valid ones), or a `PromptStyle` as is."""
    return style if isinstance(style, PromptStyle) else prompt_styles.get(style)


def apply_prompt_style(messages: list[dict[str, Any]], style: str | PromptStyle,
                       system_prompt: str | None = None) -> list[dict[str, Any]]:
    """Return a new chat with `style` applied; `system_prompt`, when given, replaces any system turn.

    The suffix goes on the last user turn (on its last text part for multimodal content) and is not
    added twice when the turn already ends with it.
    """
    st = get_prompt_style(style)
    msgs = [_copy_message(m) for m in messages]
    if not st.keep_row_system:
        msgs = [m for m in msgs if m.get("role") != "system"]
    if st.system is not None and not any(m.get("role") == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": st.system})
    if st.suffix:
        users = [m for m in msgs if m.get("role") == "user"]
        if not users:
            raise DataError(f"prompt style {st.name!r} appends to the user turn, but the chat has none",
                            field="prompt")
        users[-1]["content"] = _append_text(users[-1]["content"], st.suffix, st.separator)
    if system_prompt is not None:
        msgs = [m for m in msgs if m.get("role") != "system"]
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def render_demo(demo_text: str, style: str | PromptStyle, *, answer: str | None = None) -> str:
    """The assistant turn a demonstration becomes under `style`.

    "plain" styles (boxed, luffy, none) return the text unchanged: their rewards read the last
    \\boxed{} wherever it is. "think_answer" styles (think_answer, vlaa) return the text unchanged when
    it already is `<think>...</think> <answer>...</answer>`; otherwise all of it (any stray think tags
    removed) becomes the thinking, and the answer is the demo's last \\boxed{} content, else `answer`:
    `<think>\\n{text}\\n</think>\\n<answer>{answer}</answer>`. With neither, a `DataError` is raised.
    """
    st = get_prompt_style(style)
    if st.demo_format == "plain" or _THINK_ANSWER_RE.fullmatch(demo_text):
        return demo_text
    final = last_boxed(demo_text)
    if final is None:
        final = answer
    if final is None:
        raise DataError(f"prompt style {st.name!r} needs a final answer for the demonstration's "
                        "<answer> tag: the demo has no \\boxed{} and the row no answer", field="demo")
    thinking = _THINK_TAG_RE.sub("", demo_text).strip()
    return f"<think>\n{thinking}\n</think>\n<answer>{final}</answer>"


def render_chat(tokenizer_or_processor: Any, messages: list[dict[str, Any]],
                add_generation_prompt: bool = True) -> str:
    """The chat rendered to text by the model's own chat template (tokenizer or processor).

    For a plain tokenizer, text-only part lists are joined into one string (text chat templates
    expect strings); image parts need a processor.
    """
    template = getattr(tokenizer_or_processor, "chat_template", None)
    if not template:
        name = getattr(tokenizer_or_processor, "name_or_path", "") or type(tokenizer_or_processor).__name__
        raise ConfigError(f"{name} has no chat template; use an instruction-tuned model or set "
                          "`tokenizer.chat_template` to a Jinja template before rendering prompts")
    is_processor = hasattr(tokenizer_or_processor, "image_processor")
    if not is_processor:
        messages = [_flatten_for_text(m) for m in messages]
    text = tokenizer_or_processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return text if isinstance(text, str) else text[0]


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, nested braces included; else None."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    return None


def _copy_message(message: dict[str, Any]) -> dict[str, Any]:
    out = dict(message)
    if isinstance(out.get("content"), list):
        out["content"] = [dict(p) if isinstance(p, dict) else p for p in out["content"]]
    return out


def _append_text(content: Any, suffix: str, separator: str) -> Any:
    if isinstance(content, str):
        return content if content.endswith(suffix) else content + separator + suffix
    texts = [p for p in content if p.get("type") == "text"]
    if not texts:
        return content + [{"type": "text", "text": suffix}]
    if not texts[-1]["text"].endswith(suffix):
        texts[-1]["text"] = texts[-1]["text"] + separator + suffix
    return content


def _flatten_for_text(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, list):
        return message
    if any(p.get("type") != "text" for p in content):
        raise ConfigError("the prompt has image parts but the model has a plain tokenizer; "
                          "use a vision-language model (its processor renders images)")
    return {**message, "content": "".join(p["text"] for p in content)}
