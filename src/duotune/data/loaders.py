"""`load_examples`: read JSONL / JSON / parquet files, saved or in-memory `datasets`, `hf:<name>` and
`shared:<path>` sources into `Example`s, applying a prompt style.

Imports pyarrow and (lazily) `datasets`; no models, no torch.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from duotune.data.example import Example
from duotune.data.formats import RowContext, data_formats, detect_format
from duotune.data.templates import apply_prompt_style, prompt_styles, render_demo
from duotune.errors import ConfigError, DataError
from duotune.jsonl import decode_text
from duotune.paths import data_dir

_SAVED_DATASET_FILES = ("dataset_dict.json", "state.json", "dataset_info.json")


@dataclass
class _Rows:
    """Rows of one source, fetched by 0-based position; `number(i)` is what errors call the row."""

    label: str  # file path or dataset name, for errors
    stem: str  # prefix of generated ids
    base_dir: Path | None
    count: int
    fetch: Callable[[list[int]], list[Any]]
    numbers: Sequence[int] | None = None  # 1-based line numbers (JSONL); else position + 1

    def number(self, i: int) -> int:
        return self.numbers[i] if self.numbers is not None else i + 1


def load_examples(source: Any, *, format: str = "auto", limit: int | None = None,
                  prompt_style: str | None = None, system_prompt: str | None = None,
                  split: str = "train", seed: int | None = None, shuffle: bool = False,
                  decode_images: bool = True, max_image_side: int | None = None) -> list[Example]:
    """Load `source` as a list of `Example`s.

    source: a .jsonl/.json/.parquet file; a folder holding `<split>.jsonl|parquet` or `data.jsonl|parquet`
        or a `datasets.save_to_disk` folder; `shared:<path>` (inside $DUOTUNE_DATA); `hf:<name>`
        (`datasets.load_dataset(name, split=split)`); a `datasets` Dataset/DatasetDict; or a list of dicts.
    format: "auto" (detected from the first row's fields) or a `data_format` name: verl, gsm8k, math,
        generic (see `duotune.data.formats`).
    limit / shuffle / seed: keep the first `limit` rows, after a seeded shuffle when `shuffle`.
    prompt_style: a `prompt_style` name (boxed, think_answer, vlaa, luffy, none) applied to each prompt,
        and through `render_demo` to each demo; None leaves prompts and demos as the rows give them.
    system_prompt: replaces any system message (after the style).
    decode_images: True gives RGB PIL images (see `load_image`, `max_image_side`); False keeps images
        as given, with relative paths made absolute and checked to exist.
    Ids are the row's id/idx/unique_id, else `<file stem>:<row>` (row = 1-based line or position);
    errors are `DataError`s naming the file, row and field.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer or None, not {limit!r}")
    if format != "auto":
        data_formats.validate(format)
    if prompt_style is not None:
        prompt_styles.validate(prompt_style)
    rows = _open(source, split)
    order = list(range(rows.count))
    if shuffle:
        random.Random(seed).shuffle(order)
    order = order[:limit] if limit is not None else order
    base = RowContext(file=rows.label, row=0, stem=rows.stem, base_dir=rows.base_dir,
                      decode_images=decode_images, max_image_side=max_image_side)
    examples: list[Example] = []
    convert = None if format == "auto" else data_formats.get(format)
    for i, raw in zip(order, rows.fetch(order)):
        ctx = replace(base, row=rows.number(i))
        row = _as_row(raw, ctx)
        if convert is None:
            convert = data_formats.get(detect_format(row, ctx))
        examples.append(_styled(convert(row, ctx), prompt_style, system_prompt, ctx))
    return examples


def _styled(ex: Example, style: str | None, system_prompt: str | None, ctx: RowContext) -> Example:
    """Apply the prompt style (and render the demo); errors gain the row's file and number."""
    if style is None and system_prompt is None:
        return ex
    try:
        ex.prompt = apply_prompt_style(ex.prompt, style or "none", system_prompt)
        if style is not None and ex.demo is not None:
            ex.demo = render_demo(ex.demo, style, answer=ex.answer)
    except DataError as e:
        if e.file is not None:
            raise
        message = str(e).removeprefix(f"field {e.field!r}: " if e.field else "")
        raise ctx.error(message, e.field) from None
    return ex


def _as_row(raw: Any, ctx: RowContext) -> Mapping[str, Any]:
    if isinstance(raw, str):  # a JSONL line, parsed only when its row is used
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ctx.error(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(raw, Mapping):
        raise ctx.error(f"a row must be a JSON object / dict, not {type(raw).__name__}")
    return raw


def _open(source: Any, split: str) -> _Rows:
    if isinstance(source, (list, tuple)):
        rows = list(source)
        return _Rows("<rows>", "rows", None, len(rows), lambda idx: [rows[i] for i in idx])
    if _is_datasets_object(source):
        name = getattr(getattr(source, "info", None), "dataset_name", None) or "dataset"
        return _from_datasets(source, split, label=f"<{name}>", stem=name, base_dir=None)
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"unsupported data source of type {type(source).__name__}; give a file path, "
                          "'hf:<name>', 'shared:<path>', a datasets.Dataset or a list of dicts")
    text = os.fspath(source)
    if text.startswith("hf:"):
        return _from_hub(text[3:], split)
    path = data_dir() / text[len("shared:"):] if text.startswith("shared:") else Path(text)
    if not path.exists():
        raise DataError("not found; give an existing .jsonl/.json/.parquet file or folder "
                        "(or 'shared:<path>' for files in the shared data folder)", file=str(path))
    if path.is_dir():
        return _from_dir(path, split)
    return _from_file(path)


def _from_file(path: Path) -> _Rows:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise DataError(f"not a readable parquet file ({e})", file=str(path)) from None
        # The pandas index column that pandas-written parquet files carry is not data.
        table = table.drop_columns([c for c in table.column_names if c.startswith("__index_level_")])
        return _Rows(str(path), path.stem, path.parent, table.num_rows,
                     lambda idx: table.take(idx).to_pylist() if idx else [])
    if suffix not in (".jsonl", ".ndjson", ".json"):
        raise DataError("unsupported file type; use .jsonl, .json or .parquet", file=str(path))
    text = decode_text(path.read_bytes(), path)  # a non-UTF-8 byte names its row
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg} at line {e.lineno})", file=str(path)) from None
        return _Rows(str(path), path.stem, path.parent, len(rows), lambda idx: [rows[i] for i in idx])
    # split on "\n" only: str.splitlines() also breaks on U+0085/U+2028, which occur inside
    # JSON strings (MMLU-Pro has one) and would cut a row in two.
    lines = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    return _Rows(str(path), path.stem, path.parent, len(lines),
                 lambda idx: [lines[i][1] for i in idx], numbers=[n for n, _ in lines])


