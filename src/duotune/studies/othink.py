"""OThink-MR1 study (SPEC 2, issue 7 item 3; issue 20 item 5): SFT, GRPO (constant beta) and GRPO-D on
counting and on geometry from the warmed-up VLM, each with `scale.seeds` seeds, evaluated on held-out
counting and geometry; writes the paper's Table 1 shape and the cross-task table (means with bootstrap
95 % intervals over items and seeds), the claims H4 (GRPO-D > GRPO) and H5 (SFT does not transfer,
GRPO-D does) of docs/protocol.md as paired intervals with verdicts, the KL-schedule check, the full
matrix (markdown + JSON) and the training curves.

`python -m duotune.studies.othink --scale cpu --out runs/othink` (`--scale protocol`: the protocol's
60 steps, 400 items per task, 3 seeds). Finished runs are reused (`<out>/results`) and, at the protocol
scale, kept in the committed store `docs/protocol_runs/<out name>` (`studies.store`), so the study
spans sessions. Imports the studies' modules, models and eval's matrix helpers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from duotune.eval import build_matrix, matrix_markdown
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
    schedule_check,
    seeded,
    write_report,
    write_split,
)
from duotune.studies.store import FinishedRuns, add_store_arg, study_store, warmup_settings
from duotune.studies.warmup import ensure_warmup

TASKS = ("counting", "geometry")
METHODS = {"sft": "SFT", "grpo": "GRPO", "grpo_d": "GRPO-D"}  # recipe suffix -> Table 1 label
PROMPT_STYLE = "think_answer"  # R1-V's question template (SPEC 2)
Names = tuple[str, ...]
Table = tuple[list[str], list[list[str]]]


def evaluate_all(bundle: Any, tests: dict[str, list[Any]], max_new_tokens: int) -> dict[str, Any]:
    """Accuracy (R_acc of SPEC 2: alpha = 0) on every task's held-out split."""
    return {task: evaluate_examples(bundle, ex, "accuracy_format", max_new_tokens, alpha=0.0)
            for task, ex in tests.items()}


def run(scale_name: str | Scale, out: Path, *, tasks: Names = TASKS, methods: Names = tuple(METHODS),
        warmup: Path | None = None, store: Path | None = None) -> dict[str, Any]:
    """Run every (train task, method), evaluate on every task; write tables and curves into `out`.

    Finished runs are reused from `<out>/results` when they were made with the same scale and warm-up
    (its path and weights); a folder made with other settings is a ConfigError (use another `out`).
    With `store` (`studies.store`), finished runs are copied both ways with it before the first run
    and after each, so a new session continues the study."""
    from duotune.models import load_model

    scale = get_scale(scale_name)
    tasks, methods = check_names("task", tasks, TASKS), check_names("method", methods, METHODS)
    out = Path(out)
    t_start = time.perf_counter()
    base = Path(warmup) if warmup is not None else ensure_warmup(scale, out)
    tests = {t: load_split(write_split(t, scale.test_items, "test", out / "data", scale.image_size),
                           PROMPT_STYLE) for t in TASKS}
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    done = FinishedRuns(out, warmup_settings(scale, base), store)
    done.evaluated("base", results, timings,
                   lambda: evaluate_all(load_model(str(base)), tests, scale.eval_max_new_tokens))
    for task in tasks:
        train = write_split(task, scale.train_items, "train", out / "data", scale.image_size)
        for method in methods:
            for seed in range(scale.seeds):
                name = seeded(f"{task}-{method}", seed)
                if done.load(name, results, timings):
                    continue
                lr = scale.sft_lr if method == "sft" else scale.rl_lr
                res, seconds = run_recipe(f"othink_{task}_{method}",
                                          scale_overrides(scale, str(base), out / "runs", name, train, lr, seed))
                timings[f"train/{name}"] = seconds
                t0 = time.perf_counter()
                results[name] = evaluate_all(res.bundle, tests, scale.eval_max_new_tokens)
                timings[f"eval/{name}"] = time.perf_counter() - t0
                res.bundle = None  # free the weights before the next run
                done.save(name, results, timings)
        plot_curves({f"{METHODS[m]} s{k}": out / "runs" / seeded(f"{task}-{m}", k) / "metrics.jsonl"
                     for m in methods for k in range(scale.seeds)},
                    ["reward/mean", "kl/beta", "kl/mean", "completion/len_mean"], out / f"curves_{task}.png",
                    f"OThink-MR1 study, trained on {task}")
    schedule = {seeded(f"{t}-{m}", k): schedule_check(out / "runs" / seeded(f"{t}-{m}", k) / "metrics.jsonl",
                                                       scale.steps)
                for t in tasks for m in methods if m != "sft" for k in range(scale.seeds)}
    timings["total"] = time.perf_counter() - t_start
    return write_tables(out, results, tasks, methods, timings, scale, str(base), schedule)


