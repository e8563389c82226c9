"""`python tests/fault_child.py POINT N duotune-train-args...`: run `duotune train` and SIGKILL this very
process at the N-th time it reaches POINT (tests/test_faults.py, benchmarks/fault_drill.py).

Points: `step` (a training step starts: mid-rollout), `metrics` (halfway through writing a metrics
line), `model` (a checkpoint's model written, its state not), `state` (halfway through the training
state), `manifest` (every file written, no meta.json), `rename` (just before the checkpoint is renamed
into place), `renamed` (just after), `prune` (halfway through deleting an old checkpoint).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from duotune import jsonl
from duotune.trainers import checkpoint, loop

POINTS = ("step", "metrics", "model", "state", "manifest", "rename", "renamed", "prune")


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, n: int) -> None:
    """Patch the code at `point` so its n-th call kills the process (midway where it writes)."""
    calls = {"count": 0}

    def due() -> bool:
        calls["count"] += 1
        return calls["count"] == n

    def wrap(module: Any, name: str, before: Any = None, after: bool = False) -> None:
        original = getattr(module, name)

        def patched(*args: Any, **kwargs: Any) -> Any:
            if due():
                if before is not None:
                    before(*args, **kwargs)
                elif after:
                    original(*args, **kwargs)
                _die()
            return original(*args, **kwargs)

        setattr(module, name, patched)

    def half_line(path: Any, records: Any, **kw: Any) -> None:
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
        jsonl.repair_tail(path)
        with Path(path).open("ab") as f:
            f.write(data[: len(data) // 2])

    def half_state(obj: Any, folder: Path, stem: str) -> None:
        (folder / f"{stem}.json").write_text("{\"__dict__\": [[\"global_step\"")

    def half_delete(ckpt: Path) -> None:
        (ckpt / "meta.json").unlink(missing_ok=True)
        next(p for p in ckpt.rglob("*") if p.is_file()).unlink()

    sync_calls = {"count": 0}
    original_sync = checkpoint._sync_dir

    def sync(path: Path) -> None:  # called before (odd) and after (even) the rename
        sync_calls["count"] += 1
        wanted = 1 if point == "rename" else 0
        if sync_calls["count"] % 2 == wanted and due():
            _die()
        original_sync(path)

    if point == "step":
        wrap(loop, "train_step")
    elif point == "metrics":
        wrap(jsonl, "append", before=half_line)
    elif point == "model":
        wrap(checkpoint, "save_model", after=True)
    elif point == "state":
        wrap(checkpoint, "save_tree", before=half_state)
    elif point == "manifest":
        wrap(checkpoint, "_manifest")
    elif point in ("rename", "renamed"):
        checkpoint._sync_dir = sync
    elif point == "prune":
        wrap(checkpoint, "_remove", before=half_delete)
    else:
        raise SystemExit(f"unknown point {point!r}; one of {', '.join(POINTS)}")


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    from duotune.cli import main

    sys.exit(main(sys.argv[3:]))
