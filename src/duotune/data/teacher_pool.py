"""`duotune data teacher`: demonstrations written by another model instead of the task's program
(docs/protocol.md, regime (b); issue 20), by rejection sampling on the verifier.

The teacher (any model alias or checkpoint folder, e.g. a duotune SFT run trained in another style)
samples `samples` completions per row's prompt. The first completion the verifier accepts (`eval.grade`,
the row's reward type, lenient mode as the training reward) becomes the row's `demo`; the task's own
solution moves to `programmatic_demo`. Rows with no accepted sample are left out, so every method trained
on the pool shares its rows. Written: `<out>/data.jsonl` (the kept rows, in input order, otherwise
unchanged) and `<out>/teacher_pool.json` (per-sample correctness, kept share, mean demo tokens for the
teacher and the program, the share of kept demos identical to the program's, the settings and the engine).
`prompts` (`--prompts`) shows the teacher the same rows as it was trained on them (e.g. few-shot turns in
its own style); the summary then also counts demos identical to the teacher's own training demo. It
samples on vLLM where vLLM can serve the teacher (`engine: auto`, as the trainer's rollouts), else with
transformers' generate. Imports torch and the models lazily (inside `build_pool`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from duotune import jsonl
from duotune.errors import ConfigError, DataError

CHUNK = 64  # questions per sampling call: the progress bar moves per chunk on either engine


def build_pool(model: str, data: str | Path, out: str | Path, *, samples: int = 4, temperature: float = 1.0,
               max_new_tokens: int = 96, seed: int = 0, batch_size: int = 32, engine: str = "auto",
               kv_cache_gib: int = 2, prompts: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Sample, verify and write the pool (see the module docstring); returns the summary it writes.
    `engine` auto | vllm | hf as `rollout.engine` (auto: vLLM where it can serve the teacher, with a CPU
    KV cache of `kv_cache_gib`; hf: transformers' generate in batches of `batch_size` sequences).
    `prompts`: the same rows (same ids, in order) as the teacher was trained on them, e.g. with few-shot
    turns in its own style; the teacher sees those prompts, the demos still go onto `data`'s rows."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from duotune.data import load_examples
    from duotune.eval import grade
    from duotune.models import load_model
    from duotune.rollout import SamplingParams
    from duotune.rollout.engine import choose_sampler, close_sampler

    if samples < 1 or max_new_tokens < 1 or batch_size < 1:
        raise ConfigError(f"samples, max_new_tokens and batch_size must be >= 1 (got {samples}, "
                          f"{max_new_tokens}, {batch_size})")
    rows = jsonl.read_rows(data)
    examples = load_examples(str(data))
    if not rows or len(rows) != len(examples):
        raise ConfigError(f"{data}: {len(rows)} JSON rows but {len(examples)} examples; give a data.jsonl "
                          "with one row per line (e.g. from `duotune data make`)")
    for (number, _), ex in zip(rows, examples):
        if not ex.answer:
            raise DataError("no gold answer: a teacher demo is kept only when the verifier accepts it",
                            file=str(data), row=number, field="answer")
    shown, taught = examples, [None] * len(rows)  # what the teacher sees; its training demos
    if prompts is not None:
        shown = load_examples(str(prompts))
        if len(shown) != len(rows):
            raise ConfigError(f"{prompts}: {len(shown)} prompt rows for the {len(rows)} rows of {data}; give "
                              "the same rows (e.g. the same `duotune data make` call in the teacher's style)")
        for (number, row), ex in zip(rows, shown):
            if ex.id != row.get("id"):
                raise DataError(f"id {ex.id!r} where {data} has {row.get('id')!r}: the prompt rows must be "
                                "the same rows in the same order", file=str(prompts), row=number, field="id")
        taught = [ex.demo for ex in shown]
    bundle = load_model(model)
    bundle.model.eval().requires_grad_(False)

    def make_vllm() -> Any:
        from duotune.rollout.vllm import VLLMSampler

        return VLLMSampler(bundle, cpu_kv_cache_gib=kv_cache_gib, seed=seed)

    sampler, engine_line = choose_sampler(bundle, engine, batch_size=batch_size, make_vllm=make_vllm,
                                          setting="teacher.engine")
    if progress:
        print(engine_line, flush=True)
    params = SamplingParams(n=samples, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    completions: list[Any] = []
    with tqdm(total=len(examples) * samples, desc=f"teacher {model}", unit="sample", disable=not progress,
              dynamic_ncols=True) as bar:
        for start in range(0, len(examples), CHUNK):  # each chunk seeded on its own: seed + its first row
            part = shown[start:start + CHUNK]
            completions += sampler.sample(part, replace(params, seed=seed + start))
            bar.update(len(part) * samples)
    close_sampler(sampler)
    kept, correct, teacher_tokens, program_tokens, copies, recited = [], 0, [], [], 0, 0
    tok = bundle.tokenizer
    for (_, row), ex, comps, own in zip(rows, examples, completions, taught):
        kind = "mcq" if ex.reward_type == "mcq" else "math"
        scores = [sc or 0.0 for _, sc in grade(kind, [c.text for c in comps], [ex.answer] * len(comps))]
        correct += int(sum(scores))
        first = next((c for c, sc in zip(comps, scores) if sc == 1.0), None)
        if first is None:
            continue
        teacher_tokens.append(len(first.token_ids))
        copies += int(first.text.strip() == (row.get("demo") or "").strip())
        recited += int(own is not None and first.text.strip() == own.strip())
        if row.get("demo"):
            program_tokens.append(len(tok(row["demo"], add_special_tokens=False)["input_ids"]))
        kept.append({**row, "demo": first.text, "programmatic_demo": row.get("demo"),
                     "demo_source": f"teacher:{model}"})
    if not kept:
        raise ConfigError(f"the teacher {model} solved none of the {len(rows)} questions in {samples} samples "
                          "each: no pool to write (a stronger teacher, more samples or more tokens)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "data.jsonl"
    jsonl.write_rows(path, kept, ensure_ascii=False)

    def mean(v: list[int]) -> float | None:
        return sum(v) / len(v) if v else None

    summary = {"teacher": model, "source": str(data), "questions": len(rows), "samples_per_question": samples,
               "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed, "engine": engine_line,
               "sample_correct_rate": correct / (len(rows) * samples), "kept": len(kept),
               "kept_share": len(kept) / len(rows), "mean_demo_tokens_teacher": mean(teacher_tokens),
               "mean_demo_tokens_programmatic": mean(program_tokens),
               "identical_to_programmatic": copies / len(kept), "data": str(path)}
    if prompts is not None:  # the teacher's prompts and how often it recited its own training demo
        summary.update(prompts=str(prompts), identical_to_teacher_data=recited / len(kept))
    jsonl.write_json(out / "teacher_pool.json", summary)
    return summary


def add_teacher_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the teacher: a model alias (`duotune list model`) or a "
                   "checkpoint folder (e.g. runs/<name>/checkpoint-000030/model)")
    p.add_argument("--data", required=True, help="rows to write demos for: a data.jsonl with gold answers "
                   "(e.g. from `duotune data make`)")
    p.add_argument("--out", required=True, help="output folder (data.jsonl with the kept rows, teacher_pool.json)")
    p.add_argument("--samples", type=int, default=4, help="completions sampled per question; the first the "
                   "verifier accepts becomes the demo")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the teacher")
    p.add_argument("--max-new-tokens", type=int, default=96, help="decode length of each sample")
    p.add_argument("--prompts", default=None, help="the same rows (same ids, in order) as the teacher was "
                   "trained on them, e.g. with few-shot turns in its style: the prompts it sees (default: --data's)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per generate call (the hf engine)")
    p.add_argument("--engine", choices=["auto", "vllm", "hf"], default="auto", help="sampling engine: vLLM "
                   "where it can serve the teacher (auto), vLLM or an error (vllm), transformers' generate (hf)")
    p.add_argument("--kv-cache-gib", type=int, default=2, help="CPU vLLM engine: KV cache size in GiB")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_teacher_command(args: argparse.Namespace) -> int:
    s = build_pool(args.model, args.data, args.out, samples=args.samples, temperature=args.temperature,
                   max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
                   engine=args.engine, kv_cache_gib=args.kv_cache_gib, prompts=args.prompts,
                   progress=not args.no_progress)
    demo_len = s["mean_demo_tokens_teacher"]
    print(f"teacher {s['teacher']}: {100 * s['sample_correct_rate']:.1f} % of {s['questions']} x "
          f"{s['samples_per_question']} samples correct; kept {s['kept']} of {s['questions']} questions "
          f"({100 * s['kept_share']:.1f} %), demos {demo_len:.1f} tokens (program: "
          f"{s['mean_demo_tokens_programmatic'] or 0:.1f}), {100 * s['identical_to_programmatic']:.1f} % "
          f"identical to the program's"
          + (f", {100 * s['identical_to_teacher_data']:.1f} % to its own training demos" if s.get("prompts") else "")
          + f"; wrote {s['data']}")
    return 0
