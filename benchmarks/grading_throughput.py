"""Grading throughput of the `math` reward with 1 and 2 GradingPool workers (issue 4, item 7).

10,000 (completion, gold) pairs, a deterministic realistic mix (1,250 prompts x 8 rollouts: integers,
fractions vs decimals, percentages, radicals, equations, intervals, sets; boxed, <answer>, GSM8K
'####' and unanswered completions; about half correct), graded in one run with 1 and with 2 workers
(fresh pools, alternating, best of `--repeats`). Writes JSON: pairs/s each, their ratio, timeouts,
hangs (workers the watchdog replaced), whether all runs scored identically, the cores the workers
actually got (CPU s / wall s) and the load average: on a shared machine the ratio is capped by that.

    python benchmarks/grading_throughput.py [--pairs 10000] [--repeats 2] [--out benchmarks/results/grading_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

from duotune.rewards import GradingPool, get_reward


def _gold_and_forms(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """A gold answer, equivalent renderings of it, and wrong renderings."""
    kind = rng.choice(["int", "int", "int", "frac", "pct", "sqrt", "eq", "interval", "set", "dec"])
    a, b = rng.randint(2, 999), rng.randint(2, 97)
    if kind == "int":
        n = rng.randint(1, 99999)
        return str(n), [str(n), f"{n:,}", f"{n}.0"], [str(n + rng.randint(1, 9)), str(n * 2)]
    if kind == "frac":
        b = rng.choice([2, 4, 5, 8, 10, 20, 25])
        return f"\\frac{{{a}}}{{{b}}}", [f"\\dfrac{{{a}}}{{{b}}}", f"{a / b:g}", f"{a}/{b}"], \
            [f"\\frac{{{a + 1}}}{{{b}}}", f"{a * b}"]
    if kind == "pct":
        return f"{a / 1000:g}", [f"{a / 10:g}\\%"], [f"{a}\\%", f"{a / 100:g}"]
    if kind == "sqrt":
        return f"{a}\\sqrt{{{b}}}", [f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{b}}} \\cdot {a}"], [f"{a}\\sqrt{{{b + 1}}}"]
    if kind == "eq":
        return str(a), [f"x = {a}", f"x={a}"], [f"x = {a + 3}"]
    if kind == "interval":
        lo, hi = sorted((a, a + b))
        return f"({lo}, {hi}]", [f"({lo},{hi}]", f"\\left({lo}, {hi}\\right]"], [f"[{lo}, {hi}]", f"({lo}, {hi})"]
    if kind == "set":
        return f"\\{{{a}, {b}\\}}", [f"\\{{{b}, {a}\\}}"], [f"\\{{{a}, {b + 1}\\}}"]
    return f"{a}.{b:02d}", [f"{a}.{b:02d}", f"{a}.{b:02d}0"], [f"{a}.{b + 1:02d}"]


def _completion(rng: random.Random, answer: str) -> str:
    """A reasoning text ending in the answer in one of the formats models produce."""
    steps = " ".join(f"Step {k}: we compute {rng.randint(1, 999)} + {rng.randint(1, 999)}."
                     for k in range(rng.randint(2, 12)))
    style = rng.random()
    if style < 0.45:
        return f"{steps} So the final answer is $\\boxed{{{answer}}}$."
    if style < 0.75:
        return f"<think>{steps}</think>\n<answer>{answer}</answer>"
    if style < 0.9:
        return f"{steps}\n#### {answer}"
    return f"{steps} I am not sure."  # no extractable answer: scores 0 without math-verify


def make_pairs(n: int, seed: int = 0, group: int = 8) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    completions, golds = [], []
    while len(completions) < n:
        gold, right, wrong = _gold_and_forms(rng)
        for _ in range(group):
            forms = right if rng.random() < 0.5 else wrong
            completions.append(_completion(rng, rng.choice(forms)))
            golds.append(gold)
    return completions[:n], golds[:n]


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the given processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # replaced by the watchdog: its CPU time is not counted
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def grade(workers: int, completions: list[str], golds: list[str]) -> dict:
    """Grade all pairs with a fresh, started pool; the workers' CPU seconds over the timed part show
    how much of the machine the run got (on a shared machine the ratio is capped by free cores)."""
    with GradingPool(workers, timeout_s=5.0) as pool:
        pool.map("duotune.rewards.verify:verify_answer", [("1", "1", 1)] * workers * 4)  # start-up
        reward = get_reward("math", pool=pool)
        pids = pool.worker_pids()
        cpu0, t0 = _cpu_seconds(pids), time.perf_counter()
        scores = reward(completions, answer=golds)
        elapsed = time.perf_counter() - t0
        cpu = _cpu_seconds(pids) - cpu0
    return {"workers": workers, "seconds": elapsed, "pairs_per_s": len(completions) / elapsed,
            "worker_cpu_s": cpu, "cores_used": cpu / elapsed, "timeouts": reward.stats["timeouts"],
            "hangs": pool.replacements, "scores": scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=2, help="alternating 1/2-worker runs; best kept")
    ap.add_argument("--out", default="benchmarks/results/grading_throughput.json")
    args = ap.parse_args()
    completions, golds = make_pairs(args.pairs)
    load_before = os.getloadavg()
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for w in (1, 2):
            runs[w].append(grade(w, completions, golds))
            print(f"{w} worker(s): {runs[w][-1]['pairs_per_s']:.0f} pairs/s")
    best = {w: max(rs, key=lambda r: r["pairs_per_s"]) for w, rs in runs.items()}
    scores = [s or 0.0 for s in best[1]["scores"]]
    result = {
        "pairs": args.pairs, "repeats": args.repeats,
        "pairs_per_s_1_worker": round(best[1]["pairs_per_s"], 1),
        "pairs_per_s_2_workers": round(best[2]["pairs_per_s"], 1),
        "ratio_2_over_1": round(best[2]["pairs_per_s"] / best[1]["pairs_per_s"], 3),
        "all_runs_pairs_per_s": {str(w): [round(r["pairs_per_s"], 1) for r in rs] for w, rs in runs.items()},
        "cores_used_best_runs": {str(w): round(r["cores_used"], 2) for w, r in best.items()},
        "worker_cpu_s_best_runs": {str(w): round(r["worker_cpu_s"], 1) for w, r in best.items()},
        "pairs_per_worker_cpu_s": {str(w): round(args.pairs / max(r["worker_cpu_s"], 1e-9), 1)
                                   for w, r in best.items()},
        "hangs": sum(r["hangs"] for rs in runs.values() for r in rs),
        "timeouts": sum(r["timeouts"] for rs in runs.values() for r in rs),
        "identical_scores": all(r["scores"] == best[1]["scores"] for rs in runs.values() for r in rs),
        "fraction_correct": round(sum(scores) / len(scores), 4),
        "cpu_count": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
