"""What trimming the heap after every training step costs, and what it returns (`duotune.memory`).

One process, SmolLM2-135M-Instruct in training mode, one thread: each round is one forward + backward
of a [rows, length] batch of random tokens with a full-vocabulary log-softmax (the shape of a policy
update's micro-batch), then the gradients freed. Rounds alternate `trim` (`release_host_memory()`
before the step, as the trainer does after each one) and `keep` (no trim). Reports each round's
step time and the resident size after it, and the mean step time per mode without the first round
of each (page-cache and allocator warm-up).

    OMP_NUM_THREADS=1 python benchmarks/malloc_trim.py [--rounds 4] [--rows 8] [--length 256] \\
        [--out benchmarks/results/malloc_trim.json]

Run it on an otherwise idle machine: beside training workers it measures their contention too.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from statistics import mean


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4, help="rounds per mode (alternating trim, keep)")
    p.add_argument("--rows", type=int, default=8, help="sequences per step")
    p.add_argument("--length", type=int, default=256, help="tokens per sequence")
    p.add_argument("--out", default="benchmarks/results/malloc_trim.json", help="JSON result file")
    args = p.parse_args()

    import torch

    from duotune.memory import release_host_memory, rss_gb
    from duotune.models import load_model

    torch.set_num_threads(1)
    model = load_model("smollm2-135m-instruct").model.train()
    ids = torch.randint(0, model.config.vocab_size, (args.rows, args.length), generator=torch.Generator().manual_seed(0))

    def step() -> float:
        t0 = time.perf_counter()
        loss = torch.log_softmax(model(input_ids=ids).logits.float(), -1).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    step()  # warm-up, not counted
    rounds: list[dict[str, float | str]] = []
    for _ in range(args.rounds):
        for mode in ("trim", "keep"):
            t_trim = time.perf_counter()
            if mode == "trim":
                release_host_memory()
            t_trim = time.perf_counter() - t_trim
            s = step()
            rounds.append({"mode": mode, "step_s": s, "trim_s": t_trim if mode == "trim" else 0.0,
                           "rss_gb_after": rss_gb() or 0.0})
            print(rounds[-1], flush=True)
    summary = {m: {"mean_step_s_after_first": mean([r["step_s"] for r in rounds if r["mode"] == m][1:]),
                   "mean_rss_gb_after": mean(r["rss_gb_after"] for r in rounds if r["mode"] == m)}
               for m in ("trim", "keep")}
    out = {"rows": args.rows, "length": args.length, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "load_average_end": os.getloadavg(), "rounds": rounds, "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
