"""JSONL files that survive a kill mid-write: `append` first cuts a torn last line (bytes after the
final newline, left by an interrupted write) and then writes whole lines in one call; `read` ignores a
torn last line but names the file and row of any bad line before it; `keep`, `write_json`,
`write_text` and `write_rows` rewrite a file atomically.

Imports json, os and `duotune.errors` only.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from duotune.errors import DataError

_BLOCK = 1 << 16


def decode_text(data: bytes, path: str | Path) -> str:
    """`data` as UTF-8 text, or a DataError naming the file and the row of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        row = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"not UTF-8 text (byte 0x{data[e.start]:02x}); re-save the file as UTF-8",
                        file=str(path), row=row) from None


def _replace_atomically(path: Path, data: bytes) -> None:
    """`data` into a temporary file of its own beside `path`, renamed over it: a reader never sees a
    half-written file, and writers of the same path at once (two workers generating one data file)
    never rename each other's temporary file away; the last rename wins, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")  # the usual permissions
    try:
        with tmp.open("xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON atomically (`_replace_atomically`), so a file a later run reads
    back (settings, summaries) is never half written."""
    _replace_atomically(Path(path), (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def write_text(path: str | Path, text: str) -> None:
    """Write `text` as UTF-8 atomically (`_replace_atomically`): two processes saving one file at once
    (demo workers writing a comparison's compare.yaml) each rename a temporary file of their own."""
    _replace_atomically(Path(path), text.encode("utf-8"))


def write_rows(path: str | Path, records: Iterable[dict[str, Any]], *, ensure_ascii: bool = True) -> None:
    """Write `records` as a whole JSONL file atomically (`_replace_atomically`), so a reader never sees
    a half-written file."""
    _replace_atomically(Path(path), b"".join(json.dumps(r, ensure_ascii=ensure_ascii).encode("utf-8") + b"\n"
                                             for r in records))


def repair_tail(path: str | Path) -> int:
    """Cut a torn last line (the bytes after the final newline) from `path`; returns the bytes cut."""
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - _BLOCK)
            f.seek(start)
            block = f.read(end - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            f.truncate(keep)
        return size - keep


def append(path: str | Path, records: Iterable[dict[str, Any]], *, ensure_ascii: bool = True) -> None:
    """Append `records` as whole lines (one write), after cutting a torn tail an earlier kill left."""
    data = "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in records).encode("utf-8")
    if not data:
        return
    repair_tail(path)
    with Path(path).open("ab") as f:
        f.write(data)
        f.flush()


def read_rows(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(row number, record) of every line holding a JSON object; blank lines are skipped and a torn
    last line (no final newline, not JSON) is ignored. Any other bad line is a DataError naming the
    file and its row."""
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    out = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last = number == len(lines)  # a write cut short by a kill: that record never finished
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            if last:
                continue
            decode_text(data, path)  # the lines before decoded, so this names this row
            raise
        except json.JSONDecodeError as e:
            if last:
                continue
            raise DataError(f"not a JSON record ({e.msg} at column {e.colno}); fix or delete that line",
                            file=str(path), row=number) from None
        if not isinstance(record, dict):
            raise DataError(f"a JSON {type(record).__name__}, not an object; fix or delete that line",
                            file=str(path), row=number)
        out.append((number, record))
    return out


def read(path: str | Path) -> list[dict[str, Any]]:
    """The records of `path` (see `read_rows`); [] when the file does not exist."""
    return [r for _, r in read_rows(path)] if Path(path).is_file() else []


def keep(path: str | Path, predicate: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite `path` with only the records `predicate` keeps (atomically: a temporary file renamed
    over it; a torn tail goes too); returns how many records were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    records = read(path)
    kept = [r for r in records if predicate(r)]
    data = path.read_bytes()
    if len(kept) == len(records) and (not data or data.endswith(b"\n")):
        return 0
    write_rows(path, kept)
    return len(records) - len(kept)
