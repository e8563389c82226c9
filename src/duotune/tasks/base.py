"""Task registry, parameter specs, split-disjoint seeding, and the rows -> `Example` / JSONL + PNG writers.

A task is a `TaskSpec` whose `draw(rng, params)` returns one candidate item; this module turns
candidates into deterministic, de-duplicated, train/test-disjoint datasets.
Imports PIL, `duotune.data.example`, `duotune.errors`, `duotune.registry` only (no torch, no models).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from duotune import jsonl
from duotune.data.example import Example
from duotune.errors import ConfigError, UnknownNameError
from duotune.registry import Registry

SPLITS = ("train", "test")
# Share of every task's item space reserved for the test split (by a hash of the item's content key).
TEST_FRACTION = 0.25
MAX_TRIES = 20_000  # draws per item before the item space counts as exhausted (the last of
# 1,280 items is missed with probability exp(-20000/1280) ~ 2e-7)
# Row fields that become Example fields rather than meta (the same set the generic JSONL loader uses).
_EXAMPLE_FIELDS = ("id", "prompt", "question", "answer", "demo", "reward_type", "image")


@dataclass(frozen=True)
class Param:
    """One task parameter: its default, one line of help, and the allowed values (None: any of its type).

    multi: the value is a list drawn from `choices` (a comma-separated string is accepted too).
    """

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    multi: bool = False
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Candidate:
    """One drawn item: its JSON-safe row fields, its content key and (vision) a lazy image renderer.

    key: the item's content (e.g. "arith:7*8+13"); it decides the split and de-duplication, so two
        draws with the same key are the same item whatever their random rendering details.
    """

    row: dict[str, Any]
    key: str
    render: Callable[[], Image.Image] | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A registered generator: `draw(rng, params) -> Candidate`, its parameters, and its few-shot support."""

    name: str
    draw: Callable[[random.Random, dict[str, Any]], Candidate]
    params: dict[str, Param]
    help: str
    vision: bool = False
    check: Callable[[dict[str, Any]], None] | None = None  # cross-parameter validation


tasks: Registry[TaskSpec] = Registry("task")

COMMON_PARAMS = {
    "unique": Param(True, "no two rows of one call share an item (content key); an exhausted item space "
                          "raises an error naming the limit"),
}


def register_task(spec: TaskSpec) -> TaskSpec:
    tasks.register(spec.name, spec, help=spec.help)
    return spec


def task_params(task: str) -> dict[str, Param]:
    """Every parameter `task` accepts (name -> Param with default and help), for the CLI's help."""
    return {**tasks.get(task).params, **COMMON_PARAMS}


def resolve_params(task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, types checked and coerced; unknown names and bad values raise `ConfigError`."""
    spec, allowed = tasks.get(task), task_params(task)
    out = {}
    for name, value in params.items():
        if name not in allowed:
            raise UnknownNameError(f"{task} parameter", name, allowed)
        out[name] = _coerce(task, name, allowed[name], value)
    resolved = {k: out.get(k, list(p.default) if p.multi else p.default) for k, p in allowed.items()}
    if spec.check is not None:
        spec.check(resolved)
    return resolved


def _coerce(task: str, name: str, p: Param, value: Any) -> Any:
    where = f"{task} parameter {name}={value!r}"
    if p.multi:
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items or any(v not in p.choices for v in items):
            raise ConfigError(f"{where}: give one or more of {', '.join(p.choices)} (comma-separated)")
        return list(dict.fromkeys(items))
    kind = type(p.default)
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false")
    elif kind in (int, float):
        if isinstance(value, str):
            try:
                value = kind(value)
            except ValueError:
                raise ConfigError(f"{where}: must be a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (kind is int and not float(value).is_integer()):
            raise ConfigError(f"{where}: must be {'an integer' if kind is int else 'a number'}")
        value = kind(value)
        if (p.low is not None and value < p.low) or (p.high is not None and value > p.high):
            raise ConfigError(f"{where}: must be between {p.low:g} and {p.high:g}")
    if p.choices is not None and value not in p.choices:
        raise ConfigError(f"{where}: must be one of {', '.join(map(str, p.choices))}")
    return value


def item_rng(task: str, stream: str, seed: int, index: int) -> random.Random:
    """The random stream of item `index`: seeded by the string 'duotune/<task>/<stream>/<seed>/<index>'.

    Python seeds `random.Random` from a str through SHA-512 (stable across runs and platforms), so
    `stream` ("train", "test", "fewshot") puts every split on its own seed stream: no item of one split
    is ever drawn from a seed of another.
    """
    return random.Random(f"duotune/{task}/{stream}/{seed}/{index}")


def split_of(key: str) -> str:
    """The split an item's content belongs to: 'test' for a fixed TEST_FRACTION of keys (by SHA-256).

    Disjoint seed streams alone cannot stop a small item space (1,280 level-1 `a*b+c` questions) from
    drawing the same question in both splits; partitioning by content makes that impossible: a
    candidate whose key hashes to the other split is redrawn.
    """
    digest = hashlib.sha256(f"duotune-split/{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") < TEST_FRACTION * 2 ** 64 else "train"


def draw_items(task: str, n: int, seed: int, split: str, params: dict[str, Any], *, stream: str | None = None,
               exclude: frozenset[str] = frozenset()) -> list[Candidate]:
    """`n` candidates of `split`, item i drawn from its own stream; keys in `exclude` are never used."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n={n!r} must be a non-negative integer (the number of rows)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed={seed!r} must be an integer")
    spec, seen, out = tasks.get(task), set(exclude), []
    for i in range(n):
        rng = item_rng(task, stream or split, seed, i)
        for _ in range(MAX_TRIES):
            cand = spec.draw(rng, params)
            if split_of(cand.key) == split and cand.key not in seen:
                break
        else:
            raise ConfigError(f"task {task!r} ran out of distinct {split} items after {i} rows with "
                              f"{_show(params)}; ask for fewer rows (n), pick a larger item space "
                              "(e.g. a higher level) or pass unique=false")
        if params["unique"]:
            seen.add(cand.key)
        out.append(cand)
    return out


