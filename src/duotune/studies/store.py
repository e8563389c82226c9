"""How a study outlives one machine: its finished runs are kept in a committed store and reused only
under the settings they were made with.

A run folder (`runs/...`) does not survive a session, and the protocol's studies (docs/protocol.md)
take many sessions. So each study copies its finished runs both ways between its folder and a store
in the repository (`docs/protocol_runs/<folder name>`, laid out like the folder):

- `sync_store(root, store, finished)`: `results/<run>.json` of every finished run, and with it the
  run's RUN_FILES under `runs/<run>/` (its training log, which the reports' entropy tests, schedule
  checks and curves read, and its resolved config). Each side gets what only the other has; nothing
  is overwritten. Checkpoints and rollouts stay in the run folder (hundreds of MB a run).
- `FinishedRuns(out, settings, store)`: the vision studies' record of finished runs
  (`<out>/results/<run>.json`), reused only when made with the same settings, synced with the store
  after each.
- `weights_fingerprint(path)` (in `warmup_settings`): a checkpoint's weights as one hash, so a result
  restored from the store is not mixed with runs from a warm-up that was trained again and came out
  different.
- `add_store_arg`, `study_store`: the vision studies' `--store` flag.

Imports only the standard library and duotune's errors, jsonl and paths.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duotune.errors import ConfigError
from duotune.jsonl import write_json
from duotune.paths import REPO_ROOT

RUN_FILES = ("metrics.jsonl", "config.yaml")
STORE = REPO_ROOT / "docs" / "protocol_runs"


# What a run's result records about the machine rather than the run: a re-run elsewhere differs here
# only, so `sync_store` leaves these keys out when it asks whether a re-run reproduced its result.
MACHINE_KEYS = frozenset({"wall_s", "eval_wall_s", "host_rss_gb", "run_dir", "timings"})


def _close(a: Any, b: Any) -> bool:
    """Equal at any depth, MACHINE_KEYS aside and floats to a relative 1e-3: the trainer's float sums
    are not bit-reproducible, so `kl_to_initial` moved by up to 6.6e-4 (relative) in the protocol's
    re-runs of GRPO and SRFT, whose every item scored the same. A score per item is 0 or 1, so one
    changed item is still caught."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        keys = a.keys() - MACHINE_KEYS
        return keys == b.keys() - MACHINE_KEYS and all(_close(a[k], b[k]) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def _same_scores(a: Path, b: Path) -> bool:
    """Whether two results measured the same (an unreadable one does not)."""
    try:
        return _close(json.loads(a.read_text()), json.loads(b.read_text()))
    except (OSError, ValueError):
        return False


def _readable_json(path: Path) -> bool:
    json.loads(path.read_text())  # raises on a half-written file: `sync_store` counts it unfinished
    return True


def sync_store(root: Path, store: Path, finished: Callable[[Path], bool] = _readable_json) -> dict[str, list[str]]:
    """Copy finished runs both ways between `root` (a study's folder) and `store` (its committed copy):
    `results/<run>.json` when `finished(path)` (an unreadable file never is), and with each its run's
    RUN_FILES under `runs/<run>/`. A result on both sides whose scores differ (MACHINE_KEYS aside) is
    left as it is on each side and listed under `differ`: a re-run that did not reproduce (floats
    compared to a relative 1e-3). Training logs always differ in their timings and are not compared.
    Unfinished runs stay where they are: the next run retries them."""
    moved: dict[str, list[str]] = {"to_store": [], "from_store": [], "differ": []}

    def done(path: Path) -> bool:  # an unreadable file is not finished (it stays where it is)
        try:
            return finished(path)
        except (OSError, ValueError):
            return False

    def copy_missing(src: Path, dst: Path) -> bool:
        if dst.exists() or not src.is_file():
            return False
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return True

    for src, dst, key in ((root, store, "to_store"), (store, root, "from_store")):
        results = src / "results"
        for f in sorted(results.glob("*.json")) if results.is_dir() else []:
            if not done(f):
                continue
            target = dst / "results" / f.name
            if copy_missing(f, target):
                moved[key].append(f.name)
            elif key == "to_store" and not _same_scores(f, target):
                moved["differ"].append(f.name)
            for name in RUN_FILES:
                copy_missing(src / "runs" / f.stem / name, dst / "runs" / f.stem / name)
    return moved


def report_sync(name: str, moved: dict[str, list[str]]) -> None:
    print(f"[store] {name}: {len(moved['from_store'])} finished runs from the store, {len(moved['to_store'])} "
          "into it" + (f"; differ (kept both): {moved['differ']}" if moved["differ"] else ""), flush=True)


def add_store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, help="parent of the committed copy of the finished runs (results and "
                   "training logs), synced both ways before the first run and after each, so a new session "
                   "continues the study: <store>/<out folder name>. Default: docs/protocol_runs at "
                   "--scale protocol, none at the others; 'none' turns it off")


