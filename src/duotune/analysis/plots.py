"""The comparison's PNG figures: accuracy (in %, with 95 % Wilson intervals, the base model as a marked
reference line) vs steps and vs training wall time, and the training curves read from each run's
metrics.jsonl (reward, entropy, response length, KL, SRFT's w_sft / w_rl, GRPO-D's beta, CHORD's mu,
HPT's share routed to SFT, ReLIFT's buffer, expert-prefix length, KL to a distillation teacher, DAPO's
sampling rounds), one line per method (mean over seeds at each step), each method in the same colour
in every figure.

Imports matplotlib (Agg) and `duotune.jsonl` only; no torch.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from duotune import jsonl
from duotune.analysis.compare_config import DEFAULT_METHODS
from duotune.analysis.intervals import wilson_interval
from duotune.plotting import pyplot, save_figure

# One colour per method, the same in every figure (matplotlib's tab10 cycle names); SRFT, the headline
# method, is red. Methods outside this list get a colour from the spare ones by a stable hash of the name.
METHOD_COLORS = {"base": "0.35", "sft": "C0", "grpo": "C1", "grpo_d": "C2", "srft": "C3", "sft_then_grpo": "C4",
                 "grpo_then_sft": "C5", "rl_sft_loss": "C6", "luffy": "C9",
                 # the SFT+RL successors (issue 19): tab20's light shades and two dark ones
                 "chord_mu": "#aec7e8", "chord_phi": "#ffbb78", "hpt": "#98df8a", "superrl": "#ff9896",
                 "relift": "#c5b0d5", "rl_plus": "#c49c94", "uft": "#f7b6d2", "prefix_rft": "#dbdb8d",
                 "trapo": "#9edae5", "distill": "#393b79", "dapo": "#637939"}
_SPARE_COLORS = ["C7", "C8", "#8c564b", "#8c6d31", "#843c39", "#17becf"]
assert set(DEFAULT_METHODS) <= set(METHOD_COLORS)

# (file stem, title, metrics.jsonl keys drawn on it, methods it is drawn for: None = every method that
# logged the keys). Beta is drawn only from steps that had a KL term (`kl/mean` logged), and only for
# GRPO-D, whose schedule it shows: a constant GRPO beta is not a schedule.
TRAINING_PANELS = [
    ("reward", "training reward (on-policy mean)", ["reward/mean"], None),
    ("entropy_all", "entropy, all response tokens", ["entropy/mean"], None),
    ("entropy_on_policy", "entropy, on-policy tokens only", ["entropy/on_policy"], None),
    ("response_length", "mean on-policy response length (tokens)", ["completion/len_mean"], None),
    ("kl_trainer", "KL to the reference (trainer, where beta > 0)", ["kl/mean"], None),
    ("srft_weights", "SRFT weights w_sft and w_rl", ["srft/w_sft", "srft/w_rl"], {"srft"}),
    ("grpo_d_beta", "KL weight beta (GRPO-D schedule)", ["kl/beta"], {"grpo_d"}),
    ("chord_mu", "CHORD's SFT weight mu", ["chord/mu"], {"chord_mu", "chord_phi"}),
    ("routed_to_sft", "share of questions routed to SFT (HPT / SuperRL gate)", ["hpt/sft_frac"], {"hpt", "superrl"}),
    ("relift_buffer", "ReLIFT buffer of failed questions (size after the step)", ["relift/buffer_size"], {"relift"}),
    ("prefix_length", "prefix tokens per hybrid row, expert-prefix methods", ["prefix/len_mean"],
     {"uft", "prefix_rft", "trapo"}),
    ("distill_kl", "KL(student || teacher) per token, on the student's samples", ["distill/reverse_kl"],
     {"distill"}),
    ("dynamic_rounds", "sampling rounds per step, DAPO dynamic sampling", ["dynamic/rounds"], {"dapo"}),
]
_STYLES = ["-", "--", ":", "-."]


def method_color(method: str) -> str:
    """The method's colour (fixed for the built-in methods, hashed for any other name)."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _SPARE_COLORS[zlib.crc32(method.encode()) % len(_SPARE_COLORS)]


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
              out: Path, *, colors: dict[str, str] | None = None, styles: dict[str, str] | None = None,
              bands: dict[str, tuple[list[float], list[float]]] | None = None,
              reference: tuple[str, float] | None = None) -> Path | None:
    """One line per label (colour and line style from `colors` / `styles` when given), an optional
    shaded band per label (lo, hi at each x) and a horizontal reference line (label, y); None (no
    file) when no label has a point."""
    plt = pyplot()

    series = {k: v for k, v in series.items() if v[0]}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    if reference is not None:
        ax.axhline(reference[1], color=METHOD_COLORS["base"], ls="--", lw=1.2, label=reference[0], zorder=1)
    for label, (xs, ys) in sorted(series.items()):
        color = (colors or {}).get(label)
        ax.plot(xs, ys, (styles or {}).get(label, "-"), marker="o" if len(xs) < 40 else None, ms=4,
                label=label, color=color, zorder=3)
        if bands and label in bands:
            ax.fill_between(xs, *bands[label], color=color, alpha=0.15, lw=0, zorder=2)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
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


