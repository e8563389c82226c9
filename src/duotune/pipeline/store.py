"""Resumable stage storage: content-hash keys, append-and-flush JSONL, a bounded parallel job runner.

A stage's file holds one row per finished key; a rerun skips keys already there, so a crash or a
failing server loses nothing and duplicates nothing. Imports tqdm, `duotune.errors` and `duotune.jsonl` only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from duotune import jsonl
from duotune.errors import DataError, DuotuneError


def content_hash(*parts: Any) -> str:
    """Stable key of JSON-serialisable parts (input content, prompt template, model, parameters)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


class StageStore:
    """One stage's JSONL file: rows keyed by `key`; `append` writes and flushes one row at a time."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.rows: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A run killed mid-write leaves a partial last line: drop it, its item is redone.
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self.rows[row["key"]] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError("not a stage row (JSON object with 'key'); delete the file to redo "
                                "this stage", file=str(self.path), row=n) from None

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
        self.rows[row["key"]] = row


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Replace `path` atomically (temp file + rename): a rerun rewrites, never appends twice."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    jsonl.write_rows(path, rows, ensure_ascii=False)  # a temporary file of its own, renamed over `path`
    return len(rows)


@dataclass
class Job:
    """One model call: `key` (content hash), `item` (the row id, for errors), `messages` built lazily
    in the worker so a large image set is never all base64-encoded in memory at once."""

    key: str
    item: str
    messages: Callable[[], list[dict[str, Any]]]


class StageError(DuotuneError):
    """A stage stopped on an item; finished items are already saved, a rerun resumes."""

    def __init__(self, stage: str, item: str, key: str, cause: Exception, store: StageStore):
        self.stage, self.item, self.key = stage, item, key
        self.status = getattr(cause, "status", None)
        super().__init__(f"pipeline stage {stage!r}, item {item!r} (key {key}): {cause}; "
                         f"{len(store.rows)} finished item(s) are saved in {store.path}; "
                         "rerun the same command to resume")


def run_jobs(stage: str, store: StageStore, jobs: Iterable[Job], chat: Callable[..., str],
             concurrency: int, record: dict[str, Any]) -> int:
    """Run every job whose key is not stored yet, `concurrency` at a time; store each answer as it
    arrives as `record | {key, item, response}`. On the first failure no new job starts, running
    ones finish and are stored, then `StageError` is raised (or the original non-user error).
    Returns the number of new rows."""
    pending: dict[str, Job] = {}
    for job in jobs:
        if job.key not in store and job.key not in pending:
            pending[job.key] = job
    todo = iter(pending.values())
    running: dict[Future[str], Job] = {}
    failure: tuple[Job, Exception] | None = None
    new = 0
    with ThreadPoolExecutor(max_workers=concurrency) as pool, \
            tqdm(total=len(pending), desc=stage, disable=None, leave=False) as bar:

        def submit_next() -> None:  # at most `concurrency` jobs exist at once; none after a failure
            job = next(todo, None)
            if job is not None and failure is None:
                running[pool.submit(lambda j=job: chat(j.messages()))] = job
        for _ in range(concurrency):
            submit_next()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                job = running.pop(fut)
                try:
                    response = fut.result()
                except Exception as e:  # noqa: BLE001 - re-raised below once finished items are saved
                    failure = failure or (job, e)
                    continue
                store.append({**record, "key": job.key, "item": job.item, "response": response})
                new += 1
                bar.update()
                submit_next()
    if failure is not None:
        job, cause = failure
        if isinstance(cause, DuotuneError):
            raise StageError(stage, job.item, job.key, cause, store) from cause
        raise cause
    return new
