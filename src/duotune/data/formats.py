"""Row formats (registry `data_format`): turn one source row into an `Example`, or say which field is wrong.

verl/LUFFY parquet rows, GSM8K rows, MATH-style rows, TRL's conversational `messages` rows and generic
rows (incl. TRL's prompt-completion and prompt-only rows); `detect_format` picks one from a row's
fields. Imports `duotune.data.images`/`templates`, `duotune.errors`, `duotune.registry`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duotune.data.example import Example
from duotune.data.images import load_image
from duotune.data.templates import last_boxed
from duotune.errors import DataError
from duotune.registry import Registry

ID_FIELDS = ("id", "idx", "unique_id", "question_id")
_CALCULATOR_RE = re.compile(r"<<.*?>>")  # GSM8K calculator annotations, e.g. <<48/2=24>>
_GSM8K_FINAL_RE = re.compile(r"\n?####\s*(.+?)\s*$")


@dataclass(frozen=True)
class RowContext:
    """Where a row came from (for ids and errors) and how to treat its images."""

    file: str
    row: int  # 1-based: the line number for JSONL, the row position otherwise
    stem: str
    base_dir: Path | None = None
    decode_images: bool = True
    max_image_side: int | None = None

    def error(self, message: str, field: str | None = None) -> DataError:
        return DataError(message, file=self.file, row=self.row, field=field)


Converter = Callable[[Mapping[str, Any], RowContext], Example]
data_formats: Registry[Converter] = Registry("data_format")


def detect_format(row: Mapping[str, Any], ctx: RowContext) -> str:
    """The registered format a row's fields match; a DataError listing the fields when none does."""
    if isinstance(row.get("prompt"), (list, tuple)) and "reward_model" in row:
        return "verl"
    if isinstance(row.get("question"), str) and isinstance(row.get("answer"), str) \
            and "####" in row["answer"] and "prompt" not in row:
        return "gsm8k"
    if "problem" in row or "final_answer" in row:
        return "math"
    if "messages" in row and "prompt" not in row:
        return "messages"
    if "prompt" in row or "question" in row:
        return "generic"
    raise ctx.error(f"cannot tell the row format from its fields {sorted(row)}; expected verl (prompt "
                    "chat list + reward_model), gsm8k (question + answer ending '#### N'), math "
                    "(problem + answer/solution), messages (TRL conversational: a chat ending in the "
                    "assistant's answer) or generic (prompt or question, with answer and/or a demo or "
                    f"TRL completion, or prompt alone for RL); or pass format= one of {data_formats.names()}")


@data_formats.register("verl")
def verl_row(row: Mapping[str, Any], ctx: RowContext) -> Example:
    """verl/LUFFY RL row: prompt chat list, reward_model.ground_truth, optional target demo list."""
    prompt = [_message(m, ctx, "prompt") for m in _require(row, "prompt", (list, tuple), ctx)]
    prompt = [m for m in prompt if m["role"] in ("system", "user")]
    if not any(m["role"] == "user" for m in prompt):
        raise ctx.error("the chat has no user message", "prompt")
    reward_model = _require(row, "reward_model", Mapping, ctx)
    gold = reward_model.get("ground_truth")
    if gold is None:
        raise ctx.error("missing reward_model.ground_truth (the gold answer)", "reward_model.ground_truth")
    meta = {k: row[k] for k in ("data_source", "ability", "extra_info") if row.get(k) is not None}
    return Example(id=_row_id(row, ctx), prompt=prompt, answer=_gold_str(gold, ctx, "reward_model"),
                   demo=_verl_demo(row.get("target"), ctx), meta=meta)


