"""Kill drill (issue 16): SIGKILL real tiny runs and count how many resume with nothing lost.

Training: for GRPO (KL on: reference model, stage-0-init) and SRFT (demos in the group), each on
tiny-llm with configs/tiny/<method>.yaml, 6 steps, a checkpoint every step, 2 kept. Each trial kills
one fresh run, then resumes it (`run.resume=auto`) to the end and compares with an uninterrupted run:
survived = final weights bit-equal, every step logged once with the same values, no leftovers.
Kill points: seeded (point, n) from tests/fault_child.py (mid-step, mid-metrics-line, at each stage of
a checkpoint save and of pruning), and timed kills at a seeded random moment after the first step.
Eval: `duotune eval` (tiny-llm, gsm8k, 8 items x 2 samples) killed halfway through writing the n-th
batch of samples, then re-run: survived = every sample whole before the kill kept unchanged, all 16
present, none twice (the ones drawn after it come from other generate batches, so other draws).

    python benchmarks/fault_drill.py [--trials 4] [--timed 3] [--seed 0] [--out benchmarks/results/fault_drill.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from fault_child import POINTS  # noqa: E402

STEPS = 6
REACHED = {"step": STEPS, "metrics": STEPS, "model": STEPS, "state": STEPS, "manifest": STEPS,
           "rename": STEPS, "renamed": STEPS, "prune": STEPS - 2}
KEYS = ("loss/total", "reward/mean", "kl/mean", "train/grad_norm", "entropy/mean")
EVAL = ["eval", "--model", "tiny-llm", "--benchmark", "gsm8k", "--limit", "8", "--n", "2",
        "--max-new-tokens", "8", "--batch-size", "4", "--no-progress"]


def _env() -> dict[str, str]:
    paths = [str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(p for p in paths if p))


def _train_args(method: str, out: Path, data: Path) -> list[str]:
    return ["train", str(ROOT / "configs" / "tiny" / f"{method}.yaml"), f"data.train={data}",
            f"run.output_dir={out}", "run.name=r", "run.progress=false", "run.plots=false",
            f"reward.names=[toy_rewards:{'any_digit' if method == 'srft' else 'digit_share'}]",
            "run.resume=auto", f"steps={STEPS}",
            "run.save_every=1", "run.keep_last=2"]


def _run(args: list[str], point: str | None = None, n: int = 0, kill_after: Path | None = None,
         delay: float = 0.0) -> int:
    """`duotune ARGS` in a fresh interpreter: killed at (point, n), or `delay` s after `kill_after`
    appears, or left to finish. Returns its exit status (-9: killed)."""
    cmd = ([sys.executable, str(ROOT / "tests" / "fault_child.py"), point, str(n)] if point else
           [sys.executable, "-m", "duotune.cli"]) + args
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        while proc.poll() is None and not kill_after.exists():
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    if proc.returncode not in (0, -signal.SIGKILL):
        print(err[-2000:], file=sys.stderr)
    return proc.returncode


def _train_outcome(run_dir: Path) -> tuple:
    w = load_file(run_dir / f"checkpoint-{STEPS:06d}" / "model" / "model.safetensors")
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return ({k: v.clone() for k, v in w.items()}, [(r["step"], *(r.get(k) for k in KEYS)) for r in recs],
            sorted(p.name for p in run_dir.iterdir()))


def _same(a: tuple, b: tuple) -> bool:
    return (a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
            and a[1] == b[1] and a[2] == b[2])


def _eval_records(out: Path) -> list[tuple]:
    """(item, sample, completion, score) of every whole line (a torn last line is left out)."""
    from duotune import jsonl

    rows = jsonl.read(out / "gsm8k" / "samples.jsonl")
    return [(r["item_id"], r["sample_index"], r["completion"], r["score"]) for r in rows]


def drill_training(method: str, data: Path, work: Path, rng: random.Random, trials: int, timed: int) -> dict:
    ref_dir = work / f"{method}-reference"
    assert _run(_train_args(method, ref_dir, data)) == 0
    reference = _train_outcome(ref_dir / "r")
    plans = [(p, rng.randint(1, REACHED[p])) for p in rng.sample(POINTS, min(trials, len(POINTS)))]
    plans += [("timed", rng.uniform(0.0, 3.0)) for _ in range(timed)]
    results = []
    for k, (point, arg) in enumerate(plans):
        out = work / f"{method}-{k}"
        if point == "timed":  # a random moment once the first step is logged
            code = _run(_train_args(method, out, data), kill_after=out / "r" / "metrics.jsonl", delay=arg)
        else:
            code = _run(_train_args(method, out, data), point, int(arg))
        killed = code == -signal.SIGKILL
        resumed = _run(_train_args(method, out, data)) == 0
        ok = resumed and _same(_train_outcome(out / "r"), reference)
        results.append({"point": point, "n": arg, "killed": killed, "resumed": resumed, "survived": ok})
        shutil.rmtree(out)
    return _tally(results)


def drill_eval(work: Path, rng: random.Random, trials: int) -> dict:
    ref = work / "eval-reference"
    assert _run(EVAL + ["--out", str(ref)]) == 0
    keys = sorted(r[:2] for r in _eval_records(ref))
    results = []
    for k in range(trials):
        out = work / f"eval-{k}"
        n = rng.randint(1, 4)  # 16 samples in batches of 4
        killed = _run(EVAL + ["--out", str(out)], "metrics", n) == -signal.SIGKILL
        before = _eval_records(out)  # what was whole when it died
        resumed = _run(EVAL + ["--out", str(out)]) == 0
        after = _eval_records(out) if resumed else []
        # Nothing lost (every finished sample kept as it was), nothing twice, every sample there. The
        # samples drawn after the kill need not equal an uninterrupted run's: generate batches differ.
        ok = resumed and set(before) <= set(after) and sorted(r[:2] for r in after) == keys
        results.append({"point": "samples", "n": n, "killed": killed, "resumed": resumed,
                        "kept": len(before), "survived": ok})
    return _tally(results)


def _tally(results: list[dict]) -> dict:
    tried = sum(r["killed"] for r in results)
    survived = sum(r["killed"] and r["survived"] for r in results)
    return {"tried": tried, "survived": survived, "lost": tried - survived, "trials": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4, help="seeded kill points per method (at most 8)")
    ap.add_argument("--timed", type=int, default=3, help="kills at a random moment, per method")
    ap.add_argument("--eval-trials", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="grpo,srft,eval",
                    help="drills to run; the others are kept from an existing --out file")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fault_drill.json"))
    args = ap.parse_args()
    data = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [json.loads(x) for x in data.read_text().splitlines()[:8]]
        small = work / "train.jsonl"
        small.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = Path(args.out)
        report = json.loads(out.read_text()) if out.is_file() else {}
        for part in args.parts.split(","):
            rng, t0 = random.Random(f"{args.seed}:{part}"), time.time()
            report[part] = (drill_eval(work, rng, args.eval_trials) if part == "eval" else
                            drill_training(part, small, work, rng, args.trials, args.timed))
            report[part]["setup"] = {"seed": args.seed, "steps": STEPS, "wall_s": round(time.time() - t0, 1),
                                     "python": platform.python_version(), "torch": torch.__version__,
                                     "load_avg": os.getloadavg(), "cpus": os.cpu_count()}
    parts = [p for p in ("grpo", "srft", "eval") if p in report]
    report["total"] = {k: sum(report[p][k] for p in parts) for k in ("tried", "survived", "lost")}
    report.pop("setup", None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["total"]), f"-> {args.out}")


if __name__ == "__main__":
    main()
