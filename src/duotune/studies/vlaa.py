"""VLAA-Thinking study (SPEC 3, issue 7 item 4): one mixed dataset (counting -> digit, geometry -> math,
counting_mcq -> mcq, grounding -> iou) trained with the `mixed` reward; GRPO alone vs SFT alone vs
SFT -> GRPO on the same budget (optimizer steps x prompts per step), evaluated per reward type on a
held-out mixed split, with per-type training-reward curves (`reward/mixed/<type>`). Each arm runs
`scale.seeds` seeds; the table shows means with bootstrap 95 % intervals over items and seeds, and
docs/protocol.md's H6 (GRPO alone > SFT -> GRPO) is decided by paired intervals, overall and per type.

`python -m duotune.studies.vlaa --scale cpu --out runs/vlaa` (`--scale protocol`: 60 steps, 200 items
per type, 3 seeds). Finished runs are reused (`<out>/results`) and, at the protocol scale, kept in the
committed store `docs/protocol_runs/<out name>` (`studies.store`), so the study spans sessions.
Imports the studies' modules and models.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from duotune.studies.common import (
    CLAIM_HEADER,
    Scale,
    add_scale_args,
    check_names,
    evaluate_examples,
    get_scale,
    interval_cell,
    load_split,
    markdown_table,
    paired_row,
    pct,
    per_seed,
    plot_curves,
    run_recipe,
    scale_from_args,
    scale_overrides,
    seeded,
    write_mixture,
    write_report,
)
from duotune.studies.store import FinishedRuns, add_store_arg, study_store, warmup_settings
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
        warmup: Path | None = None, store: Path | None = None) -> dict[str, Any]:
    """Train every arm on the mixed split, evaluate each (and the base) per reward type, write tables.

    Finished runs are reused from `<out>/results` when made with the same scale and warm-up (its path
    and weights; other settings are a ConfigError). With `store` (`studies.store`) they are copied
    both ways with it before the first run and after each, so a new session continues the study."""
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
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    done = FinishedRuns(out, warmup_settings(scale, base), store)
    done.evaluated("base", results, timings,
                   lambda: evaluate_examples(load_model(str(base)), test, "mixed", scale.eval_max_new_tokens))
    for arm in arms:
        lr = scale.sft_lr if arm == "sft" else scale.rl_lr
        for seed in range(scale.seeds):
            name = seeded(arm, seed)
            if done.load(name, results, timings):
                continue
            overrides = (scale_overrides(scale, str(base), out / "runs", name, train, lr, seed)
                         + arm_overrides(arm, scale))
            res, seconds = run_recipe(f"vlaa_{arm}", overrides)
            timings[f"train/{name}"] = seconds
            t0 = time.perf_counter()
            results[name] = evaluate_examples(res.bundle, test, "mixed", scale.eval_max_new_tokens)
            timings[f"eval/{name}"] = time.perf_counter() - t0
            res.bundle = None
            done.save(name, results, timings)
    types = sorted(set(MIXTURE.values()))
    plot_curves({f"{ARMS[a]} s{k}": out / "runs" / seeded(a, k) / "metrics.jsonl"
                 for a in arms if a != "sft" for k in range(scale.seeds)},
                [f"reward/mixed/{t}" for t in types] + ["reward/mean"], out / "curves_per_type.png",
                "VLAA-Thinking study: training reward per type")
    timings["total"] = time.perf_counter() - t_start
    return write_tables(out, results, arms, types, timings, scale, str(base))


def _type_items(results: dict[str, Any], types: list[str]) -> dict[str, list[int] | None]:
    """Item indices of each reward type in the held-out split (all runs share its order); "overall": all."""
    order = results["base"].get("types") or []
    return {"overall": None, **{t: [i for i, x in enumerate(order) if x == t] for t in types}}


def write_tables(out: Path, results: dict[str, Any], arms: tuple[str, ...], types: list[str],
                 timings: dict[str, float], scale: Any, base: str) -> dict[str, Any]:
    """Rows = base + arms; columns = held-out mean reward per type, overall (mean [95 % interval] over
    seeds), format rate, train seconds (summed over seeds); then the H6 claim rows."""
    seeds = scale.seeds
    keep = _type_items(results, types)
    header = ["model"] + types + ["overall", "format %", "train s"]
    rows = []
    for key in ["base", *arms]:
        evals = per_seed(results, key, seeds)
        train_s = [timings[f"train/{seeded(key, k)}"] for k in range(seeds) if f"train/{seeded(key, k)}" in timings]
        cells = [interval_cell(evals, keep[t]) if keep[t] else pct(evals[0]["by_type"].get(t)) for t in types]
        rows.append([ARMS.get(key, "base (warm-up)")] + cells
                    + [interval_cell(evals), pct(sum(e["format"] for e in evals) / len(evals)),
                       f"{sum(train_s):.0f}" if train_s else "-"])
    claim_rows = []
    if {"grpo", "sft_then_grpo"} <= set(arms) and all("per_item" in results[k] for k in results):
        claim_rows = [paired_row("H6 GRPO > SFT -> GRPO", where, per_seed(results, "grpo", seeds),
                                 per_seed(results, "sft_then_grpo", seeds), idx)
                      for where, idx in keep.items() if idx is None or idx]
    md = (f"# VLAA-Thinking study (scale {scale.name}, from {base}; budget {scale.steps} steps x "
          f"{scale.prompts_per_step} prompts per arm, {seeds} seed(s))\n\nCells: mean over seeds [bootstrap "
          "95 % interval over items and seeds].\n\n## Held-out mean reward per type (%)\n\n"
          + markdown_table(header, rows)
          + ("\n## Claim H6 (docs/protocol.md; paired on the same items)\n\n"
             + markdown_table(CLAIM_HEADER, claim_rows) if claim_rows else "")
          + "\n## Wall times (s)\n\n"
          + markdown_table(["phase", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()]))
    record = {"table": {"header": header, "rows": rows}, "claims": {"header": CLAIM_HEADER, "rows": claim_rows},
              "results": results, "timings": timings, "mixture": MIXTURE, "base": base}
    write_report(out, "vlaa", md, record, scale)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m duotune.studies.vlaa", description=__doc__)
    add_scale_args(p)
    p.add_argument("--out", default="runs/vlaa", help="output folder (tables, curves, runs); finished "
                   "runs in it are reused when made with the same settings")
    p.add_argument("--arms", default=",".join(ARMS), help="arms: grpo,sft,sft_then_grpo")
    p.add_argument("--warmup", default=None, help="warmed-up checkpoint (default: warm up into <out>/warmup)")
    add_store_arg(p)
    args = p.parse_args(argv)
    rec = run(scale_from_args(args), Path(args.out), arms=tuple(args.arms.split(",")),
              warmup=Path(args.warmup) if args.warmup else None,
              store=study_store(args.store, args.scale, Path(args.out)))
    print((Path(args.out) / "vlaa.md").read_text())
    print(json.dumps(rec["timings"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