def _items(done: list[dict[str, Any]], name: str) -> int:
    """Held-out items of eval set `name` (each curve point records it)."""
    return next((int(p["evals"][name].get("items", 0)) for r in done for p in r["curve"] if name in p["evals"]), 0)


def accuracy_plots(done: list[dict[str, Any]], sets: list[str], out_dir: Path) -> list[Path]:
    """Per eval set: accuracy (%) vs global step and vs cumulative training seconds; a band is the
    95 % Wilson interval over the set's items around each point; the untrained model is a dashed
    reference line (every method's curve starts from it at step 0)."""
    paths = []
    for name in sets:
        n = _items(done, name)
        base = accuracy_series([r for r in done if r["method"] == "base"], name, "step").get("base")
        reference = (f"base (initial model): {100 * base[1][0]:.1f} %", 100 * base[1][0]) if base else None
        for axis, xlabel in (("step", "global step (SFT steps of pipelines included)"),
                             ("wall_s", "training wall time (s)")):
            series = {m: (xs, [100 * y for y in ys])
                      for m, (xs, ys) in accuracy_series(done, name, axis).items() if m != "base"}
            bands = {m: tuple(list(v) for v in zip(*(wilson_interval(y / 100, n, percent=True) for y in ys)))
                     for m, (_, ys) in series.items()} if n else None
            p = line_plot(series, f"{name}: accuracy, mean over seeds (band: 95 % Wilson interval, {n} items)",
                          xlabel, "accuracy (%)", out_dir / f"accuracy_{name}_vs_{'steps' if axis == 'step' else 'wall'}.png",
                          colors={m: method_color(m) for m in series}, bands=bands, reference=reference)
            paths += [p] if p else []
    return paths


def training_plots(done: list[dict[str, Any]], root: Path, out_dir: Path) -> list[Path]:
    """The TRAINING_PANELS from every run's `<root>/runs/<method>-s<seed>/metrics.jsonl` (the comparison
    folder's layout, also where the study store restores a log; a result's `run_dir` names where it ran),
    plus KL(policy || initial) from the evals."""
    metrics = {id(r): read_metrics(root / "runs" / f"{r['method']}-s{r['seed']}") for r in done}
    paths = []
    for stem, title, keys, only in TRAINING_PANELS:
        series, colors, styles = {}, {}, {}
        for k, key in enumerate(keys):
            runs: dict[str, list[list[tuple[float, float]]]] = defaultdict(list)
            for r in done:
                if only is not None and r["method"] not in only:
                    continue
                pts = [(rec["step"], rec[key]) for rec in metrics.get(id(r), [])
                       if isinstance(rec.get(key), (int, float)) and (key != "kl/beta" or "kl/mean" in rec)]
                if pts:
                    runs[r["method"]].append(pts)
            for m, v in runs.items():
                label = f"{m} {key}" if len(keys) > 1 else m
                series[label], colors[label], styles[label] = mean_series(v), method_color(m), _STYLES[k % 4]
        p = line_plot(series, title, "global step", title.split(",")[0], out_dir / f"{stem}.png",
                      colors=colors, styles=styles)
        paths += [p] if p else []
    runs = defaultdict(list)
    for r in done:
        runs[r["method"]].append([(p["step"], p["kl_to_initial"]) for p in r["curve"]
                                  if p.get("kl_to_initial") is not None])
    p = line_plot({m: mean_series(v) for m, v in runs.items()}, "KL(policy || initial model), sampled at T=1",
                  "global step", "KL per token (nats)", out_dir / "kl_to_initial.png",
                  colors={m: method_color(m) for m in runs})
    return paths + ([p] if p else [])


def interval_plot(methods: dict[str, dict[str, Any]], set_name: str, out: Path) -> Path | None:
    """Final accuracy (%) per method on `set_name` as a point with its 95 % interval (the summary's
    `ci95`: bootstrap over items and seeds) and each seed as a small mark, sorted by the mean, the base
    model as a dashed reference line. None when no method has an interval on that set."""
    rows = [(m, e["final"][set_name], e["ci95"][set_name]) for m, e in methods.items()
            if set_name in e.get("ci95", {}) and set_name in e.get("final", {})]
    if not rows:
        return None
    rows.sort(key=lambda r: r[1]["mean"])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.2))
    for y, (m, s, (lo, hi)) in enumerate(rows):
        c = method_color(m)
        ax.plot([100 * lo, 100 * hi], [y, y], color=c, lw=2.5, solid_capstyle="butt")
        ax.plot(100 * s["mean"], y, "o", color=c, ms=6, mec="black", mew=0.6)
        ax.plot([100 * v for v in s["per_seed"]], [y] * len(s["per_seed"]), "|", color="black", ms=9)
        if m == "base":
            ax.axvline(100 * s["mean"], color="0.35", ls="--", lw=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_title(f"{set_name}: accuracy at the last step (mean, seeds |, 95 % bootstrap)", fontsize=10)
    ax.set_xlabel("accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out)
