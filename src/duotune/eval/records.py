"""Per-sample records of an eval run: one JSONL file per benchmark, appended as samples finish, read back
to resume; plus the run settings a resumed run must match.

Imports `duotune.errors` only; no torch, no models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from duotune import jsonl
from duotune.errors import ConfigError, DataError

# Settings that change what a sample means; a resumed run must keep them (n and limit may grow).
FIXED_SETTINGS = ("model", "temperature", "top_p", "max_new_tokens", "prompt_style", "seed")


def prompt_hash(prompt: list[dict[str, Any]]) -> str:
    """A short stable hash of a chat prompt, so resumed samples are only reused for the same prompt."""
    text = json.dumps(prompt, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class SampleStore:
    """Graded samples of one benchmark, keyed by (item id, sample index, prompt hash).

    With `path` None everything stays in memory (evaluation during training); otherwise records are
    read from and appended to that JSONL file, and `settings` are checked against `settings.json`
    beside it (written on the first run).
    """

    def __init__(self, path: Path | None, settings: dict[str, Any]):
        self.path = path
        self.records: dict[tuple[str, int, str], dict[str, Any]] = {}
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._check_settings(path.parent / "settings.json", settings)
        if path.is_file():
            self._read(path)

    def has(self, item_id: str, index: int, phash: str) -> bool:
        return (item_id, index, phash) in self.records

    def get(self, item_id: str, index: int, phash: str) -> dict[str, Any]:
        return self.records[(item_id, index, phash)]

    def add(self, records: list[dict[str, Any]]) -> None:
        """Keep `records` and append them to the file (flushed, so an interrupted run loses nothing)."""
        for r in records:
            self.records[(r["item_id"], r["sample_index"], r["prompt_hash"])] = r
        if self.path is not None and records:
            jsonl.append(self.path, records, ensure_ascii=False)  # cuts a torn tail first

    def _read(self, path: Path) -> None:
        for number, r in jsonl.read_rows(path):  # a torn last line (a kill mid-write) is skipped
            try:
                key = (str(r["item_id"]), int(r["sample_index"]), str(r["prompt_hash"]))
            except (KeyError, TypeError, ValueError):
                raise DataError("not a sample record of duotune eval; delete the file or use another "
                                "--out", file=str(path), row=number) from None
            self.records[key] = r

    @staticmethod
    def _check_settings(run_file: Path, settings: dict[str, Any]) -> None:
        fixed = {k: settings.get(k) for k in FIXED_SETTINGS}
        if run_file.is_file():
            old = json.loads(run_file.read_text(encoding="utf-8"))
            changed = [k for k in FIXED_SETTINGS if old.get(k) != fixed[k]]
            if changed:
                diff = ", ".join(f"{k}: {old.get(k)!r} -> {fixed[k]!r}" for k in changed)
                raise ConfigError(f"{run_file.parent} holds samples made with other settings ({diff}); "
                                  "use another --out folder or delete that one to start over")
            return
        jsonl.write_json(run_file, fixed)
