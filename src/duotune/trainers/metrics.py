"""Metric sinks: one JSON record per step to metrics.jsonl (always), a tqdm bar, optional
tensorboard/wandb, and curves.png at the end (matplotlib, Agg backend).

Imports json, tqdm, matplotlib (lazily, only for plots) and optional trackers; no torch.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from duotune import jsonl
from duotune.errors import ConfigError
from duotune.plotting import pyplot, save_figure

# (panel title, metric-key patterns, keys plotted on a right-hand axis) for curves.png. Patterns are
# fnmatch globs so every method's loss terms appear (srft/loss_*, luffy/demo_loss, loss/nll, ...).
PANELS = [
    ("reward", ["reward/mean", "reward/demo_mean", "reward/*/mean", "solve_rate/*"], []),
    ("entropy", ["entropy/mean", "entropy/on_policy", "srft/entropy_demo"], []),
    ("completion length", ["completion/len_mean", "completion/len_max", "completion/demo_len_mean"],
     ["completion/clipped_ratio"]),
    ("KL / beta", ["kl/mean"], ["kl/beta"]),
    ("loss terms", ["loss/*", "srft/loss_*", "luffy/demo_loss"], []),
    ("grad norm / lr", ["train/grad_norm"], ["train/lr"]),
]
# Not losses (a schedule weight) or duplicates of loss/total.
_NOT_LOSS = {"loss/sft_weight", "srft/loss"}


def panel_keys(records: list[dict[str, Any]]) -> list[tuple[str, list[str], list[str]]]:
    """(title, left-axis keys, right-axis keys) present in `records`, in PANELS order."""
    seen = list(dict.fromkeys(k for r in records for k, v in r.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)))

    def pick(patterns: list[str]) -> list[str]:
        found = (k for pat in patterns for k in seen if fnmatch.fnmatchcase(k, pat))
        return [k for k in dict.fromkeys(found) if k not in _NOT_LOSS]

    return [(title, pick(left), pick(right)) for title, left, right in PANELS]


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
        # A resumed run redoes the steps after its checkpoint: their old records (and a torn tail) go.
        jsonl.keep(self.path, lambda r: int(r.get("step", 0)) <= start_step)
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
        jsonl.append(self.path, [clean])
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
    """The records of metrics.jsonl by step; a step logged twice (a folder resumed by an older
    duotune) keeps its last record, so curves never double back. A bad line names file and row."""
    latest: dict[tuple[int, bool], dict[str, Any]] = {}
    for r in jsonl.read(path):
        key = (int(r.get("step", 0)), r.get("kind") == "eval")
        latest.pop(key, None)
        latest[key] = r
    return sorted(latest.values(), key=lambda r: int(r.get("step", 0)))


def plot_curves(metrics_path: Path, out: Path) -> Path | None:
    """Plot the PANELS curves of the training records in metrics.jsonl into `out` (PNG); None when
    there is nothing to plot. Right-hand-axis keys (beta, lr, clipped ratio) get their own scale."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    if not metrics_path.is_file():
        return None
    records = [r for r in read_metrics(metrics_path) if r.get("kind") != "eval"]
    if not records:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (title, left, right) in zip(axes.flat, panel_keys(records)):
        if not left:  # e.g. beta without a KL estimate: one axis is enough
            left, right = right, []
        lines = _draw(ax, records, left, "-", 0)
        if right:
            lines += _draw(ax.twinx(), records, right, "--", len(lines))
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if lines:
            ax.legend(handles=lines, fontsize=7)
        else:  # e.g. reward and KL of an SFT run: say so rather than draw empty axes
            ax.text(0.5, 0.5, "not logged by this run", ha="center", va="center", transform=ax.transAxes,
                    color="0.5")
    return save_figure(fig, out)


def _draw(ax: Any, records: list[dict[str, Any]], keys: list[str], style: str, color0: int) -> list[Any]:
    """One line per key (colours continue from `color0` so a twin axis never repeats them)."""
    lines = []
    for key in keys:
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if pts:
            lines += ax.plot(*zip(*pts), style, label=key, color=f"C{(color0 + len(lines)) % 10}",
                             marker="." if len(pts) < 30 else None)
    return lines