def study_store(given: str | None, scale: str, out: Path) -> Path | None:
    """A vision study's store: `<given>/<out folder name>`; by default (`given` None) under
    docs/protocol_runs at the protocol scale and none at the others; "none" turns it off."""
    if given is None:
        return STORE / Path(out).name if scale == "protocol" else None
    return None if given == "none" else Path(given) / Path(out).name


def warmup_settings(scale: Any, warmup: Path) -> dict[str, Any]:
    """What a vision study's finished run was made with: the scale's fields (a dataclass), the
    warm-up's path and its weights' fingerprint (a warm-up trained again that came out different
    must not be mixed with runs from the first)."""
    return {**dataclasses.asdict(scale), "warmup": str(warmup), "warmup_sha256": weights_fingerprint(warmup)}


def weights_fingerprint(path: Path) -> str:
    """sha256 over a checkpoint folder's weight files (`*.safetensors`, `*.bin`), in name order."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin"))
    if not files:
        raise ConfigError(f"{path} holds no weight files (*.safetensors, *.bin)")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


class FinishedRuns:
    """Finished runs' results under `<out>/results/<name>.json`, so a re-run (a new session, another
    task) reuses them instead of training again; delete a file to redo that run. Each file records the
    settings (JSON values: the scale's fields, the warm-up's path and fingerprint) it was made with;
    reusing it under other settings raises ConfigError naming the fields that differ. With a `store`,
    `<out>` is synced with it (`sync_store`) now and after every save."""

    def __init__(self, out: Path, settings: dict[str, Any], store: Path | None = None):
        self.out, self.folder = Path(out), Path(out) / "results"
        self.settings = settings
        self.store = store
        self.sync()

    def sync(self) -> None:
        if self.store is not None:
            report_sync(str(self.store), sync_store(self.out, self.store))

    def load(self, name: str, results: dict[str, Any], timings: dict[str, float]) -> bool:
        path = self.folder / f"{name}.json"
        if not path.is_file():
            return False
        rec = json.loads(path.read_text())
        made = rec.get("settings", self.settings)  # files of older versions carry none
        diff = sorted(k for k in made.keys() | self.settings.keys() if made.get(k) != self.settings.get(k))
        if diff:
            raise ConfigError(f"{path} was made with other settings ({', '.join(diff)} differ); "
                              "give another --out, or delete the file to redo that run")
        results[name] = rec["results"]
        timings.update(rec["timings"])
        return True

    def save(self, name: str, results: dict[str, Any], timings: dict[str, float]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        mine = {k: v for k, v in timings.items() if k.endswith(f"/{name}")}
        # atomic: a crash mid-write leaves no half file for the next session to reuse
        write_json(self.folder / f"{name}.json", {"results": results[name], "timings": mine,
                                                  "settings": self.settings})
        self.sync()

    def evaluated(self, name: str, results: dict[str, Any], timings: dict[str, float],
                  evaluate: Callable[[], Any]) -> None:
        """results[name]: the finished one, or `evaluate()` timed as `eval/<name>` and saved."""
        if not self.load(name, results, timings):
            t0 = time.perf_counter()
            results[name] = evaluate()
            timings[f"eval/{name}"] = time.perf_counter() - t0
            self.save(name, results, timings)
