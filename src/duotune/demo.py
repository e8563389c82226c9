"""`make demo` (`python -m duotune.demo`): SRFT beside SFT and GRPO on one budget, the embedded
SmolLM2-135M-Instruct on arithmetic (`configs/compare/demo.yaml`), a `duotune compare` run by `--jobs`
worker processes taking methods from one queue; prints accuracy before/after with 95 % Wilson intervals,
the training signal, and where the report, plots, rollouts and checkpoints landed. `--gsm8k`: the GSM8K
SRFT demo (`duotune.demo_gsm8k`). Imports `duotune.analysis` (which trains lazily)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from duotune import jsonl
from duotune.analysis.compare_config import CompareConfig
from duotune.config import load_config
from duotune.paths import REPO_ROOT, folder_size, human_size

CONFIG = REPO_ROOT / "configs" / "compare" / "demo.yaml"
# Rough CPU cost of one method under one budget relative to the base evaluation (an SFT step is ~1/5
# of an RL step, which samples G rollouts per prompt): the work queue starts with the dearest methods.
COST = {"base": 1.0, "sft": 2.0, "grpo": 7.0, "grpo_d": 7.0, "srft": 6.0, "luffy": 6.0, "rl_sft_loss": 7.0,
        "sft_then_grpo": 4.5, "grpo_then_sft": 4.5, "chord_mu": 7.5, "chord_phi": 7.5, "relift": 7.5,
        "dapo": 9.0, "distill": 8.0}
# Methods that read another method's result (the arithmetic comparison's distill teacher is its own SFT
# run) go last, and the worker that takes one waits for that method's results.
AFTER = {"distill": "sft"}
CLAIMS = "claims"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m duotune.demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--gsm8k", action="store_true", help="run the GSM8K SRFT demo instead "
                   "(`python -m duotune.demo --gsm8k --help` lists its flags)")
    p.add_argument("--config", default=str(CONFIG), help="the comparison YAML the demo runs")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (one torch thread each when > 1); each takes the next method "
                        "no other worker has taken")
    p.add_argument("--engine", choices=["hf", "vllm", "auto"], default=None,
                   help="rollout engine of every method (default: the config's, hf in configs/compare/demo.yaml: "
                        "measured faster than vLLM at the demo's size; auto = vLLM where installed)")
    p.add_argument("--output-dir", default="runs", help="parent folder of the demo folder")
    p.add_argument("--run-dir", default=None, help="continue this demo folder instead of a fresh one")
    p.add_argument("--worker", default=None, metavar="K", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="key=value overrides of the comparison config, e.g. "
                   "budget.steps=3 'methods=[base,srft]' (see `duotune compare --help`)")
    return p


def demo_config(args: argparse.Namespace, root: Path) -> CompareConfig:
    # The method recipes are the repository's unless overridden, whatever the working directory.
    cfg = load_config(CompareConfig, args.config, [f"recipes={REPO_ROOT / 'configs'}", *args.overrides,
                                                   f"output_dir={root.parent}", f"name={root.name}"])
    if args.engine:
        cfg = cfg.model_copy(update={"common": {**cfg.common, "rollout.engine": args.engine}})
    return cfg


def queue_order(methods: Sequence[str]) -> list[str]:
    """The order workers take methods in: `base` first (every other method's curve starts from its
    evaluation), then the dearest first, so the cheap ones fill the gaps at the end."""
    return sorted(methods, key=lambda m: (m != "base", m in AFTER, -COST.get(m, 6.0)))


def claim(root: Path, method: str, worker: int) -> bool:
    """Take `method` for this worker unless another has (an exclusive create: one winner per method)."""
    path = root / CLAIMS / method
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(worker).encode())
    os.close(fd)
    return True


def _work(cfg: CompareConfig, root: Path, queue: list[str], worker: int) -> None:
    """A worker: run each method of the queue that no other worker has taken, one at a time."""
    from duotune.analysis import run_compare

    for method in queue:
        if claim(root, method, worker):
            dep = AFTER.get(method)
            while dep in cfg.methods and not all((root / "results" / f"{dep}-s{s}.json").is_file()
                                                 for s in cfg.seeds):
                time.sleep(5)
            run_compare(cfg.model_copy(update={"methods": [method]}), report=False)


def _seed_state(root: Path, cfg: CompareConfig, method: str, seed: int) -> str:
    """One run's state: its accuracy when done, "failed", its training step and reward, "eval" or "-"."""
    res = root / "results" / f"{method}-s{seed}.json"
    if res.is_file():
        r = json.loads(res.read_text())
        acc = r["curve"][-1]["evals"][cfg.main_set()]["accuracy"] if r["status"] == "done" else None
        return "failed" if acc is None else f"{100 * acc:.0f}%"
    recs = jsonl.read(root / "runs" / f"{method}-s{seed}" / "metrics.jsonl")  # skips a line being written
    if not recs:
        return "-"
    last = recs[-1]
    reward = f" reward {last['reward/mean']:.2f}" if "reward/mean" in last else ""
    return "eval" if last["step"] >= cfg.budget.steps else f"step {last['step']}/{cfg.budget.steps}{reward}"