def table1(results: dict[str, Any], tasks: Names, methods: Names, seeds: int = 1) -> Table:
    """Paper Table 1 shape: rows base, +SFT, +GRPO, +GRPO-D; columns = tasks (in-domain accuracy, the
    mean over seeds with its 95 % interval)."""
    rows = [["base (warm-up)"] + [interval_cell(per_seed(results, "base", seeds, t)) for t in tasks]]
    rows += [[f"+{METHODS[m]}"] + [interval_cell(per_seed(results, f"{t}-{m}", seeds, t)) for t in tasks]
             for m in methods]
    return ["model"] + list(tasks), rows


def cross_task(results: dict[str, Any], tasks: Names, methods: Names, seeds: int = 1) -> Table:
    """Train on one task, test on the other (paper: geometry -> counting, counting -> geometry)."""
    pairs = [(a, b) for a in tasks for b in TASKS if a != b]
    rows = [["base (warm-up)"] + [interval_cell(per_seed(results, "base", seeds, b)) for _, b in pairs]]
    rows += [[f"+{METHODS[m]}"] + [interval_cell(per_seed(results, f"{a}-{m}", seeds, b)) for a, b in pairs]
             for m in methods]
    return ["model"] + [f"{a} -> {b}" for a, b in pairs], rows


def claims(results: dict[str, Any], tasks: Names, methods: Names, seeds: int,
           schedule: dict[str, Any] | None = None) -> dict[str, Any]:
    """docs/protocol.md H4 (GRPO-D > GRPO, in-task and cross-task) and H5 (per direction: SFT - base
    does not lie above 0 while GRPO-D - base does), paired on the same items. When GRPO-D's KL term
    stayed below 1 % of the policy loss in every seed, H4 and H5 read "inconclusive: the schedule did
    not act" whatever the accuracies. Needs per-item scores (evaluate_examples)."""
    rows, h5 = [], []
    grpo_d_runs = [v["acted"] for k, v in (schedule or {}).items() if "-grpo_d-" in k]
    acted = any(grpo_d_runs) if grpo_d_runs else None  # None: no GRPO-D run's schedule was checked
    cells = [(a, b) for a in tasks for b in TASKS]
    if {"grpo", "grpo_d"} <= set(methods):
        for a, b in cells:
            where = a if a == b else f"{a} -> {b}"
            rows.append(paired_row("H4 GRPO-D > GRPO", where, per_seed(results, f"{a}-grpo_d", seeds, b),
                                   per_seed(results, f"{a}-grpo", seeds, b)))
    if {"sft", "grpo_d"} <= set(methods):
        for a, b in ((a, b) for a, b in cells if a != b):
            base = per_seed(results, "base", seeds, b)
            sft = paired_row("H5 SFT > base", f"{a} -> {b}", per_seed(results, f"{a}-sft", seeds, b), base)
            grpo_d = paired_row("H5 GRPO-D > base", f"{a} -> {b}", per_seed(results, f"{a}-grpo_d", seeds, b), base)
            rows += [sft, grpo_d]
            held = sft[-1] != "held" and grpo_d[-1] == "held"
            failed = sft[-1] == "held" or grpo_d[-1] == "did not hold"
            h5.append([f"{a} -> {b}", "held" if held else "did not hold" if failed else "inconclusive"])
    if acted is False:
        rows = [r[:-1] + ["inconclusive: the schedule did not act"] for r in rows]
        h5 = [[w, "inconclusive: the schedule did not act"] for w, _ in h5]
    return {"header": CLAIM_HEADER, "rows": rows, "h5": h5, "schedule_acted": acted}


