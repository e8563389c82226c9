"""One GRPO step in duotune vs TRL's GRPOTrainer: same tiny model, prompts and settings (issue 6, item 12).

Both sides: `tiny-llm` (same seeded init), the same GSM8K train prompts (chat format, no system
prompt), G samples per prompt at T=1.0 (no top-p/top-k), the same max completion length, the
`math` reward of `duotune.rewards`, beta 0 (no reference model), one update per rollout batch,
token-mean loss, AdamW (no weight decay), grad clip 1.0. A step = sample + score + loss + backward +
optimizer step. Rounds alternate the two trainers in one process; each round is a fresh run of
`--steps` steps whose first step (warm-up) is dropped. Writes the median step time of each and the
ratio duotune / TRL (target <= 0.70) with the load average, since the machine may be shared.

    python benchmarks/grpo_step_vs_trl.py [--rounds 6] [--steps 4] [--out benchmarks/results/grpo_step_vs_trl.json]

Needs `trl` (optional extra); without it only duotune's step is measured and the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from duotune.data import load_examples
from duotune.rewards import get_reward
from duotune.trainers import TrainConfig, train
from duotune.trainers.metrics import read_metrics

DATA = "shared:gsm8k/train.jsonl"


def duotune_round(args: argparse.Namespace, work: Path, k: int) -> list[float]:
    """Step times (s) of one fresh duotune GRPO run, warm-up step dropped."""
    cfg = TrainConfig.model_validate({
        "method": "grpo", "model": "tiny-llm", "steps": args.steps, "prompts_per_step": args.prompts,
        "data": {"train": DATA, "limit": args.prompts * args.steps, "prompt_style": None, "shuffle": False},
        "rollout": {"group_size": args.group, "temperature": 1.0, "top_p": 1.0, "top_k": None,
                    "max_completion_length": args.length, "batch_size": args.prompts * args.group},
        "reward": {"names": ["math"]},
        "algo": {"advantage": "grpo", "aggregation": "token_mean", "kl": {"controller": "fixed", "beta": 0.0}},
        "optim": {"lr": args.lr, "weight_decay": 0.0, "grad_clip": 1.0},
        # TRL forwards the whole step's batch at once (per_device_train_batch_size = prompts x G);
        # a budget that holds it gives duotune the same single micro-batch.
        "compute": {"token_budget": args.token_budget},
        "run": {"output_dir": str(work), "name": f"duotune-{k}", "resume": "never", "progress": False,
                "plots": False, "seed": k}})
    train(cfg)
    records = [r for r in read_metrics(work / f"duotune-{k}" / "metrics.jsonl") if r.get("kind") != "eval"]
    return [r["time/step"] for r in records][1:]


def trl_round(args: argparse.Namespace, work: Path, k: int) -> list[float]:
    """Step times (s) of one fresh TRL GRPOTrainer run (callback step begin -> end), warm-up dropped."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from duotune.models import load_model

    bundle = load_model("tiny-llm")
    examples = load_examples(DATA, limit=args.prompts * args.steps, prompt_style=None)
    data = Dataset.from_list([{"prompt": ex.prompt, "answer": ex.answer} for ex in examples])
    math = get_reward("math")

    def math_reward(completions: list[Any], answer: list[str], **_: Any) -> list[float | None]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return math(texts, answer=answer)

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            times.append(time.perf_counter() - self.t0)

    conf = GRPOConfig(
        output_dir=str(work / f"trl-{k}"), max_steps=args.steps, learning_rate=args.lr, weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch", lr_scheduler_type="constant", warmup_steps=0,
        per_device_train_batch_size=args.prompts * args.group, gradient_accumulation_steps=1,
        num_generations=args.group, max_completion_length=args.length, temperature=1.0, top_p=1.0,
        top_k=0, beta=0.0, num_iterations=1, loss_type="dapo", scale_rewards="group",
        shuffle_dataset=False, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        logging_steps=10**6, disable_tqdm=True, seed=k, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=bundle.model.train(), reward_funcs=[math_reward], args=conf,
                          train_dataset=data, processing_class=bundle.tokenizer, callbacks=[StepTimer()])
    trainer.train()
    return times[1:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds per trainer")
    p.add_argument("--steps", type=int, default=4, help="steps per round (the first is dropped)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="G: samples per prompt")
    p.add_argument("--length", type=int, default=64, help="max completion length (tokens)")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate")
    p.add_argument("--token-budget", type=int, default=65536, help="duotune micro-batch token budget")
    p.add_argument("--out", default="benchmarks/results/grpo_step_vs_trl.json")
    args = p.parse_args()
    try:
        import trl
        trl_version: str | None = trl.__version__
    except ImportError:
        trl_version = None
    times: dict[str, list[float]] = {"duotune": [], "trl": []}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            order = ["duotune", "trl"] if k % 2 == 0 else ["trl", "duotune"]
            for name in order:
                if name == "trl" and trl_version is None:
                    continue
                fn = duotune_round if name == "duotune" else trl_round
                times[name] += fn(args, Path(tmp), k)
                print(f"round {k} {name}: median so far {statistics.median(times[name]):.3f} s", flush=True)
    med = {k: statistics.median(v) if v else None for k, v in times.items()}
    import transformers
    result = {
        "settings": {**vars(args), "model": "tiny-llm", "data": DATA, "beta": 0.0, "num_iterations": 1,
                     "loss": "token mean (duotune token_mean, TRL dapo)", "advantage": "group mean/std"},
        "median_step_s": med, "step_times_s": times,
        "ratio_duotune_over_trl": med["duotune"] / med["trl"] if med["trl"] else None,
        "target_ratio": 0.70,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl_version},
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_end": os.getloadavg(), "wall_s": time.perf_counter() - t_start,
        "machine": platform.platform(),
        "note": None if trl_version else "trl is not installed: pip install trl (only duotune was measured)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_step_s", "ratio_duotune_over_trl", "load_average_end")}))


if __name__ == "__main__":
    main()
