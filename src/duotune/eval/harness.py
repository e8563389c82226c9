"""The eval run: sample k completions per benchmark item, grade them with the training verifier, keep
per-sample records (resumable), and summarise (accuracy, avg@k, pass@k, maj@k, lengths, breakdowns).

Imports `duotune.rollout` (sampling params, the HF sampler) and `duotune.models` lazily, so importing
this module stays free of torch; never trainers or algos.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from duotune import jsonl
from duotune.data import Example
from duotune.eval.benchmarks import extraction_mode, get_benchmark, load_benchmark, resolve_benchmarks
from duotune.eval.grading import grade
from duotune.eval.metrics import summarize
from duotune.eval.records import SampleStore, prompt_hash

if TYPE_CHECKING:
    from duotune.rollout.sampler import Sampler, SamplingParams

_Todo = list[tuple[Example, list[int]]]  # items with the sample indices they still miss


class ModelSource:
    """What samples: a `Sampler`, a `ModelBundle`, or a model name/path loaded on first use (so a
    fully resumed run never loads the model)."""

    def __init__(self, model: Any, *, batch_size: int = 8, device: str | None = None,
                 name: str | None = None):
        self.model, self.batch_size, self.device = model, batch_size, device
        self._sampler: Sampler | None = None
        if isinstance(model, (str, Path)):
            self.name = name or str(model)
        elif _is_bundle(model):
            self.name = name or str(getattr(model, "name", None) or type(model.model).__name__)
        else:
            self.name = name or type(model).__name__

    def sampler(self) -> Sampler:
        if self._sampler is None:
            from duotune.rollout.sampler import HFSampler

            model = self.model
            if isinstance(model, (str, Path)):
                from duotune.models import load_model

                model = load_model(str(model), device=self.device)
            if _is_bundle(model):
                # A VLM must never emit image placeholders (see ModelBundle.vision_token_ids).
                suppress = model.vision_token_ids if getattr(model, "is_vlm", False) else None
                model = HFSampler(model, batch_size=self.batch_size, suppress_tokens=suppress)
            self._sampler = model
        return self._sampler


@dataclass(frozen=True)
class _Run:
    """Resolved settings of one benchmark run (benchmark defaults overridden by the caller's)."""

    name: str
    kind: str
    params: SamplingParams
    breakdown: tuple[str, ...]
    settings: dict[str, Any]
    extraction: str


def evaluate(model: Any, benchmarks: str | Sequence[str] | None = None, *, suite: str | None = None,
             n: int | None = None, limit: int | None = None, max_new_tokens: int | None = None,
             temperature: float | None = None, top_p: float | None = None, batch_size: int = 8,
             seed: int = 0, prompt_style: str | None = None, out_dir: str | Path | None = None,
             progress: bool = True, model_name: str | None = None, device: str | None = None,
             extraction: str | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate `model` (Sampler, ModelBundle, or name/path/alias) on benchmarks and/or a suite.

    None settings take each benchmark's defaults (T 0.6, top_p 1.0, n 32 for AIME/AMC else 1, 8192
    new tokens, lenient answer extraction; `extraction="strict"` scores math as training rewards do,
    MCQ always reads the option letter). With `out_dir`, per-sample records go to `<out>/<benchmark>/samples.jsonl` and
    summaries to `<out>/<benchmark>/summary.json` and `<out>/summary.json`; re-running with the same
    settings skips finished samples (a changed `extraction` regrades them without sampling again).
    Returns {benchmark: summary}.
    """
    from duotune.rollout.sampler import SamplingParams

    source = model if isinstance(model, ModelSource) else ModelSource(
        model, batch_size=batch_size, device=device, name=model_name)
    out = Path(out_dir) if out_dir is not None else None
    results: dict[str, dict[str, Any]] = {}
    for name in resolve_benchmarks(benchmarks, suite):
        bench = get_benchmark(name)
        params = SamplingParams(
            n=n or bench.n, temperature=bench.temperature if temperature is None else temperature,
            top_p=bench.top_p if top_p is None else top_p,
            max_new_tokens=max_new_tokens or bench.max_new_tokens, seed=seed)
        mode = extraction_mode(name, extraction)
        settings = {"model": source.name, "benchmark": name, "n": params.n, "limit": limit,
                    "temperature": params.temperature, "top_p": params.top_p,
                    "max_new_tokens": params.max_new_tokens, "prompt_style": prompt_style, "seed": seed,
                    "extraction": mode}
        run = _Run(name, bench.kind, params, bench.breakdown, settings, mode)
        examples = load_benchmark(name, limit=limit, seed=seed, prompt_style=prompt_style)
        results[name] = _run_benchmark(source, run, examples, batch_size, out, progress)
    if out is not None:
        _merge_summaries(out / "summary.json", results)
    return results


def run_eval_slice(model: Any, benchmark: str, *, limit: int, n: int = 1, max_new_tokens: int = 512,
                   batch_size: int = 8, temperature: float = 0.0, seed: int = 0,
                   prompt_style: str | None = None, extraction: str | None = None) -> dict[str, float]:
    """Evaluation during training: the first `limit` items of `benchmark`, greedy by default, nothing
    written to disk, the benchmark's extraction unless `extraction` is given. Returns flat scalars
    (accuracy, mean_length, truncated_fraction, answered_fraction, extraction_rate, items) that the
    trainer logs as `eval/<benchmark>/<key>`."""
    summary = evaluate(model, [benchmark], n=n, limit=limit, max_new_tokens=max_new_tokens,
                       temperature=temperature, top_p=1.0, batch_size=batch_size, seed=seed,
                       prompt_style=prompt_style, progress=False, extraction=extraction)[benchmark]
    keys = ("accuracy", "mean_length", "truncated_fraction", "answered_fraction", "extraction_rate", "items")
    return {k: float(summary[k]) for k in keys}


def _run_benchmark(source: ModelSource, run: _Run, examples: list[Example], batch_size: int,
                   out: Path | None, progress: bool) -> dict[str, Any]:
    store = SampleStore(out / run.name / "samples.jsonl" if out else None, run.settings)
    hashes = {ex.id: prompt_hash(ex.prompt) for ex in examples}
    n = run.params.n
    todo = [(ex, [j for j in range(n) if not store.has(ex.id, j, hashes[ex.id])]) for ex in examples]
    # Sorting the whole benchmark by prompt length keeps each generate batch's left padding short.
    todo = sorted(((ex, m) for ex, m in todo if m), key=lambda t: len(_prompt_text(t[0])))
    with tqdm(total=sum(len(m) for _, m in todo), desc=run.name, unit="sample",
              disable=not progress, dynamic_ncols=True) as bar:
        for chunk in _chunks(todo, batch_size):
            records = _sample_chunk(source.sampler(), chunk, run, hashes)
            store.add(records)
            bar.update(len(records))
    records = _regraded(store, [store.get(ex.id, j, hashes[ex.id]) for ex in examples for j in range(n)], run)
    summary = summarize(records, {ex.id: ex.meta for ex in examples}, run.breakdown)
    summary = {"benchmark": run.name, **summary, "extraction": run.extraction, "settings": run.settings}
    if out is not None:
        jsonl.write_json(out / run.name / "summary.json", summary)
    return summary


def _regraded(store: SampleStore, records: list[dict[str, Any]], run: _Run) -> list[dict[str, Any]]:
    """`records`, with those graded under another extraction mode (or before modes existed) graded
    again in this run's mode and stored; the samples themselves are kept."""
    stale = [i for i, r in enumerate(records) if r.get("extraction") != run.extraction]
    if not stale:
        return records
    graded = grade(run.kind, [records[i]["completion"] for i in stale],
                   [records[i]["gold"] or "" for i in stale], run.extraction)
    fresh = [{**records[i], "extracted": extracted, "score": score or 0.0, "gradable": score is not None,
              "extraction": run.extraction} for i, (extracted, score) in zip(stale, graded)]
    store.add(fresh)
    out = list(records)
    for i, record in zip(stale, fresh):
        out[i] = record
    return out


def _chunks(todo: _Todo, batch_size: int) -> Iterator[_Todo]:
    """Consecutive items whose missing samples add up to about `batch_size` sequences (at least one item)."""
    chunk: _Todo = []
    size = 0
    for item in todo:
        chunk.append(item)
        size += len(item[1])
        if size >= batch_size:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _sample_chunk(sampler: Sampler, chunk: _Todo, run: _Run,
                  hashes: dict[str, str]) -> list[dict[str, Any]]:
    """Sample the missing indices of each item (items grouped by how many they miss) and grade them."""
    groups: dict[int, _Todo] = defaultdict(list)
    for ex, missing in chunk:
        groups[len(missing)].append((ex, missing))
    pending: list[tuple[Example, int, Any]] = []
    for count, items in groups.items():
        first_ex, first_missing = items[0]
        params = replace(run.params, n=count, seed=_chunk_seed(run.params.seed, run.name, first_ex.id,
                                                                first_missing[0]))
        outputs = sampler.sample([ex for ex, _ in items], params)
        if len(outputs) != len(items) or any(len(o) != count for o in outputs):
            raise RuntimeError(f"sampler {type(sampler).__name__} returned {[len(o) for o in outputs]} "
                               f"completions for {len(items)} prompts x n={count}")
        pending += [(ex, j, comp) for (ex, missing), comps in zip(items, outputs)
                    for j, comp in zip(missing, comps)]
    # One grading call per chunk keeps the grading pool's workers busy in parallel.
    graded = grade(run.kind, [c.text for _, _, c in pending], [ex.answer or "" for ex, _, _ in pending],
                   run.extraction)
    return [{"item_id": ex.id, "sample_index": j, "prompt_hash": hashes[ex.id], "gold": ex.answer,
             "completion": comp.text, "extracted": extracted, "score": score or 0.0,
             "gradable": score is not None, "extraction": run.extraction,
             "length": len(comp.token_ids), "truncated": comp.finish_reason == "length"}
            for (ex, j, comp), (extracted, score) in zip(pending, graded)]


def _chunk_seed(seed: int | None, name: str, item_id: str, index: int) -> int | None:
    """A per-batch seed fixed by the run seed and the batch's first sample, so a resumed run draws
    the same samples it would have drawn uninterrupted (with the same batch size)."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{name}:{item_id}:{index}".encode()).hexdigest()
    return int(digest[:8], 16)


def _prompt_text(ex: Example) -> str:
    return "".join(m["content"] if isinstance(m["content"], str) else
                   "".join(p.get("text", "") for p in m["content"]) for m in ex.prompt)


def _merge_summaries(path: Path, results: dict[str, dict[str, Any]]) -> None:
    """`<out>/summary.json` keeps every benchmark evaluated into this folder, newest run winning."""
    merged = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    merged.update(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_json(path, merged)


def _is_bundle(obj: Any) -> bool:
    """A `ModelBundle` (model + tokenizer); anything with its own `generate` is a sampler."""
    is_sampler = callable(getattr(obj, "generate", None))
    return hasattr(obj, "model") and hasattr(obj, "tokenizer") and not is_sampler
