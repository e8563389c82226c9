"""Shared pieces of the vision studies: scale presets, generated train/test splits, running a recipe
with the study's overrides and seed, greedy held-out evaluation with per-item scores, bootstrap
interval cells and paired claim rows (`analysis.intervals`), the KL-schedule check, and markdown/JSON
table writing.

Imports duotune's tasks, data, trainers, rollout, rewards and models; never the CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from duotune.config import load_config
from duotune.data import Example, load_examples
from duotune.errors import ConfigError
from duotune.plotting import pyplot, save_figure
from duotune.tasks import write_task

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "vision"
TRAIN_SEED, TEST_SEED = 0, 1  # train and test splits also differ by content (tasks.split_of)


@dataclass(frozen=True)
class Scale:
    """How big a study run is. `steps` is every arm's budget in optimizer steps (same prompts per
    step), so SFT, GRPO and SFT -> GRPO see the same number of training prompts."""

    name: str
    model: str              # the model the warm-up starts from
    image_size: int         # generated image side (the processor resizes anyway)
    warmup_items: int
    warmup_steps: int
    train_items: int
    test_items: int
    steps: int
    prompts_per_step: int
    group_size: int
    max_completion_length: int
    eval_max_new_tokens: int
    warmup_lr: float
    sft_lr: float
    rl_lr: float
    tower_images: int = 0   # stage 1 of the warm-up (studies.tower): generated scenes, steps of 64, lr
    tower_steps: int = 0    # (0 steps: no tower pre-training, the SFT starts from the random tower)
    tower_lr: float = 1e-3
    seeds: int = 1          # every arm runs with run.seed 0 .. seeds-1 (one shared warm-up)


SCALES = {
    # Tests: a random tiny LLaVA, 1-2 steps, a handful of items; checks plumbing and table shapes.
    "tiny": Scale("tiny", "tiny-llava", 96, 8, 1, 8, 2, 2, 2, 2, 8, 8, 1e-3, 1e-3, 1e-3, 16, 2),
    # This 2-core shared CPU: a warm-up SFT step of 8 prompts (projector in full, LoRA on the LM and
    # tower) takes ~5.5 s on smollm2-vision (2 threads), a GRPO step with G = 4 about a minute, so the RL arms
    # get a handful of steps (see the study reports). 48 held-out items per task, 160 new tokens.
    # The tower is pre-trained first on 16,000 generated scenes (1,500 steps of 64, ~6 min on 2 threads).
    # Arms fine-tune every weight; SFT at 1e-5, RL at the papers' 1e-6. From the session-4 warm-up,
    # GRPO on counting for 6 steps took greedy counting from 50 % to 25 % at lr 5e-5 (per-token KL 0.6
    # after one step), to 27 % at 1e-5 and to 60 % at 1e-6; SFT at 1e-4 fell into repetition loops
    # (0 %), at 1e-5 it held 48 % (README, vision studies).
    "cpu": Scale("cpu", "smollm2-vision", 112, 1500, 120, 400, 48, 6, 4, 4, 128, 160, 3e-4, 1e-5, 1e-6,
                 16000, 1500),
    # docs/protocol.md (issue 20 item 5): the cpu scale's warm-up and learning rates, 10x its RL steps
    # (60) so GRPO-D's schedule can act, 400 held-out items per task (0.25 points each; the VLAA mixed
    # split 200 per type) and 3 seeds. About a minute per GRPO step here: many hours on 2 cores.
    "protocol": Scale("protocol", "smollm2-vision", 112, 1500, 120, 400, 400, 60, 4, 4, 128, 160, 3e-4, 1e-5,
                      1e-6, 16000, 1500, seeds=3),
}


def get_scale(name: str | Scale, **overrides: Any) -> Scale:
    """The named scale (or `name` itself when already a Scale) with the non-None `overrides` applied,
    e.g. `get_scale("cpu", rl_lr=1e-6)`; unknown names and non-positive values raise ConfigError."""
    if isinstance(name, Scale):
        scale = name
    elif name not in SCALES:
        raise ConfigError(f"unknown study scale {name!r}; valid: {', '.join(SCALES)}")
    else:
        scale = SCALES[name]
    changes = {k: v for k, v in overrides.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(Scale)} - {"name", "model"}
    for key, value in changes.items():
        if key not in fields:
            raise ConfigError(f"unknown scale field {key!r}; valid: {', '.join(sorted(fields))}")
        if not value > 0:
            raise ConfigError(f"scale field {key}={value!r} must be positive")
    return dataclasses.replace(scale, **changes)


def add_scale_args(p: argparse.ArgumentParser) -> None:
    """The study CLIs' --scale and the overrides of its most-tuned fields."""
    p.add_argument("--scale", default="cpu", help="tiny | cpu | protocol (see duotune.studies.common.SCALES)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps of every arm (default: the scale's)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per arm, run.seed 0..N-1 (default: the "
                   "scale's: 1, protocol 3)")
    p.add_argument("--sft-lr", type=float, default=None, help="learning rate of SFT arms and stages "
                   "(default: the scale's)")
    p.add_argument("--rl-lr", type=float, default=None, help="learning rate of RL arms and stages "
                   "(default: the scale's)")