def _status(root: Path, cfg: CompareConfig) -> str:
    """One line: each method's state in every seed (accuracy when done, else its training step and reward)."""
    return " | ".join(f"{m} " + ", ".join(_seed_state(root, cfg, m, s) for s in cfg.seeds) for m in cfg.methods)


def _run_workers(args: argparse.Namespace, cfg: CompareConfig, root: Path) -> list[dict[str, Any]]:
    """Start `--jobs` worker processes on the method queue, print a status line while they run; returns
    each worker's methods, exit code, CPU seconds and peak RSS (from its rusage)."""
    queue = queue_order(cfg.methods)
    shutil.rmtree(root / CLAIMS, ignore_errors=True)  # claims of an interrupted call; results are kept
    (root / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    procs = []
    print(f"[demo] {min(args.jobs, len(queue))} workers take the methods in the order {', '.join(queue)} "
          f"(logs: {root / 'logs'}/worker-K.log)", flush=True)
    for k in range(min(args.jobs, len(queue))):
        log = (root / "logs" / f"worker-{k}.log").open("w")
        cmd = [sys.executable, "-m", "duotune.demo", "--worker", str(k), "--config", args.config,
               "--run-dir", str(root), *(["--engine", args.engine] if args.engine else []), *args.overrides]
        procs.append(([], subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    out, last, t0 = {}, "", time.time()
    try:
        while len(out) < len(procs):
            for k, (methods, proc, log) in enumerate(procs):
                if k not in out:
                    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # rusage: the worker's own CPU
                    if pid:
                        proc.returncode = os.waitstatus_to_exitcode(status)
                        log.close()
                        methods = [m for m in queue if (root / CLAIMS / m).is_file()
                                   and (root / CLAIMS / m).read_text() == str(k)]
                        out[k] = {"methods": methods, "returncode": proc.returncode,
                                  "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gb": usage.ru_maxrss / 1e6}
                        if proc.returncode:  # e.g. -9: killed, often for memory
                            print(f"[demo] worker {k} ({', '.join(methods)}) exited with {proc.returncode}; "
                                  f"see {root / 'logs' / f'worker-{k}.log'}", flush=True)
            line = _status(root, cfg)
            if line != last:
                print(f"[demo {time.time() - t0:5.0f} s] {line}", flush=True)
                last = line
            time.sleep(2)
    finally:  # interrupted (Ctrl-C): stop the workers too; a re-run with --run-dir resumes
        for _, proc, _ in procs:
            if proc.returncode is None:
                proc.terminate()
    return [out[k] for k in range(len(procs))]


def _table(res: dict[str, Any], cfg: CompareConfig, root: Path) -> tuple[str, list[dict[str, Any]]]:
    from duotune.analysis.intervals import wilson_interval
    from duotune.analysis.plots import read_metrics

    main, seed = cfg.main_set(), cfg.seeds[0]
    base = res["curves"].get(f"base-s{seed}", [{}])[0].get("evals", {}).get(main, {}).get("accuracy")
    rows, lines = [], ["| method | held-out accuracy % [95 % Wilson] | vs base | train reward first -> last "
                       "| solve rate first -> last | train s |", "|---|---|---|---|---|---|"]
    for m in cfg.methods:
        curve = res["curves"].get(f"{m}-s{seed}")
        if not curve:
            lines.append(f"| {m} | {res['methods'][m]['status']} | | | | |")
            continue
        ev = curve[-1]["evals"][main]
        lo, hi = wilson_interval(ev["accuracy"], int(ev["items"]), percent=True)
        recs = read_metrics(root / "runs" / f"{m}-s{seed}")

        def first_last(key: str, recs: list[dict[str, Any]] = recs) -> str:
            vals = [r[key] for r in recs if isinstance(r.get(key), (int, float))]
            return f"{vals[0]:.2f} -> {vals[-1]:.2f}" if vals else "-"

        gain = "" if m == "base" or base is None else f"{100 * (ev['accuracy'] - base):+.1f}"
        row = {"method": m, "accuracy": ev["accuracy"], "ci95": [lo, hi], "items": int(ev["items"]),
               "train_s": curve[-1]["wall_s"], "reward": first_last("reward/mean"),
               "solve_rate": first_last("solve_rate/on_policy")}
        rows.append(row)
        train_s = "-" if m == "base" else f"{row['train_s']:.0f}"
        lines.append(f"| {m} | {100 * ev['accuracy']:.1f} [{lo:.1f}, {hi:.1f}] | {gain} | {row['reward']} | "
                     f"{row['solve_rate']} | {train_s} |")
    return "\n".join(lines), rows


def _landing(root: Path, res: dict[str, Any], cfg: CompareConfig) -> str:
    first = [p for p in res["plots"] if any(k in p for k in ("accuracy_", "reward", "entropy_on_policy",
                                                              "response_length", "kl_"))]
    runs = [m for m in cfg.methods if m != "base"]
    return "\n".join([
        f"where it landed ({root}, {human_size(folder_size(root))}):",
        f"  {root / 'report.html'}  tables and every plot: open it in a browser",
        f"  {root / 'report.md'}  the same tables as markdown",
        f"  {root / 'plots'}/  " + ", ".join(Path(p).name for p in first),
        f"  {root / 'runs'}/<method>-s{cfg.seeds[0]}/  for {', '.join(runs)}: metrics.jsonl (every step), "
        "rollouts/step-NNNNNN.jsonl (what the policy wrote, with rewards and advantages), "
        f"checkpoint-{cfg.budget.steps:06d}/model",
        f"  {root / 'logs'}/worker-*.log  each worker's progress bars"])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--gsm8k" in argv:
        from duotune import demo_gsm8k

        return demo_gsm8k.main([a for a in argv if a != "--gsm8k"])
    args = _parser().parse_args(argv)
    from duotune.analysis import run_compare

    root = Path(args.run_dir) if args.run_dir else Path(args.output_dir) / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = demo_config(args, root)
    if args.worker is not None:  # one process of a split demo: methods from the queue, no report
        _work(cfg, root, queue_order(cfg.methods), int(args.worker))
        return 0
    t0, load0 = time.time(), os.getloadavg()
    b = cfg.budget
    print(f"[demo] {', '.join(m for m in cfg.methods if m != 'base')} from {cfg.model} on one budget: {b.steps} "
          f"steps x {b.prompts_per_step} prompts, G = {b.samples_per_prompt}; folder {root}; load average "
          f"{load0[0]:.1f}", flush=True)
    if args.jobs > 1:
        workers = _run_workers(args, cfg, root)
        if any(w["returncode"] for w in workers):
            print(f"[demo] a worker failed: {workers}; see {root / 'logs'}", flush=True)
            return 1
        res = run_compare(cfg, report_only=True)
    else:
        res = run_compare(cfg)
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        workers = [{"methods": list(cfg.methods), "returncode": 0, "cpu_s": usage.ru_utime + usage.ru_stime,
                    "peak_rss_gb": usage.ru_maxrss / 1e6}]
    table, rows = _table(res, cfg, root)
    wall, load1 = time.time() - t0, os.getloadavg()
    summary = {"rows": rows, "wall_s": wall, "workers": workers, "load_average_start": load0,
               "load_average_end": load1, "jobs": args.jobs, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "cpu_count": os.cpu_count(), "command": " ".join(["python -m duotune.demo", *argv])}
    (root / "demo_results.json").write_text(json.dumps(summary, indent=2) + "\n")
    cpu = ", ".join(f"{'+'.join(w['methods'])} {w['cpu_s']:.0f} s ({w['peak_rss_gb']:.1f} GB peak)" for w in workers)
    print(f"\n{cfg.model}, {cfg.main_set()}: greedy accuracy on {rows[0]['items'] if rows else '?'} held-out items "
          f"after {b.steps} steps (base = before training)\n{table}\n\n{_landing(root, res, cfg)}\n"
          f"total {wall / 60:.1f} min wall; CPU time per worker: {cpu}; load average {load0[0]:.1f} at the start, "
          f"{load1[0]:.1f} at the end", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