def _show(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "default parameters"


def make_rows(task: str, n: int, seed: int, split: str = "train",
              **params: Any) -> list[tuple[dict[str, Any], Image.Image | None]]:
    """`n` rows of `task` with their images (None for text tasks), deterministic in (task, n, seed, split,
    params). Rows carry id, image (vision), question, answer, reward_type, demo, and scene metadata."""
    spec, p = tasks.get(task), resolve_params(task, params)
    messages, shot_keys = _fewshot(task, p.get("fewshot", 0), seed, p)
    out = []
    for i, cand in enumerate(draw_items(task, n, seed, split, p, exclude=shot_keys)):
        rid = f"{task}-{split}-s{seed}-{i:05d}"
        row: dict[str, Any] = {"id": rid}
        if spec.vision:
            row["image"] = f"images/{rid}.png"
        row.update(cand.row)
        if messages:
            row["prompt"] = [*messages, {"role": "user", "content": cand.row["question"]}]
        row.update(task=task, split=split, seed=seed, key=cand.key, params=p)
        out.append((row, cand.render() if cand.render is not None else None))
    return out


def fewshot_messages(task: str, k: int, seed: int, **params: Any) -> list[dict[str, str]]:
    """K worked examples of `task` as earlier chat turns: [user question, assistant demo] * K.

    Drawn from the "fewshot" seed stream (never an item stream) and from train-split content only, so a
    shot is never a test item; `make_rows` also keeps every shot's item out of its rows.
    """
    return _fewshot(task, k, seed, resolve_params(task, params))[0]


def _fewshot(task: str, k: int, seed: int, p: dict[str, Any]) -> tuple[list[dict[str, str]], frozenset[str]]:
    if not k:
        return [], frozenset()
    if tasks.get(task).vision:
        raise ConfigError(f"task {task!r} shows images; few-shot chat turns are for text tasks only")
    shots = draw_items(task, k, seed, "train", {**p, "unique": True}, stream="fewshot")
    messages = []
    for cand in shots:
        messages += [{"role": "user", "content": cand.row["question"]},
                     {"role": "assistant", "content": cand.row["demo"]}]
    return messages, frozenset(c.key for c in shots)


def row_to_example(row: dict[str, Any], image: Image.Image | None = None) -> Example:
    """The `Example` a row stands for; the same one `load_examples(data.jsonl)` builds from the written row
    (few-shot rows: their `prompt` chat; vision rows: an image part before the question text)."""
    if row.get("prompt"):
        prompt = [dict(m) for m in row["prompt"]]
    elif image is not None:
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["question"]}]}]
    else:
        prompt = [{"role": "user", "content": row["question"]}]
    meta = {k: v for k, v in row.items() if k not in _EXAMPLE_FIELDS}
    return Example(id=row["id"], prompt=prompt, answer=row["answer"], demo=row.get("demo"),
                   reward_type=row.get("reward_type"), images=[image] if image is not None else [], meta=meta)


def make_examples(task: str, n: int, seed: int, split: str = "train", **params: Any) -> list[Example]:
    """`n` Examples of `task` (images as in-memory RGB PIL images), deterministic by seed."""
    return [row_to_example(row, image) for row, image in make_rows(task, n, seed, split, **params)]


def write_task(task: str, n: int, seed: int, out_dir: str | Path, split: str = "train",
               **params: Any) -> Path:
    """Write `out_dir/data.jsonl` (one row per line) and, for vision tasks, `out_dir/images/<id>.png`;
    return the data.jsonl path. Row `image` paths are relative to `out_dir`."""
    rows = make_rows(task, n, seed, split, **params)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for row, image in rows:
        if image is not None:
            (out / row["image"]).parent.mkdir(exist_ok=True)
            image.save(out / row["image"], format="PNG")
    path = out / "data.jsonl"
    jsonl.write_rows(path, (row for row, _ in rows), ensure_ascii=False)
    return path
