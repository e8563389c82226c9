"""OThink-MR1 study (SPEC 2, issue 7 item 3): SFT, GRPO (constant beta) and GRPO-D on counting and on
geometry from the warmed-up VLM, each evaluated on held-out counting and geometry; writes the paper's
Table 1 shape, the cross-task table, the full matrix (markdown + JSON) and the training curves.

`python -m duotune.studies.othink --scale cpu --out runs/othink`. Imports the studies' modules,
models and eval's matrix helpers.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from duotune.errors import ConfigError
from duotune.eval import build_matrix, matrix_markdown
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
    write_report,
    write_split,
)
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
        warmup: Path | None = None) -> dict[str, Any]:
    """Run every (train task, method), evaluate on every task; write tables and curves into `out`.

    Finished runs are reused from `<out>/results` when they were made with the same scale and warm-up;
    a folder made with other settings is a ConfigError (use another `out`)."""
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
    done = _Done(out / "results", {**asdict(scale), "warmup": str(base)})
    if not done.load("base", results, timings):
        t0 = time.perf_counter()
        results["base"] = evaluate_all(load_model(str(base)), tests, scale.eval_max_new_tokens)
        timings["eval/base"] = time.perf_counter() - t0
        done.save("base", results, timings)
    for task in tasks:
        train = write_split(task, scale.train_items, "train", out / "data", scale.image_size)
        for method in methods:
            name = f"{task}-{method}"
            if done.load(name, results, timings):
                continue
            lr = scale.sft_lr if method == "sft" else scale.rl_lr
            res, seconds = run_recipe(f"othink_{task}_{method}",
                                      scale_overrides(scale, str(base), out / "runs", name, train, lr))
            timings[f"train/{name}"] = seconds
            t0 = time.perf_counter()
            results[name] = evaluate_all(res.bundle, tests, scale.eval_max_new_tokens)
            timings[f"eval/{name}"] = time.perf_counter() - t0
            res.bundle = None  # free the weights before the next run
            done.save(name, results, timings)
        plot_curves({METHODS[m]: out / "runs" / f"{task}-{m}" / "metrics.jsonl" for m in methods},
                    ["reward/mean", "kl/beta", "kl/mean", "completion/len_mean"], out / f"curves_{task}.png",
                    f"OThink-MR1 study, trained on {task}")
    timings["total"] = time.perf_counter() - t_start
    return write_tables(out, results, tasks, methods, timings, scale, str(base))


class _Done:
    """Finished runs' results under `<out>/results/<name>.json`, so a re-run (e.g. adding a task)
    reuses them instead of training again; delete the file to redo one run. Each file records the
    settings (the scale's fields and the warm-up path, JSON values) it was made with; reusing it under
    other settings raises ConfigError naming the fields that differ."""

    def __init__(self, folder: Path, settings: dict[str, Any]):
        self.folder = folder
        self.settings = settings

    def load(self, name: str, results: dict[str, Any], timings: dict[str, float]) -> bool:
        path = self.folder / f"{name}.json"
        if not path.is_file():
            return False
        rec = json.loads(path.read_text())
        made = rec.get("settings", self.settings)  # files of older versions carry none
        diff = sorted(k for k in made.keys() | self.settings.keys() if made.get(k) != self.settings.get(k))
        if diff:
            raise ConfigError(f"{path} was made with other settings ({', '.join(diff)} differ); "
                              "give another --out, or delete the file to redo that run")
        results[name] = rec["results"]
        timings.update(rec["timings"])
        return True

    def save(self, name: str, results: dict[str, Any], timings: dict[str, float]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        mine = {k: v for k, v in timings.items() if k.endswith(f"/{name}")}
        (self.folder / f"{name}.json").write_text(json.dumps({"results": results[name], "timings": mine,
                                                              "settings": self.settings}))


def table1(results: dict[str, Any], tasks: Names, methods: Names) -> Table:
    """Paper Table 1 shape: rows base, +SFT, +GRPO, +GRPO-D; columns = tasks (in-domain accuracy)."""
    rows = [["base (warm-up)"] + [pct(results["base"][t]["accuracy"]) for t in tasks]]
    rows += [[f"+{METHODS[m]}"] + [pct(results[f"{t}-{m}"][t]["accuracy"]) for t in tasks]
             for m in methods]
    return ["model"] + list(tasks), rows


def cross_task(results: dict[str, Any], tasks: Names, methods: Names) -> Table:
    """Train on one task, test on the other (paper: geometry -> counting, counting -> geometry)."""
    pairs = [(a, b) for a in tasks for b in TASKS if a != b]
    rows = [["base (warm-up)"] + [pct(results["base"][b]["accuracy"]) for _, b in pairs]]
    rows += [[f"+{METHODS[m]}"] + [pct(results[f"{a}-{m}"][b]["accuracy"]) for a, b in pairs]
             for m in methods]
    return ["model"] + [f"{a} -> {b}" for a, b in pairs], rows


def write_tables(out: Path, results: dict[str, Any], tasks: Names, methods: Names,
                 timings: dict[str, float], scale: Any, base: str) -> dict[str, Any]:
    labels = ["base"] + [f"{t}-{m}" for t in tasks for m in methods]
    matrix = build_matrix(labels, list(TASKS), [results[k] for k in labels])
    h1, r1 = table1(results, tasks, methods)
    h2, r2 = cross_task(results, tasks, methods)
    fmt = markdown_table(["run"] + [f"{t} format %" for t in TASKS],
                         [[k] + [pct(results[k][t]["format"]) for t in TASKS] for k in labels])
    md = (f"# OThink-MR1 study (scale {scale.name}, from {base})\n\n## Table 1 (accuracy %, in-domain)\n\n"
          + markdown_table(h1, r1) + "\n## Cross-task (train -> test, accuracy %)\n\n" + markdown_table(h2, r2)
          + "\n## Full matrix (rows = trained on task-method)\n\n" + matrix_markdown(matrix)
          + "\n## Think/answer format rate\n\n" + fmt
          + "\n## Wall times (s)\n\n"
          + markdown_table(["phase", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()]))
    record = {"table1": {"header": h1, "rows": r1}, "cross_task": {"header": h2, "rows": r2},
              "matrix": matrix, "results": results, "timings": timings, "base": base}
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
    args = p.parse_args(argv)
    rec = run(scale_from_args(args), Path(args.out), tasks=tuple(args.tasks.split(",")),
              methods=tuple(args.methods.split(",")), warmup=Path(args.warmup) if args.warmup else None)
    print((Path(args.out) / "othink.md").read_text())
    print(json.dumps(rec["timings"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
