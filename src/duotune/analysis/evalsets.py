"""The comparison's data and its one evaluation protocol: training rows and held-out sets written once
into the comparison folder, every checkpoint scored on them with the same sampling and the training
verifier (`duotune.eval.grade`), and a sampled estimate of KL(policy || initial model).

Imports `duotune.tasks`, `duotune.data`, `duotune.eval`, `duotune.rollout`; never trainers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from duotune.analysis.compare_config import CompareConfig, EvalProtocolCfg, EvalSetCfg, TaskSourceCfg
from duotune.data import Example, load_examples


@dataclass
class EvalSet:
    name: str
    distribution: str
    examples: list[Example]


def _generated(src: TaskSourceCfg, out_dir: Path) -> Path:
    from duotune.tasks import write_task

    path = out_dir / "data.jsonl"
    if not path.is_file():  # deterministic in (task, n, seed, split, params): written once
        write_task(src.task, n=src.n, seed=src.seed, out_dir=out_dir, split=src.split, **src.params)
    return path


def train_file(cfg: CompareConfig, root: Path) -> str:
    """The training rows as a file path (generated into <root>/data/train on first use)."""
    if cfg.data.generate is not None:
        return str(_generated(cfg.data.generate, root / "data" / "train"))
    return cfg.data.file  # type: ignore[return-value]


def load_eval_sets(cfg: CompareConfig, root: Path) -> list[EvalSet]:
    return [EvalSet(s.name, s.distribution, _examples(s, cfg.prompt_style, root)) for s in cfg.eval_sets]


def _examples(s: EvalSetCfg, style: str | None, root: Path) -> list[Example]:
    if s.benchmark is not None:
        from duotune.eval import load_benchmark

        examples = load_benchmark(s.benchmark, limit=s.limit, prompt_style=style)
    else:
        path = _generated(s.generate, root / "data" / s.name) if s.generate else s.file
        examples = load_examples(path, limit=s.limit, prompt_style=style)
    if s.fewshot_task and s.fewshot_k:
        from duotune.tasks import fewshot_messages

        shots = fewshot_messages(s.fewshot_task, s.fewshot_k, seed=0)
        examples = [replace(ex, prompt=_prepend(ex.prompt, shots)) for ex in examples]
    return examples


def _prepend(prompt: list[dict[str, Any]], shots: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Worked examples go after any system turn, before the question (as earlier chat turns)."""
    system = [m for m in prompt if m.get("role") == "system"]
    return system + [dict(m) for m in shots] + [m for m in prompt if m.get("role") != "system"]


def score(bundle: Any, sets: list[EvalSet], proto: EvalProtocolCfg, seed: int, *, label: str = "",
          progress: bool = False, kv_cache_gib: int = 2) -> dict[str, Any]:
    """Accuracy (mean score over items x samples), mean length, truncated share per eval set, and
    `per_item`: each item's score (mean over its samples) in the set's order, which paired comparisons
    between methods scored on the same items read; with `progress` a bar per set named
    `eval <label> <set>` (the hf engine advances it after each generate batch, vllm once per set).
    Sampled by `proto.engine` (`rollout.choose_sampler`); `eval_engine` in the result is its line. A
    vLLM engine on a CPU gets `kv_cache_gib` of KV cache: the training's `rollout.vllm.cpu_kv_cache_gib`
    lets the evaluation reuse the training chunk's idle engine (another size starts a second one)."""
    from duotune.rollout import SamplingParams, choose_sampler, close_sampler

    def make_vllm() -> Any:
        from duotune.rollout.vllm import VLLMSampler

        return VLLMSampler(bundle, cpu_kv_cache_gib=kv_cache_gib)

    sampler, line = choose_sampler(bundle, proto.engine, batch_size=proto.batch_size, make_vllm=make_vllm,
                                   setting="eval.engine")
    params = SamplingParams(n=proto.n, temperature=proto.temperature, max_new_tokens=proto.max_new_tokens,
                            seed=seed)
    try:
        out: dict[str, Any] = {s.name: _score_set(sampler, s, params, label, progress) for s in sets}
    finally:
        close_sampler(sampler)
    return {"evals": out, "eval_engine": line}


def _score_set(sampler: Any, s: EvalSet, params: Any, label: str, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from duotune.eval import grade

    with tqdm(total=len(s.examples) * params.n, desc=" ".join(p for p in ("eval", label, s.name) if p),
              unit="sample", disable=not progress, dynamic_ncols=True) as bar:
        if hasattr(sampler, "on_chunk"):
            sampler.on_chunk = bar.update  # after each generate batch, with its number of sequences
        completions = sampler.sample(s.examples, params)
        bar.n = bar.total
        bar.refresh()
    flat = [(i, ex, c) for i, (ex, comps) in enumerate(zip(s.examples, completions)) for c in comps]
    item_sum = [0.0] * len(s.examples)
    for kind in ("math", "mcq"):  # one batched call per grading kind
        part = [(i, ex, c) for i, ex, c in flat if (ex.reward_type == "mcq") == (kind == "mcq")]
        graded = grade(kind, [c.text for _, _, c in part], [ex.answer or "" for _, ex, _ in part])
        for (i, _, _), (_, sc) in zip(part, graded):
            item_sum[i] += sc or 0.0  # None (ungradable gold) counts as wrong
    k = max(1, len(flat))
    return {"accuracy": sum(item_sum) / k,
            "mean_length": sum(len(c.token_ids) for _, _, c in flat) / k,
            "truncated_fraction": sum(c.finish_reason == "length" for _, _, c in flat) / k,
            "items": float(len(s.examples)),
            "per_item": [v / params.n for v in item_sum]}


def kl_to_initial(bundle: Any, initial: Any, examples: list[Example], proto: EvalProtocolCfg,
                  seed: int) -> float | None:
    """KL(pi || pi_0) per token, estimated on responses sampled from pi at T = 1: the token mean of the
    k3 estimator (Schulman, "Approximating KL divergence": unbiased under pi, never negative; SPEC 1)."""
    if not proto.kl_probe or not examples:
        return None
    from duotune.analysis.teacher import teacher_force, with_responses
    from duotune.rollout import HFSampler, SamplingParams

    probe = examples[:proto.kl_probe]
    comps = HFSampler(bundle, batch_size=proto.batch_size).sample(
        probe, SamplingParams(n=1, temperature=1.0, max_new_tokens=proto.max_new_tokens, seed=seed))
    forced = with_responses(probe, [c[0].text for c in comps])
    now = teacher_force(bundle, forced, max_tokens=proto.max_new_tokens)
    ref = teacher_force(initial, forced, max_tokens=proto.max_new_tokens)
    from duotune.algos import kl_estimate

    kl = kl_estimate(now.logp, ref.logp.to(now.logp.device), "k3") * now.mask
    return float(kl.sum() / now.mask.sum().clamp(min=1))
