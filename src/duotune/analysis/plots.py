"""The comparison's PNG figures: accuracy vs steps and vs training wall time, and the training curves
read from each run's metrics.jsonl (reward, entropy, response length, KL, SRFT's w_sft / w_rl,
GRPO-D's beta, CHORD's mu, HPT's share routed to SFT, ReLIFT's buffer, expert-prefix length, KL to a
distillation teacher, DAPO's sampling rounds), one line per method (mean over seeds at each step).

Imports matplotlib (Agg) and `duotune.jsonl` only; no torch.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from duotune import jsonl
from duotune.plotting import pyplot, save_figure

# (file stem, title, metrics.jsonl keys drawn on it); methods without the key are left out.
# Beta is drawn only from steps that had a KL term (`kl/mean` logged): an SFT stage has none.
TRAINING_PANELS = [
    ("reward", "training reward (on-policy mean)", ["reward/mean"]),
    ("entropy_all", "entropy, all response tokens", ["entropy/mean"]),
    ("entropy_on_policy", "entropy, on-policy tokens only", ["entropy/on_policy"]),
    ("response_length", "mean on-policy response length (tokens)", ["completion/len_mean"]),
    ("kl_trainer", "KL to the reference (trainer, where beta > 0)", ["kl/mean"]),
    ("srft_weights", "SRFT weights w_sft and w_rl", ["srft/w_sft", "srft/w_rl"]),
    ("grpo_d_beta", "KL weight beta (GRPO-D schedule)", ["kl/beta"]),
    ("chord_mu", "CHORD's SFT weight mu", ["chord/mu"]),
    ("routed_to_sft", "share of questions routed to SFT (HPT / SuperRL gate)", ["hpt/sft_frac"]),
    ("relift_buffer", "ReLIFT buffer of failed questions (size after the step)", ["relift/buffer_size"]),
    ("prefix_length", "prefix tokens per hybrid row, expert-prefix methods", ["prefix/len_mean"]),
    ("distill_kl", "KL(student || teacher) per token, on the student's samples", ["distill/reverse_kl"]),
    ("dynamic_rounds", "sampling rounds per step, DAPO dynamic sampling", ["dynamic/rounds"]),
]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Step records of a run (evaluation records dropped; a step logged twice keeps its last record)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for rec in jsonl.read(path):  # a torn last line is skipped; a bad middle line names its row
        if rec.get("kind") != "eval":
            by_step[int(rec["step"])] = rec
    return [by_step[s] for s in sorted(by_step)]


def mean_series(runs: list[list[tuple[float, float]]]) -> tuple[list[float], list[float]]:
    """Average several (x, y) series point-wise by x (seeds share their step grid)."""
    acc: dict[float, list[float]] = defaultdict(list)
    for series in runs:
        for x, y in series:
            acc[x].append(y)
    xs = sorted(acc)
    return xs, [sum(acc[x]) / len(acc[x]) for x in xs]


def line_plot(series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str, ylabel: str,
              out: Path) -> Path | None:
    """One line per label; None (no file) when no label has a point."""
    plt = pyplot()

    series = {k: v for k, v in series.items() if v[0]}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, marker="o" if len(xs) < 40 else None, ms=3, label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out)


def mean_by_step(done: list[dict[str, Any]], name: str) -> dict[str, list[tuple[int, float, float]]]:
    """{method: [(step, wall_s, accuracy)]} on eval set `name`. Seeds share their step grid but not their
    wall times, so wall time and accuracy are both averaged over seeds per evaluated step."""
    by_step: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in done:
        for p in r["curve"]:
            if name in p["evals"]:
                by_step[r["method"]][p["step"]].append((p["wall_s"], p["evals"][name]["accuracy"]))
    return {m: [(s, sum(w for w, _ in v) / len(v), sum(a for _, a in v) / len(v)) for s, v in sorted(pts.items())]
            for m, pts in by_step.items()}


def accuracy_series(done: list[dict[str, Any]], name: str, axis: str) -> dict[str, tuple[list[float], list[float]]]:
    """{method: (x, accuracy)} on eval set `name`, x = `axis` ("step" or "wall_s"), from `mean_by_step`."""
    col = 0 if axis == "step" else 1
    return {m: ([p[col] for p in pts], [p[2] for p in pts]) for m, pts in mean_by_step(done, name).items()}


def accuracy_plots(done: list[dict[str, Any]], sets: list[str], out_dir: Path) -> list[Path]:
    """Per eval set: accuracy vs global step and vs cumulative training seconds."""
    paths = []
    for name in sets:
        for axis, xlabel in (("step", "global step (SFT steps of pipelines included)"),
                             ("wall_s", "training wall time (s)")):
            p = line_plot(accuracy_series(done, name, axis), f"{name}: accuracy (mean over seeds per step)",
                          xlabel, "accuracy", out_dir / f"accuracy_{name}_vs_{'steps' if axis == 'step' else 'wall'}.png")
            paths += [p] if p else []
    return paths


def training_plots(done: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """The TRAINING_PANELS from every run's metrics.jsonl, plus KL(policy || initial) from the evals."""
    metrics = {id(r): read_metrics(Path(r["run_dir"])) for r in done if r.get("run_dir")}
    paths = []
    for stem, title, keys in TRAINING_PANELS:
        series = {}
        for key in keys:
            runs: dict[str, list[list[tuple[float, float]]]] = defaultdict(list)
            for r in done:
                pts = [(rec["step"], rec[key]) for rec in metrics.get(id(r), [])
                       if isinstance(rec.get(key), (int, float)) and (key != "kl/beta" or "kl/mean" in rec)]
                if pts:
                    runs[r["method"]].append(pts)
            suffix = f" {key}" if len(keys) > 1 else ""
            series.update({f"{m}{suffix}": mean_series(v) for m, v in runs.items()})
        p = line_plot(series, title, "global step", title.split(",")[0], out_dir / f"{stem}.png")
        paths += [p] if p else []
    runs = defaultdict(list)
    for r in done:
        runs[r["method"]].append([(p["step"], p["kl_to_initial"]) for p in r["curve"]
                                  if p.get("kl_to_initial") is not None])
    p = line_plot({m: mean_series(v) for m, v in runs.items()}, "KL(policy || initial model), sampled at T=1",
                  "global step", "KL per token (nats)", out_dir / "kl_to_initial.png")
    return paths + ([p] if p else [])