def write_tables(out: Path, results: dict[str, Any], tasks: Names, methods: Names,
                 timings: dict[str, float], scale: Any, base: str,
                 schedule: dict[str, Any] | None = None) -> dict[str, Any]:
    seeds = scale.seeds
    labels = ["base"] + [seeded(f"{t}-{m}", k) for t in tasks for m in methods for k in range(seeds)]
    matrix = build_matrix(labels, list(TASKS), [results[k] for k in labels])
    h1, r1 = table1(results, tasks, methods, seeds)
    h2, r2 = cross_task(results, tasks, methods, seeds)
    cl = claims(results, tasks, methods, seeds, schedule)
    fmt = markdown_table(["run"] + [f"{t} format %" for t in TASKS],
                         [[k] + [pct(results[k][t]["format"]) for t in TASKS] for k in labels])
    sched = markdown_table(["run", "steps: kl/beta, kl/mean per token", "beta*KL / |policy loss|", "acted"],
                           [[k, "; ".join(f"{s}: -" if p is None else f"{s}: {p['kl/beta']:.3g}, {p['kl/mean']:.3g}"
                                          for s, p in v["at"].items()),
                             "-" if v["kl_share"] is None else f"{100 * v['kl_share']:.2f} %", str(v["acted"])]
                            for k, v in (schedule or {}).items()])
    md = (f"# OThink-MR1 study (scale {scale.name}, from {base}; {seeds} seed(s), {scale.steps} steps, "
          f"{scale.test_items} items per task)\n\nCells: mean over seeds [bootstrap 95 % interval over items "
          "and seeds], %.\n\n## Table 1 (accuracy %, in-domain)\n\n"
          + markdown_table(h1, r1) + "\n## Cross-task (train -> test, accuracy %)\n\n" + markdown_table(h2, r2)
          + "\n## Claims (docs/protocol.md H4, H5; paired on the same items)\n\n"
          + markdown_table(cl["header"], cl["rows"])
          + ("\nH5 per direction (SFT - base not above 0 AND GRPO-D - base above 0):\n\n"
             + markdown_table(["direction", "H5"], cl["h5"]) if cl["h5"] else "")
          + "\n## Did the KL schedule act?\n\n" + sched
          + "\n## Full matrix (rows = trained on task-method-seed)\n\n" + matrix_markdown(matrix)
          + "\n## Think/answer format rate\n\n" + fmt
          + "\n## Wall times (s)\n\n"
          + markdown_table(["phase", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()]))
    record = {"table1": {"header": h1, "rows": r1}, "cross_task": {"header": h2, "rows": r2},
              "claims": cl, "schedule": schedule or {}, "matrix": matrix, "results": results,
              "timings": timings, "base": base}
    write_report(out, "othink", md, record, scale)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m duotune.studies.othink", description=__doc__)
    add_scale_args(p)
    p.add_argument("--out", default="runs/othink", help="output folder (tables, curves, runs); finished "
                   "runs in it are reused when made with the same settings")
    p.add_argument("--tasks", default=",".join(TASKS), help="training tasks, comma-separated")
    p.add_argument("--methods", default=",".join(METHODS), help="methods: sft,grpo,grpo_d")
    p.add_argument("--warmup", default=None, help="warmed-up checkpoint (default: warm up into <out>/warmup)")
    add_store_arg(p)
    args = p.parse_args(argv)
    rec = run(scale_from_args(args), Path(args.out), tasks=tuple(args.tasks.split(",")),
              methods=tuple(args.methods.split(",")), warmup=Path(args.warmup) if args.warmup else None,
              store=study_store(args.store, args.scale, Path(args.out)))
    print((Path(args.out) / "othink.md").read_text())
    print(json.dumps(rec["timings"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