def _from_dir(path: Path, split: str) -> _Rows:
    if any((path / f).is_file() for f in _SAVED_DATASET_FILES):
        import datasets

        return _from_datasets(datasets.load_from_disk(str(path)), split, label=str(path), stem=path.name,
                              base_dir=path)
    for name in (f"{split}.jsonl", f"{split}.parquet", "data.jsonl", "data.parquet"):
        if (path / name).is_file():
            return _from_file(path / name)
    raise DataError(f"folder holds no {split}.jsonl, {split}.parquet, data.jsonl, data.parquet or saved "
                    "dataset; point at a data file or pass split=", file=str(path))


def _from_hub(name: str, split: str) -> _Rows:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # noqa: BLE001 - hub/offline errors vary; the message says what happened
        raise DataError(f"datasets.load_dataset({name!r}, split={split!r}) failed: {e}",
                        file=f"hf:{name}") from None
    return _from_datasets(ds, split, label=f"hf:{name}", stem=name.split("/")[-1], base_dir=None)


def _from_datasets(ds: Any, split: str, *, label: str, stem: str, base_dir: Path | None) -> _Rows:
    import datasets

    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in ds:
            raise DataError(f"no split {split!r}; available: {', '.join(ds)} (pass split=)", file=label)
        ds = ds[split]
    if isinstance(ds, datasets.IterableDataset):
        rows = list(ds)
        return _Rows(label, stem, base_dir, len(rows), lambda idx: [rows[i] for i in idx])
    return _Rows(label, stem, base_dir, len(ds), lambda idx: list(ds.select(idx)) if idx else [])


def _is_datasets_object(source: Any) -> bool:
    # Checked by module name so that plain file loading never imports `datasets` (slow to import).
    return type(source).__module__.split(".")[0] == "datasets"

