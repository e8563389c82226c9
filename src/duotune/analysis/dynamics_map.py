"""Learning-dynamics map (SPEC 9): each checkpoint is placed by its mean token log-prob on fixed
reference responses from two or more reference models (e.g. the base model's answers and the task's
programmatic demonstrations), so every run is drawn as a path from the shared initial point.

Imports torch (through `analysis.teacher`), `duotune.models`, matplotlib (lazily); never trainers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duotune.analysis.teacher import teacher_force, with_responses
from duotune.data import Example
from duotune.errors import ConfigError, DataError
from duotune.plotting import pyplot, save_figure

MAX_TOKENS = 512


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "ref"


def model_responses(bundle: Any, examples: list[Example], max_new_tokens: int) -> list[str]:
    """Greedy answers of `bundle` to `examples` (the fixed responses a reference model contributes)."""
    from duotune.rollout import HFSampler, SamplingParams

    outs = HFSampler(bundle, batch_size=16).sample(
        examples, SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens, seed=0))
    return [o[0].text for o in outs]


def reference_sets(references: list[str], examples: list[Example], cache_dir: Path | None, *,
                   max_new_tokens: int = 128, initial: Callable[[], Any] | None = None,
                   initial_name: str | None = None) -> dict[str, list[Example]]:
    """{reference: examples whose `demo` is that reference's response}; `demos` keeps the examples'
    own demonstrations, `model:<name>` uses that model's greedy answers (cached in `cache_dir`)."""
    from duotune.models import load_model

    out: dict[str, list[Example]] = {}
    for ref in references:
        if ref == "demos":
            missing = [ex.id for ex in examples if not ex.demo]
            if missing:
                raise DataError(f"reference `demos` needs a demonstration for every item; {missing[0]!r} "
                                "has none (use a task with demos or a `model:` reference)", field="demo")
            out[ref] = list(examples)
            continue
        if not ref.startswith("model:"):
            raise ConfigError(f"map reference {ref!r} must be `demos` or `model:<name or path>`")
        name = ref[len("model:"):]
        cache = cache_dir / f"{_slug(name)}.json" if cache_dir is not None else None
        if cache is not None and cache.is_file():
            cached = json.loads(cache.read_text())
            if cached.get("ids") == [ex.id for ex in examples]:
                out[ref] = with_responses(examples, cached["responses"])
                continue
        bundle = initial() if initial is not None and name == initial_name else load_model(name)
        responses = model_responses(bundle, examples, max_new_tokens)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"ids": [ex.id for ex in examples], "responses": responses}))
        out[ref] = with_responses(examples, responses)
    return out


def coordinates(bundle: Any, refs: dict[str, list[Example]]) -> dict[str, float]:
    """The checkpoint's map position: token-mean log p of each reference set's responses."""
    return {name: teacher_force(bundle, examples, max_tokens=MAX_TOKENS).mean_logp()
            for name, examples in refs.items()}


def _axis_label(ref: str) -> str:
    """'demos' -> 'the demonstrations'; 'model:<name>' -> "<name>'s greedy answers"."""
    if ref == "demos":
        return "the demonstrations"
    name = ref.removeprefix("model:").rstrip("/").split("/")[-1]
    return f"{name}'s greedy answers"


def plot_map(paths: dict[str, list[dict[str, Any]]], axes: tuple[str, str], out: Path,
             title: str = "learning-dynamics map") -> Path:
    """Draw one path per method: points {"step", "map": {ref: mean logp}} in step order; every point is
    labelled with its step (boxed, offset from the marker, in the method's colour), the shared start
    (the initial model) is a black star. Method colours are `plots.method_color`'s."""
    from duotune.analysis.plots import method_color

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 7))
    start = None
    for method, pts in sorted(paths.items()):
        pts = sorted((p for p in pts if all(a in (p.get("map") or {}) for a in axes)), key=lambda p: p["step"])
        if not pts:
            continue
        xs = [p["map"][axes[0]] for p in pts]
        ys = [p["map"][axes[1]] for p in pts]
        if method == "base":  # the untrained model is every path's start, drawn once as the star
            start = (xs[0], ys[0])
            continue
        color = method_color(re.sub(r"-s\d+$", "", method))  # paths may be named <method>-s<seed>
        ax.plot(xs, ys, marker="o", ms=6, lw=2, label=method, color=color)
        for p, x, y in zip(pts, xs, ys):
            if p["step"] == 0:
                start = (x, y)
                continue
            ax.annotate(f"{p['step']}", (x, y), xytext=(6, 6), textcoords="offset points", fontsize=9,
                        color=color, fontweight="bold",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    if start is not None:
        ax.plot(*start, marker="*", ms=16, color="black", ls="none", label="initial model (step 0)", zorder=5)
    ax.set_xlabel(f"mean log p of {_axis_label(axes[0])}  (higher = more likely)", fontsize=11)
    ax.set_ylabel(f"mean log p of {_axis_label(axes[1])}", fontsize=11)
    ax.set_title(f"{title}: each point is a checkpoint, labelled with its step", fontsize=12)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=10, loc="best")
    return save_figure(fig, out)