@data_formats.register("gsm8k")
def gsm8k_row(row: Mapping[str, Any], ctx: RowContext) -> Example:
    """GSM8K row: demo = worked solution without <<calc>> notes and with `#### N` -> `\\boxed{N}`."""
    question = _require(row, "question", str, ctx)
    solution = _require(row, "answer", str, ctx)
    match = _GSM8K_FINAL_RE.search(solution)
    if match is None:
        raise ctx.error("a GSM8K solution must end with '#### <final answer>'", "answer")
    gold = match.group(1).replace(",", "")
    steps = _CALCULATOR_RE.sub("", solution[:match.start()]).rstrip()
    demo = f"{steps}\nThe final answer is \\boxed{{{gold}}}." if steps else f"\\boxed{{{gold}}}"
    meta = {k: v for k, v in row.items() if k not in ("question", "answer", *ID_FIELDS)}
    return Example(id=_row_id(row, ctx), prompt=[{"role": "user", "content": question}],
                   answer=gold, demo=demo, meta=meta)


@data_formats.register("math")
def math_row(row: Mapping[str, Any], ctx: RowContext) -> Example:
    """MATH-style row: problem, solution -> demo, answer (else the solution's last \\boxed{}).

    OlympiadBench rows (question, list-valued final_answer and solution) are read too, lists joined.
    """
    key = "problem" if "problem" in row else "question"
    problem = _require(row, key, str, ctx)
    solution = row.get("solution")
    if isinstance(solution, (list, tuple)):
        solution = "\n\n".join(str(s) for s in solution)
    if solution is not None and not isinstance(solution, str):
        raise ctx.error(f"must be a string, not {type(solution).__name__}", "solution")
    gold = next((row[k] for k in ("answer", "final_answer") if row.get(k) is not None), None)
    if isinstance(gold, (list, tuple)):
        gold = ", ".join(str(g) for g in gold)
    if gold is None and solution:
        gold = last_boxed(solution)
    if gold is None:
        raise ctx.error("no gold answer: give an 'answer' field or a solution ending in \\boxed{...}",
                        "answer")
    used = {"problem", "question", "solution", "answer", "final_answer", *ID_FIELDS}
    meta = {k: v for k, v in row.items() if k not in used}
    return Example(id=_row_id(row, ctx), prompt=[{"role": "user", "content": problem}],
                   answer=_gold_str(gold, ctx, "answer"), demo=solution or None, meta=meta)


@data_formats.register("messages")
def messages_row(row: Mapping[str, Any], ctx: RowContext) -> Example:
    """TRL's conversational language-modeling row: `messages`, a chat whose last turn is the assistant's
    answer (the demonstration); the turns before it are the prompt. The gold is `answer` when given, else
    the demo's last \\boxed{}; other columns (e.g. images, solution) are kept as reward columns."""
    chat = [_message(m, ctx, "messages") for m in _require(row, "messages", (list, tuple), ctx)]
    if not chat or chat[-1]["role"] != "assistant":
        raise ctx.error("the last message must be the assistant's answer (the demonstration)", "messages")
    prompt, demo = chat[:-1], _text_of(chat[-1])
    if not any(m["role"] == "user" for m in prompt):
        raise ctx.error("the chat has no user message before the assistant's answer", "messages")
    images = _images(row, ctx)
    gold = row.get("answer")
    used = {"messages", "answer", "reward_type", "image", "images", *ID_FIELDS}
    return Example(id=_row_id(row, ctx), prompt=_attach_images(prompt, len(images), ctx),
                   answer=_gold_str(gold, ctx, "answer") if gold is not None else last_boxed(demo),
                   demo=demo, reward_type=row.get("reward_type"), images=images,
                   meta={k: v for k, v in row.items() if k not in used})


def _text_of(message: dict[str, Any]) -> str:
    """The text of a message (its text parts joined when the content is a list of parts)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


def _completion_demo(value: Any, ctx: RowContext) -> str:
    """TRL's `completion`: the text (standard) or the assistant message(s) (conversational)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, (list, tuple)) or not value:
        raise ctx.error(f"must be a string or a list of chat messages, not {type(value).__name__}", "completion")
    chat = [_message(m, ctx, "completion") for m in value]
    answers = [m for m in chat if m["role"] == "assistant"]
    if not answers:
        raise ctx.error("a conversational completion needs an assistant message", "completion")
    return _text_of(answers[-1])


