"""Agreement of the one verifier with the labelled corpus, per category and extraction mode, and its
time per pair (issue 17).

Each (gold, prediction) pair of tests/data/verifier_cases.jsonl is graded as `math_equal` grades it
(`final_answer` in the mode, then `verify_answer`), in this process's main thread so math-verify's own
timeouts apply, for `--rounds` rounds alternating strict and lenient; the gold cache is cleared before
each round, so every pair's time includes parsing its gold, and the round is then repeated with the
golds cached. Prints the per-category table and writes JSON: agreement, false accepts/rejects (ids),
the median and max over pairs of each pair's median time across rounds (cold and gold cached), with
the load average (on a shared machine times are inflated by the load).

    python benchmarks/verifier_agreement.py [--rounds 3] [--out benchmarks/results/verifier_agreement.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path

from duotune.rewards import final_answer
from duotune.rewards import verify as verify_module

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "verifier_cases.jsonl"
MODES = ("strict", "lenient")


def grade_round(cases: list[dict], mode: str, *, cold: bool) -> tuple[list[bool], list[float]]:
    """(accepted?, seconds) per case; `cold` clears the gold cache first (each time then includes
    parsing the gold, as a gold's first grading in a worker does)."""
    if cold:
        verify_module._gold_cache.clear()
    accepted, seconds = [], []
    for case in cases:
        start = time.perf_counter()
        answer = final_answer(case["pred"], mode)
        ok = bool(answer) and verify_module.verify_answer(answer, case["gold"], 5) == 1.0
        seconds.append(time.perf_counter() - start)
        accepted.append(ok)
    return accepted, seconds


def summary(cases: list[dict], accepted: list[bool], seconds: dict[str, list[list[float]]]) -> dict:
    per_pair = {kind: [statistics.median(ts) for ts in zip(*rounds)] for kind, rounds in seconds.items()}
    by_cat: dict[str, list[bool]] = defaultdict(list)
    for case, ok in zip(cases, accepted):
        by_cat[case["category"]].append(ok == case["equal"])
    agree = [ok == c["equal"] for c, ok in zip(cases, accepted)]
    negatives = sum(not c["equal"] for c in cases)
    false_accepts = [c["id"] for c, ok in zip(cases, accepted) if ok and not c["equal"]]
    return {
        "agreement": round(sum(agree) / len(agree), 4),
        "false_accepts": false_accepts, "false_accept_rate": round(len(false_accepts) / negatives, 4),
        "false_rejects": [c["id"] for c, ok in zip(cases, accepted) if not ok and c["equal"]],
        "by_category": {cat: {"cases": len(v), "agreement": round(sum(v) / len(v), 4)}
                        for cat, v in sorted(by_cat.items())},
        "ms_per_pair_median": round(1000 * statistics.median(per_pair["cold"]), 3),
        "ms_per_pair_max": round(1000 * max(per_pair["cold"]), 1),
        "ms_per_pair_median_gold_cached": round(1000 * statistics.median(per_pair["warm"]), 3),
        "ms_per_pair_max_gold_cached": round(1000 * max(per_pair["warm"]), 1),
        "seconds_all_pairs_cold": round(statistics.median(sum(r) for r in seconds["cold"]), 2),
    }


def table(results: dict[str, dict]) -> str:
    cats = results[MODES[0]]["by_category"]
    lines = [f"{'category':<16}{'cases':>6}" + "".join(f"{m + ' %':>11}" for m in MODES)]
    for cat, row in cats.items():
        lines.append(f"{cat:<16}{row['cases']:>6}" + "".join(
            f"{100 * results[m]['by_category'][cat]['agreement']:>11.1f}" for m in MODES))
    lines.append(f"{'all':<16}{sum(r['cases'] for r in cats.values()):>6}"
                 + "".join(f"{100 * results[m]['agreement']:>11.1f}" for m in MODES))
    for m in MODES:
        r = results[m]
        lines.append(f"{m}: {len(r['false_accepts'])} false accepts, {len(r['false_rejects'])} false rejects; "
                     f"per pair {r['ms_per_pair_median']} ms median / {r['ms_per_pair_max']} ms max "
                     f"(gold cached: {r['ms_per_pair_median_gold_cached']} / {r['ms_per_pair_max_gold_cached']} ms)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating strict/lenient rounds")
    ap.add_argument("--out", default="benchmarks/results/verifier_agreement.json")
    args = ap.parse_args()
    cases = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    load_before = os.getloadavg()
    accepted: dict[str, list[bool]] = {}
    seconds: dict[str, dict[str, list[list[float]]]] = {m: {"cold": [], "warm": []} for m in MODES}
    timeouts_before = verify_module.timeouts_seen()
    for _ in range(args.rounds):
        for mode in MODES:
            for kind in ("cold", "warm"):
                flags, times = grade_round(cases, mode, cold=kind == "cold")
                if accepted.setdefault(mode, flags) != flags:
                    raise SystemExit(f"{mode}: rounds disagree; the verifier is not deterministic here")
                seconds[mode][kind].append(times)
    results = {m: summary(cases, accepted[m], seconds[m]) for m in MODES}
    print(table(results))
    out = {"corpus": str(CORPUS.relative_to(CORPUS.parents[2])), "cases": len(cases),
           "negatives": sum(not c["equal"] for c in cases), "rounds": args.rounds, **results,
           "math_verify_timeouts": verify_module.timeouts_seen() - timeouts_before,
           "cpu_count": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
           "loadavg_after": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
