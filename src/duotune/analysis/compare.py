"""`duotune compare CONFIG`: every method from one initial model, on one task, under one budget, each
checkpoint scored by one protocol; resumable per method and seed; a crashing method is recorded as
failed and the rest still run; then the report (`analysis.report`).

Training runs in chunks of `eval.every` steps through `trainers.train` (`run.stop_after` + resume), so
each evaluation sees the in-memory weights. Imports trainers/models lazily (inside functions).
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duotune import jsonl
from duotune.analysis.compare_config import CompareConfig
from duotune.analysis.plan import BASE
from duotune.errors import ConfigError
from duotune.memory import release_host_memory, rss_gb
from duotune.progress import library_progress

STATUS_DONE, STATUS_FAILED = "done", "failed"


class Context:
    """What every method of one comparison shares: folder, eval sets, map references, initial model."""

    def __init__(self, cfg: CompareConfig, root: Path):
        from duotune.analysis.evalsets import load_eval_sets, train_file

        self.cfg, self.root = cfg, root
        self.train_path = train_file(cfg, root)
        self.sets = load_eval_sets(cfg, root)
        self._initial: Any = None
        self._refs: dict[str, list[Any]] | None = None

    def initial(self) -> Any:
        from duotune.models import load_model

        if self._initial is None:
            self._initial = load_model(self.cfg.model)
            self._initial.model.eval().requires_grad_(False)
        return self._initial

    def drop_initial(self) -> None:
        """Forget the cached initial model (reloaded by the next `initial()`): training does not need it,
        and two workers of a comparison share one machine's memory."""
        self._initial = None

    def refs(self) -> dict[str, list[Any]]:
        """Reference (prompt, response) sets of the dynamics map, made once and cached on disk."""
        from duotune.analysis.dynamics_map import reference_sets

        if self._refs is None:
            main = next(s for s in self.sets if s.name == self.cfg.main_set())
            self._refs = reference_sets(self.cfg.map.references, main.examples[:self.cfg.map.prompts],
                                        self.root / "map_refs", max_new_tokens=self.cfg.map.max_new_tokens,
                                        initial=self.initial, initial_name=self.cfg.model)
        return self._refs


def result_path(root: Path, method: str, seed: int) -> Path:
    return root / "results" / f"{method}-s{seed}.json"


def finished(path: Path) -> bool:
    """Whether `path` holds a finished result (`status: done`); a failed one is retried."""
    return path.is_file() and json.loads(path.read_text()).get("status") == STATUS_DONE


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_json(path, data)  # never half written, never another process's temporary file


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return jsonl.read(path)


def measure(ctx: Context, bundle: Any, seed: int, step: int, train_wall: float, method: str) -> dict[str, Any]:
    """One curve point: accuracy on every eval set (a progress bar per set names the method, seed and
    step), KL to the initial model, map coordinates."""
    from duotune.analysis.dynamics_map import coordinates
    from duotune.analysis.evalsets import kl_to_initial, score

    t0 = time.perf_counter()
    point: dict[str, Any] = {"step": step, "wall_s": train_wall,
                             **score(bundle, ctx.sets, ctx.cfg.eval, seed, label=f"{method}-s{seed} step {step}",
                                     progress=ctx.cfg.progress, kv_cache_gib=ctx.cfg.kv_cache_gib())}
    if step > 0:
        main = next(s for s in ctx.sets if s.name == ctx.cfg.main_set())
        point["kl_to_initial"] = kl_to_initial(bundle, ctx.initial(), main.examples, ctx.cfg.eval, seed)
    else:
        point["kl_to_initial"] = 0.0
    if len(ctx.cfg.map.references) >= 2:
        point["map"] = coordinates(bundle, ctx.refs())
    point["eval_wall_s"] = time.perf_counter() - t0
    release_host_memory()  # the evaluation's freed buffers back to the OS (duotune.memory)
    point["host_rss_gb"] = rss_gb()
    return point


def _train_wall(run_dir: Path, upto: int) -> float:
    """Training seconds up to global step `upto`: the sum of `time/step` (the last record of each step
    counts, so steps repeated after a crash are not double-counted); eval and checkpoint I/O excluded."""
    per_step = {int(r["step"]): float(r["time/step"]) for r in _read_jsonl(run_dir / "metrics.jsonl")
                if r.get("kind") != "eval" and "time/step" in r}
    return sum(v for s, v in per_step.items() if s <= upto)


def run_base(ctx: Context, seed: int) -> dict[str, Any]:
    """The initial model's evaluation (step 0 of every curve), cached in results/base-s<seed>.json."""
    path = result_path(ctx.root, BASE, seed)
    if finished(path):
        return json.loads(path.read_text())
    point = measure(ctx, ctx.initial(), seed, 0, 0.0, BASE)
    res = {"method": BASE, "seed": seed, "status": STATUS_DONE, "curve": [point], "budget": None}
    _write_json(path, res)
    return res


