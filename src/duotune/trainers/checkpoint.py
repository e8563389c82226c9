"""Atomic, verified checkpoints: model (safetensors via `models.save_model`), optimizer, scheduler, RNG,
KL state (and for LoRA runs the unmerged trained tensors, so a resume continues the same adapters; for
sharded runs accelerate's own state of the sharded model and optimizer, written by every rank).

A checkpoint is written to a temporary folder, synced, and renamed into place, so the last good one is
never lost; `meta.json` records every file's size and SHA-256, and a resume trusts only a checkpoint
whose files match it (falling back to the newest that does). Training state is JSON + safetensors, never
pickle (see `state_files`). Only the newest `keep_last` are kept. Imports torch and `duotune.models`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duotune.errors import ConfigError
from duotune.models import save_model
from duotune.models.lora import is_peft, save_trainable_state
from duotune.trainers.state_files import LEGACY, load_legacy, load_tree, save_tree

PREFIX = "checkpoint-"
TRAINABLE = "trainable.safetensors"  # LoRA runs: adapters + fully trained modules, unmerged
SHARDED = "accelerate"  # sharded runs: `accelerator.save_state` (model + optimizer shards, per-rank RNG)
STATE = "trainer_state"  # trainer_state.json + trainer_state.safetensors
_NUMBERED = re.compile(rf"{PREFIX}(\d+)")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / f"{PREFIX}{step:06d}"


def staging_dir(run_dir: Path, step: int, *, fresh: bool = False) -> Path:
    """The temporary folder checkpoint-<step> is written to (emptied first with `fresh`)."""
    tmp = run_dir / f".tmp-{PREFIX}{step:06d}"
    if fresh:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    return tmp


def save_checkpoint(run_dir: Path, step: int, bundle: Any, trainer_state: dict[str, Any],
                    keep_last: int, *, state_dict: dict[str, Any] | None = None, staged: bool = False) -> Path:
    """Write checkpoint-<step> atomically; `trainer_state` holds optimizer/scheduler/KL/data state.

    state_dict: consolidated weights of a sharded model (else the module's own are saved).
    staged: the ranks already wrote their shards into `staging_dir` (kept, not emptied)."""
    final = checkpoint_dir(run_dir, step)
    tmp = staging_dir(run_dir, step, fresh=not staged)
    save_model(bundle, tmp / "model", state_dict=state_dict)
    if is_peft(bundle.model):  # the adapters as trained (model/ holds them merged)
        save_trainable_state(bundle.model, tmp / TRAINABLE)
    save_tree({**trainer_state, "rng": rng_state()}, tmp, STATE)
    files = _manifest(tmp)
    _write_synced(tmp / "meta.json", json.dumps({"step": step, "files": files}, indent=1))
    _sync_dir(tmp)
    if final.exists():
        _remove(final)
    tmp.rename(final)
    _sync_dir(run_dir)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        _remove(old)
    _sweep(run_dir)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoints (checkpoint-<number> with a meta.json), oldest first; other names
    (checkpoint-final, a user's copy) are not ours and are left alone."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if _NUMBERED.fullmatch(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def verify(ckpt: Path) -> str | None:
    """Why `ckpt` cannot be trusted (a missing, resized or changed file), or None when every file
    matches the sizes and hashes in its meta.json. A checkpoint of an older duotune (no hashes
    recorded) is checked for its files only."""
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
        int(meta["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return "meta.json is missing or unreadable"
    files = meta.get("files")
    if files is None:
        needed = ["model/config.json", LEGACY]
        missing = [f for f in needed if not (ckpt / f).is_file()]
        return f"{missing[0]} is missing" if missing else None
    for rel, want in files.items():
        path = ckpt / rel
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{rel} is {size} bytes, meta.json records {want['size']}"
        if _sha256(path) != want["sha256"]:
            return f"{rel} does not match its SHA-256 in meta.json (changed or damaged)"
    return None


def find_resume(run_dir: Path, resume: str, say: Callable[[str], None] = print) -> Path | None:
    """The checkpoint to resume from: `auto` = the newest in run_dir that verifies (each one skipped
    is reported through `say`), `never` = none, else that path, which must verify."""
    if resume == "never":
        return None
    if resume == "auto":
        for ckpt in reversed(list_checkpoints(run_dir)):
            why = verify(ckpt)
            if why is None:
                return ckpt
            say(f"skipping {ckpt.name}: {why}")
        return None
    path = Path(resume)
    if not (path / "meta.json").is_file():
        raise ConfigError(f"run.resume={resume!r} is not a checkpoint folder (no meta.json); give a "
                          f"{PREFIX}NNNNNN folder, 'auto' or 'never'")
    why = verify(path)
    if why is not None:
        raise ConfigError(f"run.resume={resume!r}: {path.name} cannot be trusted: {why}; resume from "
                          "an older checkpoint of that run, or use run.resume=never")
    return path


def tidy(run_dir: Path, resume: Path | None, keep_last: int) -> None:
    """Before a (resumed) run: clear what kills left behind (temporary and half-deleted folders) and
    the checkpoints older than `resume` beyond `keep_last` (a kill between a save and its pruning)."""
    if not run_dir.is_dir():
        return
    _sweep(run_dir)
    if resume is None:
        return
    older = [c for c in list_checkpoints(run_dir) if checkpoint_step(c) < checkpoint_step(resume)]
    for old in older[:max(0, len(older) - (keep_last - 1))]:
        _remove(old)


def checkpoint_step(ckpt: Path) -> int:
    return int(json.loads((ckpt / "meta.json").read_text())["step"])


def is_pruned(ckpt: Path) -> bool:
    """The checkpoint's training state was deleted when its run finished (its model is still there:
    it verifies, and a finished run resumes from it as done)."""
    return bool(json.loads((ckpt / "meta.json").read_text()).get("pruned"))


def prune_trainer_state(ckpt: Path) -> None:
    """Delete the training state of a finished run's checkpoint (only a resume needs it; the model
    stays) and record that in meta.json, so the checkpoint still verifies as a model but is never
    taken for a resumable one."""
    meta = json.loads((ckpt / "meta.json").read_text())
    gone = [p.name for p in (ckpt / f"{STATE}.json", ckpt / f"{STATE}.safetensors", ckpt / LEGACY)
            if p.is_file()]
    for name in gone:
        meta.get("files", {}).pop(name, None)
    meta["pruned"] = sorted(set(meta.get("pruned", [])) | set(gone))
    _write_synced(ckpt / ".meta.json.tmp", json.dumps(meta, indent=1))
    os.replace(ckpt / ".meta.json.tmp", ckpt / "meta.json")
    for name in gone:
        (ckpt / name).unlink()


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    """The saved optimizer/scheduler/KL/data/RNG state (weights load via `models.load_model`)."""
    if (ckpt / f"{STATE}.json").is_file():
        return load_tree(ckpt, STATE)
    return load_legacy(ckpt / LEGACY)


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {size, sha256}} of every file under `folder`, each synced to disk first."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            os.fsync(f.fileno())
        out[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_synced(path: Path, text: str) -> None:
    with path.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sweep(run_dir: Path) -> None:
    """Leftovers of kills: temporary folders of other saves, checkpoints whose deletion was cut short."""
    for p in run_dir.iterdir():
        partial = _NUMBERED.fullmatch(p.name) and not (p / "meta.json").exists()
        if p.is_dir() and (partial or p.name.startswith(f".tmp-{PREFIX}")):
            shutil.rmtree(p)


def _remove(ckpt: Path) -> None:
    """Delete a checkpoint so that a kill midway never leaves it looking complete: meta.json first."""
    (ckpt / "meta.json").unlink(missing_ok=True)
    shutil.rmtree(ckpt)


def prune_finished(run_dir: Path) -> None:
    """Delete what only a resume needs from a finished run: each checkpoint's training state
    (optimizer moments, ~2x the model; `prune_trainer_state` records that in meta.json) and the
    stage-<k>-init model copies (the reference / LoRA stage start). The checkpoint models, metrics and
    rollouts stay, and re-running the finished run trains nothing. Nine methods x two seeds of a 135M
    model otherwise keep ~35 GB."""
    for ckpt in list_checkpoints(run_dir):
        prune_trainer_state(ckpt)
    for init in run_dir.glob("stage-*-init"):
        shutil.rmtree(init)