@data_formats.register("generic")
def generic_row(row: Mapping[str, Any], ctx: RowContext) -> Example:
    """Generic row: prompt (str or chat list) or question, answer, optional demo/reward_type/images.

    TRL's prompt-completion rows (standard or conversational) give the demo as `completion` (the gold
    is then its last \\boxed{} unless `answer` is given); a prompt-only row (no answer, no demo) is an
    RL prompt whose rewards read other columns. `options` become lettered `A) ...` lines and reward_type
    defaults to mcq; image/images are decoded with `load_image` and matched to image parts."""
    if row.get("prompt") is not None:
        raw = row["prompt"]
        if isinstance(raw, str):
            prompt = [{"role": "user", "content": raw}]
        elif isinstance(raw, (list, tuple)):
            prompt = [_message(m, ctx, "prompt") for m in raw]
        else:
            raise ctx.error(f"must be a string or a list of chat messages, not {type(raw).__name__}",
                            "prompt")
    elif row.get("question") is not None:
        prompt = [{"role": "user", "content": _require(row, "question", str, ctx)}]
    else:
        raise ctx.error("missing: give a 'prompt' (string or chat list) or a 'question'", "prompt")
    demo = row.get("demo")
    if demo is not None and not isinstance(demo, str):
        raise ctx.error(f"must be a string, not {type(demo).__name__}", "demo")
    completion = None if row.get("completion") is None else _completion_demo(row["completion"], ctx)
    reward_type = row.get("reward_type")
    if reward_type is not None and not isinstance(reward_type, str):
        raise ctx.error(f"must be a string, not {type(reward_type).__name__}", "reward_type")
    options = row.get("options")
    if options is not None:
        prompt = _with_options(prompt, options, ctx)
        reward_type = reward_type or "mcq"
    images = _images(row, ctx)
    used = {"prompt", "question", "answer", "demo", "completion", "reward_type", "image", "images", *ID_FIELDS}
    meta = {k: v for k, v in row.items() if k not in used}
    gold = None if row.get("answer") is None else _gold_str(row["answer"], ctx, "answer")
    if gold is None and demo is None and completion is not None:
        gold = last_boxed(completion)
    return Example(id=_row_id(row, ctx), prompt=_attach_images(prompt, len(images), ctx), answer=gold,
                   demo=demo if demo is not None else completion, reward_type=reward_type, images=images,
                   meta=meta)


def _require(row: Mapping[str, Any], key: str, kind: Any, ctx: RowContext) -> Any:
    if row.get(key) is None:
        raise ctx.error("missing", key)
    if not isinstance(row[key], kind):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ctx.error(f"must be {want}, not {type(row[key]).__name__}", key)
    return row[key]


def _message(m: Any, ctx: RowContext, field: str) -> dict[str, Any]:
    """A chat message with role and content (None-valued keys of parquet structs dropped)."""
    if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
        raise ctx.error("each chat message must be a dict with 'role' and 'content'", field)
    content = m.get("content")
    if isinstance(content, (list, tuple)):
        content = [{k: v for k, v in p.items() if v is not None} if isinstance(p, Mapping) else p
                   for p in content]
        if not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content):
            raise ctx.error("content parts must be dicts with a 'type'", field)
    elif not isinstance(content, str):
        raise ctx.error(f"message content must be a string or a list of parts, not "
                        f"{type(content).__name__}", field)
    return {"role": m["role"], "content": content}


