"""`make demo`: a short SRFT run of the embedded SmolLM2-135M-Instruct on GSM8K train, evaluated
before and after on a fixed GSM8K test slice with the shared verifier (~15 min on 2 CPU cores).

Prints the before/after table and the run folder (metrics.jsonl, curves.png, checkpoint).
Imports the public APIs of trainers, models and eval only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from duotune.config import load_config
from duotune.paths import REPO_ROOT


def _eval(bundle, limit: int, max_new_tokens: int, label: str) -> dict:
    from duotune.eval import run_eval_slice

    t0 = time.perf_counter()
    print(f"[demo] evaluating the {label} model on the first {limit} GSM8K test questions ...", flush=True)
    out = run_eval_slice(bundle, "gsm8k", limit=limit, max_new_tokens=max_new_tokens)
    print(f"[demo]   accuracy {out['accuracy']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m duotune.demo", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=24, help="SRFT steps (2 prompts x 4 sequences each)")
    p.add_argument("--eval-limit", type=int, default=30, help="GSM8K test questions evaluated")
    p.add_argument("--max-new-tokens", type=int, default=192, help="decode length (train and eval)")
    p.add_argument("--output-dir", default="runs", help="parent folder of the run folder")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides of configs/srft.yaml")
    args = p.parse_args(argv)

    from duotune.models import load_model
    from duotune.trainers import TrainConfig, train

    cfg = load_config(TrainConfig, REPO_ROOT / "configs" / "srft.yaml", [
        f"steps={args.steps}", "prompts_per_step=2", "num_iterations=1", "rollout.group_size=4",
        f"rollout.max_completion_length={args.max_new_tokens}", "optim.lr=5e-6",
        f"run.output_dir={args.output_dir}", f"run.name=demo-srft-{time.strftime('%Y%m%d-%H%M%S')}",
        "run.save_every=0", "run.keep_last=1", *args.overrides])
    print(f"[demo] loading {cfg.model} (first run converts the GGUF file once, ~15 s)", flush=True)
    before = _eval(load_model(cfg.model), args.eval_limit, args.max_new_tokens, "initial")
    print(f"[demo] SRFT: {cfg.steps} steps, {cfg.prompts_per_step} prompts x {cfg.rollout.group_size} "
          "sequences (3 rollouts + 1 GSM8K demonstration) per step", flush=True)
    result = train(cfg)
    after = _eval(result.bundle, args.eval_limit, args.max_new_tokens, "trained")
    rows = [("accuracy", "accuracy"), ("mean response length", "mean_length"),
            ("fraction truncated", "truncated_fraction")]
    print(f"\n{'GSM8K test[:' + str(args.eval_limit) + ']':<26}{'before':>10}{'after':>10}")
    for label, key in rows:
        if key in before and key in after:
            print(f"{label:<26}{before[key]:>10.3f}{after[key]:>10.3f}")
    print(f"\nrun folder: {result.run_dir}\n  metrics: {result.run_dir / 'metrics.jsonl'}\n"
          f"  curves:  {result.run_dir / 'curves.png'}\n  checkpoint: {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
