"""A run folder is bound to its config: resuming with a config that differs in anything but run-length,
logging, checkpointing or guard fields is refused with the diff and the two fixes; `run.resume=never`
clears duotune's own files from the folder first; a resume from another run's checkpoint brings that
run's stage-start weights along. Configs are compared as plain dicts (dotted keys), whatever the schema.

Imports yaml, shutil and `duotune.errors`; no torch.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from duotune.errors import ConfigError

# Keys a resumed run may change: how long it runs, what it logs, how it checkpoints, its guard bounds.
MAY_CHANGE = frozenset({
    "steps", "run.name", "run.output_dir", "run.resume", "run.stop_after", "run.progress",
    "run.log_with", "run.project", "run.rollouts_every", "run.keep_optimizer_state", "run.plots",
    "run.save_every", "run.keep_last", "run.max_bad_steps", "run.max_loss", "run.max_param_growth", "eval.every",
})
_ARTEFACT = re.compile(r"(checkpoint-\d+|stage-\d+-init|\.tmp-(?:checkpoint-\d+|stage-\d+-init)|metrics\.jsonl"
                       r"|\.(?:metrics\.jsonl|config\.yaml)(?:\.\d+\.[0-9a-f]+)?\.tmp"  # jsonl's temporary names
                       r"|curves\.png|config\.yaml|trackers|rollouts)")
_ABSENT = "<absent>"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and scalars are leaves."""
    if not isinstance(data, dict) or (prefix and not data):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_diff(saved: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, new value) of every key outside MAY_CHANGE whose value differs."""
    a, b = flatten(saved), flatten(new)
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in keys
            if k not in MAY_CHANGE and a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def check_binding(ckpt: Path, new: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume `ckpt` under the config `new` when it differs from the one its run saved."""
    saved_file = ckpt.parent / "config.yaml"
    if not saved_file.is_file():  # a checkpoint moved out of its run folder: nothing to compare with
        return
    saved = yaml.safe_load(saved_file.read_text()) or {}
    diff = config_diff(saved, new)
    if not diff:
        return
    lines = "; ".join(f"{k}: {_show(old)} -> {_show(cur)}" for k, old, cur in diff[:12])
    more = f" (and {len(diff) - 12} more)" if len(diff) > 12 else ""
    raise ConfigError(
        f"{run_dir} resumes {ckpt.name}, which was trained with another config: {lines}{more}. Only "
        "run-length, logging and checkpoint fields may change on a resume. Either give the new run its "
        "own folder (run.name=<new name>), or start over in this one with run.resume=never (deletes "
        "its checkpoints and metrics)")


def _show(value: Any) -> str:
    return value if value is _ABSENT else repr(value)


def is_run_folder(run_dir: Path) -> bool:
    """True when `run_dir/config.yaml` is a duotune training config (so its artefacts are ours)."""
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and {"method", "model", "run"} <= set(data)


def start_clean(run_dir: Path, say: Any = print) -> None:
    """`run.resume=never`: delete the files an earlier run wrote (checkpoints, stage weights, metrics,
    curves, config, tensorboard logs); anything else in the folder stays. A folder with such names
    but no duotune config.yaml is not touched (the run is refused instead)."""
    if not run_dir.is_dir():
        return
    ours = [p for p in run_dir.iterdir() if _ARTEFACT.fullmatch(p.name)]
    if not ours:
        return
    if not is_run_folder(run_dir):
        raise ConfigError(f"{run_dir} holds {ours[0].name} but no duotune config.yaml, so it is not a "
                          "run folder duotune may clear; choose another run.name or run.output_dir")
    for p in ours:
        if p.is_dir():
            (p / "meta.json").unlink(missing_ok=True)  # a cut-short delete never looks like a checkpoint
            shutil.rmtree(p)
        else:
            p.unlink()
    say(f"run.resume=never: removed the previous run's {len(ours)} files and folders from {run_dir}")


def adopt_stage_inits(ckpt: Path, run_dir: Path) -> None:
    """Resuming another run's checkpoint: bring its stage-<k>-init folders (the reference model and
    the LoRA base) into `run_dir`, hard-linked where the file system allows, so this run resumes alone."""
    if ckpt.parent.resolve() == run_dir.resolve():
        return
    for src in sorted(ckpt.parent.glob("stage-*-init")):
        dst = run_dir / src.name
        if not dst.exists():
            tmp = run_dir / f".tmp-{src.name}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp, copy_function=_link_or_copy)
            tmp.rename(dst)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