def _verl_demo(target: Any, ctx: RowContext) -> str | None:
    """LUFFY's off-policy trace: the first entry of `target` ({role, content} dicts or strings)."""
    if target is None or (isinstance(target, str) and not target):
        return None
    if not isinstance(target, (str, Mapping, list, tuple)):
        raise ctx.error(f"must be a list of demonstrations, not {type(target).__name__}", "target")
    if isinstance(target, (list, tuple)) and not target:
        return None
    first = target if isinstance(target, (str, Mapping)) else target[0]
    text = first.get("content") if isinstance(first, Mapping) else first
    if not isinstance(text, str):
        raise ctx.error("must hold strings or {role, content} messages with string content", "target")
    return text


def _gold_str(gold: Any, ctx: RowContext, field: str) -> str:
    """Gold answers are strings; integral floats (AMC's 27.0) become '27'."""
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
        raise ctx.error(f"the gold answer must be a string or number, not {type(gold).__name__}", field)
    if isinstance(gold, float) and gold.is_integer():
        return str(int(gold))
    return str(gold).strip()


def _row_id(row: Mapping[str, Any], ctx: RowContext) -> str:
    for key in ID_FIELDS:
        if row.get(key) is not None:
            return str(row[key])
    return f"{ctx.stem}:{ctx.row}"


def _with_options(prompt: list[dict[str, Any]], options: Any, ctx: RowContext) -> list[dict[str, Any]]:
    """Append `A) ...` lines to the last user turn, in the layout of LUFFY's ARC rows."""
    if not isinstance(options, (list, tuple)) or not options or len(options) > 26:
        raise ctx.error("must be a list of 1 to 26 option strings", "options")
    lines = "\n".join(f"{chr(65 + i)}) {o}" for i, o in enumerate(options))
    user = next((m for m in reversed(prompt) if m["role"] == "user"), None)
    if user is None or not isinstance(user["content"], str):
        raise ctx.error("options need a plain-text user turn to append to", "options")
    user["content"] = f"{user['content']}\n\n{lines}"
    return prompt


def _images(row: Mapping[str, Any], ctx: RowContext) -> list[Any]:
    field = "images" if row.get("images") is not None else "image"
    value = row.get(field)
    if value is None:
        return []
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if ctx.decode_images:
        return [load_image(v, base_dir=ctx.base_dir, file=ctx.file, row=ctx.row, field=field,
                           max_side=ctx.max_image_side) for v in values]
    return [_resolve_path(v, ctx, field) for v in values]


def _resolve_path(value: Any, ctx: RowContext, field: str) -> Any:
    """Lazy mode keeps images undecoded; a relative path is made absolute so it still resolves later."""
    if isinstance(value, str):
        path = Path(value)
        path = path if path.is_absolute() or ctx.base_dir is None else ctx.base_dir / path
        if not path.is_file():
            raise ctx.error(f"image file {str(path)!r} not found", field)
        return str(path)
    return value


def _attach_images(prompt: list[dict[str, Any]], n: int, ctx: RowContext) -> list[dict[str, Any]]:
    """Make the chat carry exactly `n` image parts: keep existing ones, else split the first user turn
    at `<image>` placeholders when there are exactly `n`, else put the images before its text."""
    parts = sum(1 for m in prompt if isinstance(m["content"], list)
                for p in m["content"] if p["type"] == "image")
    if parts or n == 0:
        if parts != n:
            raise ctx.error(f"the prompt has {parts} image parts but the row gives {n} images", "images")
        return prompt
    user = next((m for m in prompt if m["role"] == "user"), None)
    if user is None or not isinstance(user["content"], str):
        raise ctx.error("images need a plain-text user turn to attach to", "images")
    text = user["content"]
    if text.count("<image>") == n:
        pieces = text.split("<image>")
        content = [{"type": "text", "text": pieces[0]}] if pieces[0] else []
        for piece in pieces[1:]:
            content += [{"type": "image"}] + ([{"type": "text", "text": piece}] if piece else [])
    else:
        content = [{"type": "image"} for _ in range(n)] + [{"type": "text", "text": text}]
    user["content"] = content
    return prompt