def scale_from_args(args: argparse.Namespace) -> Scale:
    return get_scale(args.scale, steps=args.steps, sft_lr=args.sft_lr, rl_lr=args.rl_lr, seeds=args.seeds)


def check_names(kind: str, given: tuple[str, ...], valid: Any) -> tuple[str, ...]:
    """`given` unchanged when every name is in `valid`; else a ConfigError listing the valid names."""
    bad = [g for g in given if g not in valid]
    if bad or not given:
        raise ConfigError(f"unknown {kind} {bad or list(given)!r}; choose from {', '.join(valid)}")
    return given


def write_split(task: str, n: int, split: str, out: Path, size: int) -> Path:
    """`out/<task>/<split>/data.jsonl` (+ images), reused when already written with n rows."""
    folder = out / task / split
    path = folder / "data.jsonl"
    if path.is_file() and len(path.read_text().splitlines()) == n:
        return path
    return write_task(task, n, TRAIN_SEED if split == "train" else TEST_SEED, folder, split=split, size=size)


def write_mixture(parts: list[tuple[str, int]], split: str, folder: Path, size: int, seed: int) -> Path:
    """One JSONL mixing several tasks' rows (images beside it), shuffled with `seed`."""
    import random

    rows: list[str] = []
    for task, n in parts:
        rows += write_task(task, n, seed, folder, split=split, size=size).read_text().splitlines()
    random.Random(seed).shuffle(rows)
    path = folder / "data.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def run_recipe(recipe: str | Path, overrides: list[str]) -> tuple[Any, float]:
    """Train `configs/vision/<recipe>.yaml` (or a path) with `overrides`; returns (RunResult, seconds)."""
    from duotune.trainers import TrainConfig, train

    path = Path(recipe) if Path(recipe).suffix else CONFIGS / f"{recipe}.yaml"
    cfg = load_config(TrainConfig, path, overrides)
    t0 = time.perf_counter()
    result = train(cfg)
    return result, time.perf_counter() - t0


def scale_overrides(scale: Scale, model: str, out: Path, name: str, train: Path, lr: float,
                    seed: int = 0) -> list[str]:
    return [f"model={model}", f"steps={scale.steps}", f"prompts_per_step={scale.prompts_per_step}",
            f"data.train={train}", f"rollout.group_size={scale.group_size}",
            f"rollout.max_completion_length={scale.max_completion_length}", f"optim.lr={lr}",
            f"run.output_dir={out}", f"run.name={name}", f"run.seed={seed}", "run.resume=never",
            "run.progress=false"]


def seeded(name: str, seed: int) -> str:
    """A run's name with its seed, e.g. `counting-grpo_d-s1` (results, run folders)."""
    return f"{name}-s{seed}"


def per_seed(results: dict[str, Any], name: str, seeds: int, test: str | None = None) -> list[dict[str, Any]]:
    """The evaluation of run `name` on `test` (or its only evaluation), one per seed; the base model
    (`name` = "base", trained by no one) is one evaluation for every seed."""
    runs = [results["base"]] if name == "base" else [results[seeded(name, s)] for s in range(seeds)]
    return [r[test] if test is not None else r for r in runs]


def items_of(evals: list[dict[str, Any]], keep: list[int] | None = None) -> list[list[float]]:
    """Seeds x items scores (`per_item`), optionally only the item indices `keep`."""
    return [[e["per_item"][i] for i in keep] if keep is not None else e["per_item"] for e in evals]


def interval_cell(evals: list[dict[str, Any]], keep: list[int] | None = None) -> str:
    """"mean [low, high]" in %: the bootstrap 95 % interval over items and seeds
    (`analysis.intervals.bootstrap_interval`); the mean alone for records without per-item scores."""
    from duotune.analysis.intervals import bootstrap_interval

    if not all("per_item" in e for e in evals):
        return pct(sum(e["accuracy"] for e in evals) / len(evals))
    mean, lo, hi = bootstrap_interval(items_of(evals, keep))
    return f"{pct(mean)} [{pct(lo)}, {pct(hi)}]"


