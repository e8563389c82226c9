"""VLAA-Thinking study (SPEC 3, issue 7 item 4): one mixed dataset (counting -> digit, geometry -> math,
counting_mcq -> mcq, grounding -> iou) trained with the `mixed` reward; GRPO alone vs SFT alone vs
SFT -> GRPO on the same budget (optimizer steps x prompts per step), evaluated per reward type on a
held-out mixed split, with per-type training-reward curves (`reward/mixed/<type>`).

`python -m duotune.studies.vlaa --scale cpu --out runs/vlaa`. Imports the studies' modules and models.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from duotune.studies.common import (
    Scale,
    add_scale_args,
    check_names,
    evaluate_examples,
    get_scale,
    load_split,
    markdown_table,
    pct,
    plot_curves,
    run_recipe,
    scale_from_args,
    scale_overrides,
    write_mixture,
    write_report,
)
from duotune.studies.warmup import ensure_warmup

# task -> the reward type its rows carry (set by the generators; listed for the report)
MIXTURE = {"counting": "digit", "geometry": "math", "counting_mcq": "mcq", "grounding": "iou"}
ARMS = {"grpo": "GRPO", "sft": "SFT", "sft_then_grpo": "SFT -> GRPO"}
PROMPT_STYLE = "vlaa"  # R1 system prompt asking for <think> </think><answer> </answer> (SPEC 3)


def arm_overrides(arm: str, scale: Any) -> list[str]:
    """SFT -> GRPO splits the same step budget between its stages, each stage with its own lr."""
    if arm != "sft_then_grpo":
        return []
    sft = max(1, scale.steps // 2)
    rl = max(1, scale.steps - sft)
    # Index overrides keep each stage's own settings (the GRPO stage's adaptive KL) from the recipe.
    return [f"stages.0.steps={sft}", f"stages.0.overrides={{optim.lr: {scale.sft_lr}}}",
            f"stages.1.steps={rl}", f"stages.1.overrides={{optim.lr: {scale.rl_lr}}}"]


def run(scale_name: str | Scale, out: Path, *, arms: tuple[str, ...] = tuple(ARMS),
        warmup: Path | None = None) -> dict[str, Any]:
    """Train every arm on the mixed split, evaluate each (and the base) per reward type, write tables."""
    from duotune.models import load_model

    scale = get_scale(scale_name)
    arms = check_names("arm", arms, ARMS)
    out = Path(out)
    t_start = time.perf_counter()
    base = Path(warmup) if warmup is not None else ensure_warmup(scale, out)
    per_task = max(1, scale.train_items // len(MIXTURE))
    train = write_mixture([(t, per_task) for t in MIXTURE], "train", out / "data" / "mixed-train",
                          scale.image_size, 0)
    test = load_split(write_mixture([(t, max(1, scale.test_items // 2)) for t in MIXTURE], "test",
                                    out / "data" / "mixed-test", scale.image_size, 1), PROMPT_STYLE)
    t0 = time.perf_counter()
    results = {"base": evaluate_examples(load_model(str(base)), test, "mixed", scale.eval_max_new_tokens)}
    timings = {"eval/base": time.perf_counter() - t0}
    for arm in arms:
        lr = scale.sft_lr if arm == "sft" else scale.rl_lr
        overrides = scale_overrides(scale, str(base), out / "runs", arm, train, lr) + arm_overrides(arm, scale)
        res, seconds = run_recipe(f"vlaa_{arm}", overrides)
        timings[f"train/{arm}"] = seconds
        t0 = time.perf_counter()
        results[arm] = evaluate_examples(res.bundle, test, "mixed", scale.eval_max_new_tokens)
        timings[f"eval/{arm}"] = time.perf_counter() - t0
        res.bundle = None
    types = sorted(set(MIXTURE.values()))
    plot_curves({ARMS[a]: out / "runs" / a / "metrics.jsonl" for a in arms if a != "sft"},
                [f"reward/mixed/{t}" for t in types] + ["reward/mean"], out / "curves_per_type.png",
                "VLAA-Thinking study: training reward per type")
    timings["total"] = time.perf_counter() - t_start
    return write_tables(out, results, arms, types, timings, scale, str(base))


def write_tables(out: Path, results: dict[str, Any], arms: tuple[str, ...], types: list[str],
                 timings: dict[str, float], scale: Any, base: str) -> dict[str, Any]:
    """Rows = base + arms; columns = held-out mean reward per type, overall, format rate, train seconds."""
    header = ["model"] + types + ["overall", "format %", "train s"]
    rows = []
    for key in ["base", *arms]:
        r = results[key]
        train_s = timings.get(f"train/{key}")
        rows.append([ARMS.get(key, "base (warm-up)")] + [pct(r["by_type"].get(t)) for t in types]
                    + [pct(r["accuracy"]), pct(r["format"]), "-" if train_s is None else f"{train_s:.0f}"])
    md = (f"# VLAA-Thinking study (scale {scale.name}, from {base}; budget {scale.steps} steps x "
          f"{scale.prompts_per_step} prompts per arm)\n\n## Held-out mean reward per type (%)\n\n"
          + markdown_table(header, rows) + "\n## Wall times (s)\n\n"
          + markdown_table(["phase", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()]))
    record = {"table": {"header": header, "rows": rows}, "results": results, "timings": timings,
              "mixture": MIXTURE, "base": base}
    write_report(out, "vlaa", md, record, scale)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m duotune.studies.vlaa", description=__doc__)
    add_scale_args(p)
    p.add_argument("--out", default="runs/vlaa", help="output folder (tables, curves, runs)")
    p.add_argument("--arms", default=",".join(ARMS), help="arms: grpo,sft,sft_then_grpo")
    p.add_argument("--warmup", default=None, help="warmed-up checkpoint (default: warm up into <out>/warmup)")
    args = p.parse_args(argv)
    rec = run(scale_from_args(args), Path(args.out), arms=tuple(args.arms.split(",")),
              warmup=Path(args.warmup) if args.warmup else None)
    print((Path(args.out) / "vlaa.md").read_text())
    print(json.dumps(rec["timings"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
