"""Metric sinks: one JSON record per step to metrics.jsonl (always), a tqdm progress line, accelerate's
experiment trackers (tensorboard, wandb, mlflow, ... through `log_with`), and curves.png at the end.

Imports json, tqdm, accelerate's tracking module (lazily) and matplotlib (lazily, only for plots); no torch.
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


# The pip package behind each of accelerate's built-in trackers (for the error when it is missing).
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet-ml",
                    "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab",
                    "trackio": "trackio"}


def accelerator_kwargs(log_with: list[str], run_dir: Path) -> dict[str, Any]:
    """`Accelerator(**...)` arguments for the trackers in `log_with` (accelerate's names, or a name
    registered with `accelerate.tracking.register_tracker_class`); logs go under <run_dir>/trackers.
    A tracker whose package is missing is a ConfigError naming it (accelerate would drop it silently)."""
    if not log_with:
        return {}
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    from accelerate.utils import ProjectConfiguration

    available = {str(t) for t in get_available_trackers()}
    for name in log_with:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ConfigError(f"run.log_with: unknown tracker {name!r}; accelerate's trackers are "
                              f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
        if name in TRACKER_PACKAGES and name not in available:
            raise ConfigError(f"run.log_with: tracker {name!r} needs the {TRACKER_PACKAGES[name]} package: "
                              f"pip install {TRACKER_PACKAGES[name]} (tensorboard, wandb and mlflow come with "
                              "pip install 'duotune[tracking]'), or remove it from run.log_with")
    return {"log_with": list(log_with),
            "project_config": ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "trackers"))}


def start_trackers(accelerator: Any, project: str, run_name: str, config: dict[str, Any]) -> None:
    """`init_trackers` with the resolved config flattened to dotted keys (tensorboard's hparams take
    scalars only); wandb and mlflow name the run after the run folder."""
    if not accelerator.log_with:
        return
    accelerator.init_trackers(project, config=flatten_config(config),
                              init_kwargs={"wandb": {"name": run_name}, "mlflow": {"run_name": run_name}})


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 1e-5}} -> {'optim.lr': 1e-5}; lists and None become strings."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


# (label, metric keys in order of preference) shown on the progress line; a missing key is left out.
PROGRESS_FIELDS = [("reward", ["reward/mean"]), ("solved", ["solve_rate/on_policy"]), ("kl", ["kl/mean"]),
                   ("entropy", ["entropy/on_policy", "entropy/mean"]),
                   ("len", ["completion/len_mean", "completion/demo_len_mean"]), ("loss", ["loss/total"]),
                   ("s/step", ["time/step"])]


def progress_fields(record: dict[str, Any]) -> dict[str, str]:
    """The progress line's values: reward, solve rate, KL (when the step had a KL term), entropy,
    response length (the demos' for SFT), loss and step time, each as 3 significant digits."""
    out = {}
    for label, keys in PROGRESS_FIELDS:
        value = next((record[k] for k in keys if isinstance(record.get(k), (int, float))
                      and not isinstance(record.get(k), bool)), None)
        if value is not None:
            out[label] = f"{value:.3g}"
    return out


class MetricsLogger:
    """Writes records to metrics.jsonl and the accelerate trackers, draws the progress line, and writes
    the rollouts handed to `add_rollouts` (`rollout_log`); `is_main` False (non-zero ranks) makes
    every call a no-op. `accelerator`: its trackers (`log_with`) get every numeric value per step."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, *, progress: bool, is_main: bool,
                 desc: str = "train", accelerator: Any = None, rollouts_every: int = 0):
        self.is_main = is_main
        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        self.accelerator = accelerator if accelerator is not None and accelerator.trackers else None
        self.rollouts_every = rollouts_every
        self._rollouts: list[dict[str, Any]] = []
        self.bar = None
        if not is_main:
            return
        # A resumed run redoes the steps after its checkpoint: their old records (and a torn tail) go.
        jsonl.keep(self.path, lambda r: int(r.get("step", 0)) <= start_step)
        if progress:
            self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, dynamic_ncols=True)

    def add_rollouts(self, rows: list[dict[str, Any]]) -> None:
        """This step's sampled rows; written with the step's record when the step is due."""
        self._rollouts = rows

    def log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        clean = {k: _jsonable(v) for k, v in record.items()}
        jsonl.append(self.path, [clean])
        step = int(record["step"])
        if self.accelerator is not None:
            self.accelerator.log({k: v for k, v in clean.items() if isinstance(v, (int, float))
                                  and not isinstance(v, bool)}, step=step)
        if record.get("kind") == "eval":
            return
        if self._rollouts and self.rollouts_every and step % self.rollouts_every == 0:
            from duotune.trainers.rollout_log import write_rollouts

            write_rollouts(self.run_dir, step, self._rollouts)
        self._rollouts = []
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(progress_fields(clean))

    def write(self, message: str) -> None:
        """A console line that does not break the progress bar."""
        if self.is_main:
            (self.bar.write if self.bar is not None else print)(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.accelerator is not None:  # not end_training(): that also destroys the process group
            for tracker in self.accelerator.trackers:
                tracker.finish()


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