def paired_row(claim: str, where: str, a: list[dict[str, Any]], b: list[dict[str, Any]],
               keep: list[int] | None = None) -> list[str]:
    """[claim, where, A - B in points, its 95 % interval, verdict] for the claim "A > B", paired on the
    same held-out items (`analysis.intervals.paired_bootstrap`)."""
    from duotune.analysis.intervals import paired_bootstrap

    d = paired_bootstrap(items_of(a, keep), items_of(b, keep))
    return [claim, where, f"{100 * d['diff']:+.1f}", f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]",
            d["verdict"]]


CLAIM_HEADER = ["claim (A > B)", "where", "A - B (points)", "95 % interval", "verdict"]


def schedule_check(metrics: Path, steps: int) -> dict[str, Any]:
    """Did a run's KL term act? kl/beta and per-token kl/mean at a third, two thirds and the end of
    training, and the share beta * KL / |policy loss| averaged over the steps (docs/protocol.md: below
    1 % the schedule did not act). None entries where the run logged no KL."""
    from duotune.trainers.metrics import read_metrics

    recs = [r for r in read_metrics(metrics) if isinstance(r.get("kl/mean"), (int, float))] if metrics.is_file() else []
    at = sorted({max(1, round(steps * f)) for f in (1 / 3, 2 / 3, 1.0)})
    by_step = {int(r["step"]): r for r in recs}
    points = {str(s): {k: by_step[s].get(k) for k in ("kl/beta", "kl/mean")} if s in by_step else None for s in at}
    term = [r["kl/beta"] * r["kl/mean"] for r in recs if isinstance(r.get("kl/beta"), (int, float))]
    loss = [abs(r["loss/pg"]) for r in recs if isinstance(r.get("loss/pg"), (int, float))]
    share = (sum(term) / len(term)) / (sum(loss) / len(loss)) if term and loss and sum(loss) > 0 else None
    return {"at": points, "kl_share": share, "acted": share is not None and share >= 0.01}


def evaluate_examples(bundle: Any, examples: list[Example], reward: str, max_new_tokens: int,
                      **reward_params: Any) -> dict[str, Any]:
    """Greedy decoding on held-out examples, scored by `reward` (accuracy = mean reward), plus the
    think/answer format rate, mean length and per-reward-type means. Image tokens are suppressed."""
    from duotune.rewards import get_reward
    from duotune.rollout import HFSampler, SamplingParams

    # at most 64 sequences a generate call: 400 items at once would need ~17 GB of KV cache
    sampler = HFSampler(bundle, batch_size=min(64, len(examples)), suppress_tokens=bundle.vision_token_ids or None)
    comps = [c[0] for c in sampler.sample(examples, SamplingParams(n=1, temperature=0.0,
                                                                     max_new_tokens=max_new_tokens))]
    texts = [c.text for c in comps]
    cols = {k: [ex.columns().get(k) for ex in examples] for k in ("answer", "reward_type", "id")}
    scores = [0.0 if v is None else float(v) for v in get_reward(reward, **reward_params)(texts, **cols)]
    fmt = get_reward("format_think_answer")(texts)
    by_type: dict[str, list[float]] = {}
    for ex, s in zip(examples, scores):
        by_type.setdefault(str(ex.reward_type), []).append(s)
    return {"accuracy": sum(scores) / len(scores), "format": sum(fmt) / len(fmt), "items": len(scores),
            "per_item": scores, "types": [str(ex.reward_type) for ex in examples],
            "mean_length": sum(len(c.token_ids) for c in comps) / len(comps),
            "by_type": {t: sum(v) / len(v) for t, v in sorted(by_type.items())},
            "samples": [{"id": ex.id, "gold": ex.answer, "completion": t, "score": s}
                        for ex, t, s in zip(examples[:4], texts, scores)]}


def load_split(path: Path, prompt_style: str) -> list[Example]:
    return load_examples(str(path), prompt_style=prompt_style)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_report(out: Path, stem: str, markdown: str, record: dict[str, Any], scale: Scale) -> None:
    """`<out>/<stem>.md` and `<out>/<stem>.json` (the record plus the scale it ran at)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    (out / f"{stem}.json").write_text(json.dumps({**record, "scale": asdict(scale)}, indent=2,
                                                 default=str) + "\n", encoding="utf-8")


def plot_curves(series: dict[str, Path], keys: list[str], out: Path, title: str) -> Path:
    """One panel per metric key, one line per run (label -> metrics.jsonl), saved as a PNG."""
    plt = pyplot()

    from duotune.trainers.metrics import read_metrics

    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, path in series.items():
            recs = read_metrics(path) if path.is_file() else []
            pts = [(r["step"], r[key]) for r in recs if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=label)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, out)