def run_method(ctx: Context, tcfg: Any, method: str, seed: int, base_point: Callable[[], dict[str, Any]],
               budget: dict[str, Any]) -> dict[str, Any]:
    """Train `method` in chunks of eval.every steps, scoring after each chunk; resumes mid-way.
    `base_point()` gives the initial model's point (step 0 of the curve)."""
    from duotune.models import load_model
    from duotune.trainers import train
    from duotune.trainers.checkpoint import list_checkpoints, prune_finished

    run_dir = Path(tcfg.run.output_dir) / tcfg.run.name
    curve_file = run_dir / "curve.jsonl"
    total, every = budget["steps"], ctx.cfg.eval.every
    stops = sorted({*range(every, total, every), total})
    curve = {p["step"]: p for p in _read_jsonl(curve_file)}
    done = max([int(c.name.split("-")[1]) for c in list_checkpoints(run_dir)], default=0)
    stopped_early = False
    while True:
        if done and done not in curve:  # trained but not yet scored (e.g. killed during the eval)
            bundle = _bundle_at(run_dir, done, load_model)
            _append(curve_file, curve, measure(ctx, bundle, seed, done, _train_wall(run_dir, done), method))
        cap = ctx.cfg.budget.max_wall_s
        if done and cap is not None and curve[done]["wall_s"] >= cap:
            stopped_early = done < total
            break
        if done >= total:
            break
        stop = next(s for s in stops if s > done)
        ctx.drop_initial()
        result = train(tcfg.model_copy(update={"run": tcfg.run.model_copy(update={"stop_after": stop})}))
        if result.global_step <= done:
            raise RuntimeError(f"training made no progress past step {done} in {run_dir}")
        done = result.global_step
        _append(curve_file, curve, measure(ctx, result.bundle, seed, done, _train_wall(run_dir, done),
                                            method))
        del result
        release_host_memory()
    points = [base_point()] + [curve[s] for s in sorted(curve)]
    if not ctx.cfg.keep_optimizer_state:  # train() prunes a run that reached its last step; a wall cap
        prune_finished(run_dir)           # can stop one earlier, and it is finished for the comparison
    return {"method": method, "seed": seed, "status": STATUS_DONE, "curve": points, "budget": budget,
            "stopped_by_wall_cap": stopped_early, "run_dir": str(run_dir)}


def _bundle_at(run_dir: Path, step: int, load_model: Any) -> Any:
    from duotune.trainers.checkpoint import checkpoint_dir

    return load_model(str(checkpoint_dir(run_dir, step) / "model"))


def _append(path: Path, curve: dict[int, dict[str, Any]], point: dict[str, Any]) -> None:
    curve[point["step"]] = point
    jsonl.append(path, [point])


def run_compare(cfg: CompareConfig, report_only: bool = False, report: bool = True) -> dict[str, Any]:
    """Run (or resume) the comparison and write its report; returns the results dict (results.json).
    With `report_only` nothing is trained or evaluated: the report is rebuilt from the results on disk
    (methods or seeds without one show as missing). `report=False` skips the report (a worker of a
    comparison split across processes, e.g. `duotune.demo`; returns {})."""
    from duotune.analysis.report import write_report
    from duotune.config import save_config

    root = Path(cfg.output_dir) / cfg.name
    if report_only:
        if not any((root / "results").glob("*.json")):
            raise ConfigError(f"--report-only: no results in {root / 'results'}; run the comparison first")
        save_config(cfg, root / "compare.yaml")  # the folder's config describes the report it holds
        return write_report(root, cfg)
    with library_progress(cfg.progress):
        _run_all(cfg, root)
    return write_report(root, cfg) if report else {}


def _run_all(cfg: CompareConfig, root: Path) -> None:
    """Train and score every method x seed that has no finished result yet."""
    from duotune.analysis.plan import budget_of, plan
    from duotune.config import save_config

    root.mkdir(parents=True, exist_ok=True)
    ctx = Context(cfg, root)
    configs = plan(cfg, ctx.train_path, root / "runs")  # refuses mismatched budgets before any work
    save_config(cfg, root / "compare.yaml")
    for seed in cfg.seeds:
        if BASE in cfg.methods:
            run_base(ctx, seed)
        for method in (m for m in cfg.methods if m != BASE):
            path = result_path(root, method, seed)
            if finished(path):
                continue
            tcfg = configs[method][cfg.seeds.index(seed)]
            try:  # the base point is read (or made) when the method needs it: after its training, so a
                # process running only other methods finds the one another process has written meanwhile
                res = run_method(ctx, tcfg, method, seed, lambda seed=seed: run_base(ctx, seed)["curve"][0],
                                 budget_of(tcfg))
            except Exception as e:  # noqa: BLE001 - one method's crash must not stop the comparison
                res = {"method": method, "seed": seed, "status": STATUS_FAILED,
                       "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:],
                       "budget": budget_of(tcfg)}
                print(f"compare: {method} (seed {seed}) failed: {res['error']}")
            _write_json(path, res)


def compare_fields_help() -> str:
    """Every CompareConfig field with its description and default (the epilog of `compare --help`)."""
    from duotune.config import describe_fields

    rows = describe_fields(CompareConfig)
    width = max(len(k) for k, _, _ in rows)
    return "config fields (set in the YAML or as key=value overrides):\n" + "\n".join(
        f"  {k:<{width}}  {desc} [default: {d}]" for k, d, desc in rows)


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `duotune compare` (the config fields are listed in the epilog)."""
    parser.epilog = compare_fields_help()
    parser.add_argument("config", help="comparison YAML, e.g. configs/compare/arithmetic.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. seeds=[0,1]")
    parser.add_argument("--report-only", action="store_true",
                        help="train and evaluate nothing; rebuild the report from the results already on disk "
                             "(e.g. after running method subsets in parallel with methods=[...] overrides)")


def run_compare_command(args: argparse.Namespace) -> int:
    """`duotune compare`: run or resume the comparison, print the table and the report folder."""
    from duotune.config import load_config

    cfg = load_config(CompareConfig, args.config, args.overrides)
    results = run_compare(cfg, report_only=args.report_only)
    root = Path(cfg.output_dir) / cfg.name
    print((root / "report.md").read_text())
    print(f"report: {root} (results.json, report.md, report.html, plots/); failed: "
          f"{', '.join(results['failed']) or 'none'}")
    return 0
