"""Metric sinks: one JSON record per step to metrics.jsonl (always), a tqdm bar, optional
tensorboard/wandb, and curves.png at the end (matplotlib, Agg backend).

Imports json, tqdm, matplotlib (lazily, only for plots) and optional trackers; no torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from duotune.errors import ConfigError

# (panel title, metric keys) for curves.png; missing keys are skipped.
PANELS = [
    ("reward", ["reward/mean", "reward/demo_mean"]),
    ("entropy", ["entropy/mean", "entropy/on_policy"]),
    ("completion length", ["completion/len_mean", "completion/len_max"]),
    ("KL / beta", ["kl/mean", "kl/beta"]),
    ("loss terms", ["loss/total", "loss/sft", "loss/off_policy", "loss/on_policy", "loss/pg", "loss/nll"]),
    ("grad norm / lr", ["train/grad_norm", "train/lr"]),
]


class MetricsLogger:
    """Writes records; `is_main` False (non-zero ranks) makes every call a no-op."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, *, progress: bool,
                 tensorboard: bool, wandb: bool, is_main: bool, run_name: str, config: dict[str, Any]):
        self.is_main = is_main
        self.path = run_dir / "metrics.jsonl"
        self.tb = self.wb = None
        self.bar = None
        if not is_main:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("run.tensorboard=true needs the tensorboard package: "
                                  "pip install tensorboard (or set run.tensorboard=false)") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if wandb:
            try:
                import wandb as wandb_mod
            except ImportError:
                raise ConfigError("run.wandb=true needs the wandb package: pip install wandb "
                                  "(or set run.wandb=false)") from None
            self.wb = wandb_mod.init(name=run_name, dir=str(run_dir), config=config)
        if progress:
            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        clean = {k: _jsonable(v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        step = int(record["step"])
        if self.tb is not None:
            for k, v in clean.items():
                if isinstance(v, (int, float)) and v is not None:
                    self.tb.add_scalar(k, v, step)
        if self.wb is not None:
            self.wb.log(clean, step=step)
        if self.bar is not None and record.get("kind") != "eval":
            self.bar.update(1)
            self.bar.set_postfix({label: f"{clean[k]:.3g}" for label, k in
                                  (("reward", "reward/mean"), ("loss", "loss/total"), ("beta", "kl/beta"))
                                  if isinstance(clean.get(k), float)})

    def write(self, message: str) -> None:
        """A console line that does not break the progress bar."""
        if self.is_main:
            (self.bar.write if self.bar is not None else print)(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, out: Path) -> Path | None:
    """Plot the PANELS curves from metrics.jsonl into `out` (PNG); None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics_path.is_file():
        return None
    records = read_metrics(metrics_path)
    if not records:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (title, keys) in zip(axes.flat, PANELS):
        for key in keys:
            pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), label=key, marker="." if len(pts) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
