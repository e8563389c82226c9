"""Atomic checkpoints: model (safetensors via `models.save_model`), optimizer, scheduler, RNG, KL state
(and for LoRA runs the unmerged trained tensors, so a resume continues the same adapters).

A checkpoint is written to a temporary folder and renamed into place, so the last good one is never
lost; only the newest `keep_last` are kept. Imports torch and `duotune.models`; no trainer logic.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duotune.errors import ConfigError
from duotune.models import save_model
from duotune.models.lora import is_peft, save_trainable_state

PREFIX = "checkpoint-"
TRAINABLE = "trainable.safetensors"  # LoRA runs: adapters + fully trained modules, unmerged


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


def save_checkpoint(run_dir: Path, step: int, bundle: Any, trainer_state: dict[str, Any],
                    keep_last: int) -> Path:
    """Write checkpoint-<step> atomically; `trainer_state` holds optimizer/scheduler/KL/data state."""
    final = run_dir / f"{PREFIX}{step:06d}"
    tmp = run_dir / f".tmp-{PREFIX}{step:06d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(bundle, tmp / "model")
    if is_peft(bundle.model):  # the adapters as trained (model/ holds them merged)
        save_trainable_state(bundle.model, tmp / TRAINABLE)
    torch.save({**trainer_state, "rng": rng_state()}, tmp / "trainer_state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step}))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (those with meta.json), oldest first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.glob(f"{PREFIX}*") if (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def find_resume(run_dir: Path, resume: str) -> Path | None:
    """The checkpoint to resume from: `auto` = newest in run_dir, `never` = none, else a path."""
    if resume == "never":
        return None
    if resume == "auto":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "meta.json").is_file():
        raise ConfigError(f"run.resume={resume!r} is not a checkpoint folder (no meta.json); give a "
                          f"{PREFIX}NNNNNN folder, 'auto' or 'never'")
    return path


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    """The saved optimizer/scheduler/KL/data/RNG state (weights load via `models.load_model`)."""
    return torch.load(ckpt / "trainer_state.pt", weights_only=False)


def prune_finished(run_dir: Path) -> None:
    """Delete what only a resume needs from a finished run: each checkpoint's trainer_state.pt
    (optimizer moments, ~2x the model) and the stage-<k>-init model copies (the reference / LoRA
    stage start). The checkpoint models, metrics and rollouts stay, and re-running the finished run
    trains nothing (`loop.train` reads the step from meta.json). Nine methods x two seeds of a 135M model otherwise keep ~35 GB."""
    for state in run_dir.glob(f"{PREFIX}*/trainer_state.pt"):
        state.unlink()
    for init in run_dir.glob("stage-*-init"):
        shutil.rmtree(init)


def checkpoint_step(ckpt: Path) -> int:
    """The global step a checkpoint folder was written at (its meta.json)."""
    return int(json.loads((ckpt / "meta.json").read_text())["step"])
