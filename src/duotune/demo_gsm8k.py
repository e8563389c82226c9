"""`python -m duotune.demo --gsm8k`: a short SRFT run of the embedded SmolLM2-135M-Instruct on GSM8K
train, evaluated before and after (greedy) on a fixed GSM8K test slice with the shared verifier
(`duotune.eval`); the 135M model solves almost none of these. A fresh run folder per invocation;
`--run-dir` continues one (eval samples and checkpoint reused). Imports trainers, models, eval.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from duotune.config import load_config
from duotune.paths import REPO_ROOT

# (row label, key of the eval summary) shown in the before/after table.
ROWS = [("accuracy", "accuracy"), ("answered (boxed) fraction", "answered_fraction"),
        ("mean response length", "mean_length"), ("truncated fraction", "truncated_fraction")]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m duotune.demo --gsm8k", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="SRFT steps (2 prompts x 4 sequences each)")
    p.add_argument("--eval-limit", type=int, default=24, help="GSM8K test questions (the first N)")
    p.add_argument("--eval-tokens", type=int, default=256, help="max new tokens of the greedy eval")
    p.add_argument("--train-tokens", type=int, default=160, help="max completion length in training")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (constant)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 helps on a busy shared machine)")
    p.add_argument("--output-dir", default="runs", help="parent folder of the run folder")
    p.add_argument("--run-dir", default=None, help="continue this run folder instead of a fresh one")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides of configs/srft.yaml")
    return p


def _evaluate(model: Any, name: str, args: argparse.Namespace, out: Path, label: str) -> dict[str, Any]:
    """Greedy eval of the first `eval_limit` GSM8K test items; samples kept in `out` (resumable:
    the sample store keys on `name`, so it must not change when a continued run reloads the model)."""
    from duotune.eval import evaluate

    t0 = time.perf_counter()
    print(f"[demo] evaluating the {label} model on GSM8K test[:{args.eval_limit}] (greedy, "
          f"{args.eval_tokens} new tokens)", flush=True)
    summary = evaluate(model, ["gsm8k"], n=1, limit=args.eval_limit, max_new_tokens=args.eval_tokens,
                       temperature=0.0, top_p=1.0, batch_size=8, out_dir=out, progress=True,
                       model_name=name)["gsm8k"]
    summary["wall_s"] = time.perf_counter() - t0
    print(f"[demo]   accuracy {summary['accuracy']:.3f} ({summary['wall_s']:.0f} s)", flush=True)
    return summary


def _table(before: dict[str, Any], after: dict[str, Any], limit: int) -> str:
    lines = [f"{'GSM8K test[:' + str(limit) + ']':<28}{'before':>10}{'after':>10}"]
    lines += [f"{label:<28}{before[key]:>10.3f}{after[key]:>10.3f}" for label, key in ROWS]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from duotune.models import load_model
    from duotune.trainers import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    fresh = Path(args.output_dir) / f"demo-srft-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.run_dir) if args.run_dir else fresh
    cfg = load_config(TrainConfig, REPO_ROOT / "configs" / "srft.yaml", [
        f"steps={args.steps}", "prompts_per_step=2", "num_iterations=1", "rollout.group_size=4",
        f"rollout.max_completion_length={args.train_tokens}", f"optim.lr={args.lr}",
        f"run.output_dir={run_dir.parent}", f"run.name={run_dir.name}", "run.resume=auto",
        "run.save_every=5", "run.keep_last=1", *args.overrides])
    print(f"[demo] run folder {run_dir}; loading {cfg.model} (the first run converts the GGUF file "
          f"once, ~15 s); torch threads: {torch.get_num_threads()}", flush=True)
    before = _evaluate(load_model(cfg.model), cfg.model, args, run_dir / "eval-before", "initial")
    print(f"[demo] SRFT: {cfg.steps} steps x {cfg.prompts_per_step} GSM8K train prompts x "
          f"{cfg.rollout.group_size} sequences (3 rollouts + the worked solution), lr {cfg.optim.lr}",
          flush=True)
    t_train = time.perf_counter()
    result = train(cfg)
    t_train = time.perf_counter() - t_train
    # A run resumed after it had finished trains nothing and hands back no model: load the checkpoint.
    bundle = result.bundle if result.bundle is not None else load_model(str(result.checkpoint / "model"))
    after = _evaluate(bundle, f"{cfg.model} + demo SRFT", args, run_dir / "eval-after", "trained")
    table = _table(before, after, args.eval_limit)
    results = {"before": before, "after": after, "steps": result.global_step, "train_wall_s": t_train,
               "total_wall_s": time.perf_counter() - t_start, "torch_threads": torch.get_num_threads(),
               "args": vars(args), "checkpoint": str(result.checkpoint), "last_metrics": result.last_metrics}
    (run_dir / "demo_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\n{table}\n\nrun folder: {run_dir}\n  metrics:    {run_dir / 'metrics.jsonl'}\n"
          f"  curves:     {run_dir / 'curves.png'}\n  checkpoint: {result.checkpoint}\n"
          f"  results:    {run_dir / 'demo_results.json'}\n"
          f"total {results['total_wall_s'] / 60:.1f} min (training {t_train / 60:.1f} min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
