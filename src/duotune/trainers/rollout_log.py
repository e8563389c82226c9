"""What the policy wrote: one JSON line per sampled row of a step in <run>/rollouts/step-NNNNNN.jsonl
(prompt, completion, reward per function and in total, advantage, whether it was the demonstration),
every `run.rollouts_every` steps. The trainer hands the rows to `MetricsLogger.add_rollouts`.

Imports json and torch (tensors to floats) only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

ROLLOUTS_DIR = "rollouts"


def rollout_path(run_dir: Path, step: int) -> Path:
    return run_dir / ROLLOUTS_DIR / f"step-{step:06d}.jsonl"


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def rollout_rows(rollout: Any, rewards: torch.Tensor, advantages: torch.Tensor) -> list[dict[str, Any]]:
    """One record per row of `rollout` (a `rollout.Rollout`), in row order.

    rewards / advantages: [N] per row (all 0 for a method without rewards, e.g. SFT); the per-function
    values come from `rollout.reward_components` (None = the reward did not apply)."""
    components = getattr(rollout, "reward_components", None) or {}
    rows = []
    for i, src in enumerate(rollout.source):
        ex = rollout.examples[src]
        rows.append({"id": ex.id, "group": rollout.group_ids[i], "is_demo": bool(rollout.is_demo[i]),
                     "prompt": ex.prompt, "completion": rollout.texts[i], "answer": ex.answer,
                     "rewards": {name: _num(vals[i]) for name, vals in components.items()},
                     "reward": _num(rewards[i]), "advantage": _num(advantages[i]),
                     "truncated": bool(rollout.truncated[i]), "tokens": len(rollout.responses[i])})
    return rows


def write_rollouts(run_dir: Path, step: int, rows: list[dict[str, Any]]) -> Path:
    """Write the step's rows (replacing the file of a step that is run again after a resume)."""
    path = rollout_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, default=str) + "\n" for r in rows)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
