"""The arithmetic study of docs/protocol.md in one resumable command, in either demonstration regime.

- `--regime pilot`: the pilot (`configs/compare/protocol_pilot.yaml`: sft, grpo, srft, seed 0, 60 steps)
  into `runs/compare/protocol_pilot`, then the protocol's rule for T (`pilot_rule`), written to
  `pilot_decision.json` there. `--decide` applies the rule to the curves on disk without training.
- `--regime a`: the comparison of `configs/compare/protocol_arith.yaml` as it stands (the task's
  programmatic demos), run by `duotune.demo`'s worker processes into `<output_dir>/<name>`.
- `--regime b`: demos from another model. (1) The teacher: the comparison's model, SFT-trained on its
  training rows with the demos in prose (`style: prose`: other words, about 1.6x longer; seed 100, 30
  steps x 8 prompts, lr 1e-5 by default) into `<output_dir>/<name>_teacher/teacher/run`. (2) Its pool:
  `data.teacher_pool.build_pool` shows the teacher each training question as it was trained (prose
  few-shot turns), 4 samples, and keeps the first the verifier accepts as that row's demo
  (`.../teacher/pool`, with `teacher_pool.json`: correctness, kept share, demo lengths, the shares
  identical to the program's and to the teacher's own data). A pool whose demos are >= 50 % the
  program's own (`MAX_IDENTICAL`) is refused before it reaches the store. (3) The same comparison on the
  pool (`data.file=<pool>`), into `<output_dir>/<name>_teacher`.

Each step is skipped when its output is on disk, so re-running the command continues the study.
The study outlives one machine's run folders through `--store` (default `docs/protocol_runs`, committed):
before and after the runs, every finished result (`results/<method>-s<seed>.json`, the curve with its
per-item scores, and its run's training log `runs/<method>-s<seed>/metrics.jsonl` with its config) and
the teacher's pool are copied both ways between the store and the run folders (`sync_results`), so a
fresh checkout trains only what no earlier session finished (`--sync` copies and trains nothing).
`python -m duotune.studies.arith_protocol --regime b`. Imports the analysis, the trainers and the
models lazily.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from duotune.analysis.compare_config import CompareConfig
from duotune.config import load_config
from duotune.errors import ConfigError
from duotune.paths import REPO_ROOT
from duotune.studies.store import STORE, report_sync, sync_store

CONFIG = REPO_ROOT / "configs" / "compare" / "protocol_arith.yaml"
# Regime (b)'s gate (docs/protocol.md): a pool whose kept demos are the program's own, word for word, this
# often tests regime (a) again on fewer rows (session 13's first teacher: 97.8 %)
MAX_IDENTICAL = 0.5
PILOT = REPO_ROOT / "configs" / "compare" / "protocol_pilot.yaml"


def pilot_rule(curves: dict[str, dict[int, float]], *, at: int = 30, window: int = 10, gain: float = 2.0,
               short: int = 30, long: int = 60, need: int = 2) -> dict[str, Any]:
    """docs/protocol.md, "Budget", step 1: T = `long` when at step `at` at least `need` of the curves
    still gain `gain` points or more over the last `window` steps (accuracy in % per step), else
    `short`. A curve without both points cannot be judged: the decision waits (T None)."""
    gains = {m: (c[at] - c[at - window]) if at in c and at - window in c else None for m, c in curves.items()}
    known = [g for g in gains.values() if g is not None]
    moving = sum(g >= gain for g in known)
    if len(known) < len(gains):
        t = long if moving >= need else None  # enough moving curves decide it before the rest arrive
    else:
        t = long if moving >= need else short
    return {"gains": gains, "moving": moving, "T": t,
            "rule": f"T = {long} when >= {need} curves gain >= {gain} points from step {at - window} to {at}, else {short}"}


def pilot_curves(root: Path, methods: list[str], seed: int = 0) -> dict[str, dict[int, float]]:
    """Main-set accuracy (%) by step of each method's pilot run, read from its curve.jsonl (also mid-run)."""
    from duotune import jsonl

    out: dict[str, dict[int, float]] = {}
    for m in methods:
        path = root / "runs" / f"{m}-s{seed}" / "curve.jsonl"
        points = jsonl.read(path) if path.is_file() else []
        out[m] = {int(p["step"]): 100 * next(iter(p["evals"].values()))["accuracy"] for p in points}
    return out


def sync_results(root: Path, store: Path) -> dict[str, list[str]]:
    """`studies.store.sync_store` for a comparison folder: a result is finished when `status: done`
    (failed results stay where they are, and the next run retries them)."""
    from duotune.analysis.compare import finished

    return sync_store(root, store, finished)


def sync_pool(pool: Path, store: Path) -> bool:
    """The teacher's pool (`data.jsonl` + `teacher_pool.json`) into `store` when built here, or back
    from it when not (its summary's `data` then names this machine's file). True when `pool` holds it."""
    import json
    import shutil

    from duotune import jsonl

    names = ("data.jsonl", "teacher_pool.json")
    if all((pool / n).is_file() for n in names):
        if not all((store / n).is_file() for n in names):
            store.mkdir(parents=True, exist_ok=True)
            for n in names:
                shutil.copyfile(pool / n, store / n)
        return True
    if not all((store / n).is_file() for n in names):
        return False
    pool.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store / "data.jsonl", pool / "data.jsonl")
    summary = {**json.loads((store / "teacher_pool.json").read_text()), "data": str(pool / "data.jsonl")}
    jsonl.write_json(pool / "teacher_pool.json", summary)
    return True


def teacher_root(cfg: CompareConfig) -> Path:
    return Path(cfg.output_dir) / f"{cfg.name}_teacher" / "teacher"


def train_teacher(cfg: CompareConfig, *, steps: int = 30, prompts: int = 8, lr: float = 1e-5,
                  seed: int = 100) -> Path:
    """The teacher's checkpoint folder (trained unless already there): SFT from `cfg.model` on the
    comparison's generated training rows with their demos (few-shot turns included) in prose
    (`style: prose`): the same questions, another wording and length than the program's steps."""
    from duotune.tasks import write_task
    from duotune.trainers import TrainConfig, train
    from duotune.trainers.checkpoint import checkpoint_dir

    root = teacher_root(cfg)
    model = checkpoint_dir(root / "run", steps) / "model"
    if (model / "config.json").is_file():
        return model
    src = cfg.data.generate
    if src is None or src.task != "arithmetic":
        raise ConfigError("regime b writes the teacher's data as the arithmetic task's prose demos: the "
                          "comparison's data.generate must be the arithmetic task")
    data = write_task(src.task, n=src.n, seed=src.seed, out_dir=root / "data", split=src.split,
                      **{**src.params, "style": "prose"})
    recipe = Path(cfg.recipes) / "sft.yaml"
    tcfg = load_config(TrainConfig, recipe, [
        f"model={cfg.model}", f"data.train={data}", f"steps={steps}", f"prompts_per_step={prompts}",
        f"optim.lr={lr}", f"run.seed={seed}", f"run.output_dir={root}", "run.name=run",
        f"run.progress={str(cfg.progress).lower()}"])
    result = train(tcfg)
    if result.global_step != steps or not (model / "config.json").is_file():
        raise RuntimeError(f"the teacher run stopped at step {result.global_step} of {steps} without {model}")
    return model


def teacher_pool(cfg: CompareConfig, model: Path, *, samples: int = 4, max_new_tokens: int = 96,
                 seed: int = 0) -> dict[str, Any]:
    """The pool's summary (`teacher_pool.json`), built unless already there, for the comparison's own
    (programmatic) training rows; the teacher sees them as it was trained (its prose data's prompts)."""
    import json

    from duotune.analysis.evalsets import train_file
    from duotune.data.teacher_pool import build_pool

    out = teacher_root(cfg) / "pool"
    summary = out / "teacher_pool.json"
    if summary.is_file() and (out / "data.jsonl").is_file():
        return json.loads(summary.read_text())
    rows = train_file(cfg, Path(cfg.output_dir) / cfg.name)
    engine = str(cfg.common.get("rollout.engine", "auto"))  # the comparison's rollout engine and KV size
    return build_pool(str(model), rows, out, samples=samples, max_new_tokens=max_new_tokens, seed=seed,
                      engine=engine, kv_cache_gib=cfg.kv_cache_gib(), prompts=teacher_root(cfg) / "data" / "data.jsonl",
                      progress=cfg.progress)


def check_pool(pool: Path) -> dict[str, Any]:
    """The pool's summary, printed; a ConfigError when it fails regime (b)'s gate (`MAX_IDENTICAL`)."""
    import json

    s = json.loads((pool / "teacher_pool.json").read_text())
    same = s.get("identical_to_programmatic")  # None: a pool built before it was measured
    own = s.get("identical_to_teacher_data")
    print(f"[protocol] teacher pool: {100 * s['sample_correct_rate']:.1f} % of samples correct, kept "
          f"{s['kept']} of {s['questions']} questions, demos {s['mean_demo_tokens_teacher']:.1f} "
          f"tokens (program {s['mean_demo_tokens_programmatic']:.1f}), "
          f"{'?' if same is None else f'{100 * same:.1f}'} % identical to the program's"
          + ("" if own is None else f", {100 * own:.1f} % to the teacher's training demos") + f"; {s['data']}",
          flush=True)
    if same is None or same >= MAX_IDENTICAL:
        why = ("it does not say how many demos are the program's own" if same is None else
               f"{100 * same:.1f} % of the kept demos are the program's own, word for word (the gate is "
               f"< {100 * MAX_IDENTICAL:.0f} %)")
        raise ConfigError(f"{pool / 'teacher_pool.json'}: {why}: regime (b) needs demos that differ from "
                          "regime (a)'s (docs/protocol.md); delete the teacher folder and the pool (and its "
                          "copy in the store, if there), and build another teacher")
    return s


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m duotune.studies.arith_protocol",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--regime", choices=["pilot", "a", "b"], required=True,
                   help="pilot: the run that fixes T; a: the task's programmatic demos; b: demos from an SFT "
                        "teacher (rejection-sampled)")
    p.add_argument("--config", default=None, help="the comparison YAML (default: configs/compare/"
                   "protocol_pilot.yaml for the pilot, protocol_arith.yaml otherwise)")
    p.add_argument("--decide", action="store_true", help="pilot: apply the rule to the curves on disk, train nothing")
    p.add_argument("--jobs", type=int, default=2, help="worker processes of the comparison (duotune.demo)")
    p.add_argument("--teacher-steps", type=int, default=30, help="regime b: SFT steps of the teacher")
    p.add_argument("--teacher-prompts", type=int, default=8, help="regime b: prompts per teacher step")
    p.add_argument("--teacher-lr", type=float, default=1e-5, help="regime b: the teacher's learning rate")
    p.add_argument("--teacher-seed", type=int, default=100, help="regime b: the teacher run's seed")
    p.add_argument("--samples", type=int, default=4, help="regime b: teacher samples per question")
    p.add_argument("--max-new-tokens", type=int, default=96, help="regime b: decode length of a teacher sample")
    p.add_argument("--store", default=str(STORE), help="committed copy of the finished results and the teacher's "
                   "pool, synced both ways before and after the runs (a fresh checkout resumes from it)")
    p.add_argument("--sync", action="store_true", help="regimes a/b: only sync the store and the run folder "
                   "(results, and regime b's pool), train nothing")
    p.add_argument("--teacher-only", action="store_true", help="regime b: train the teacher and build its "
                   "pool (into the store too), run no comparison")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the comparison config (e.g. seeds=[0])")
    return p


def main(argv: list[str] | None = None) -> int:
    from duotune import demo, jsonl

    args = _parser().parse_intermixed_args(argv)  # flags may follow the key=value overrides
    args.config = args.config or str(PILOT if args.regime == "pilot" else CONFIG)
    cfg = load_config(CompareConfig, args.config, [f"recipes={REPO_ROOT / 'configs'}", *args.overrides])
    extra: list[str] = []
    root = Path(cfg.output_dir) / cfg.name
    if args.regime == "pilot":
        rc = 0 if args.decide else demo.main(["--config", args.config, "--run-dir", str(root), "--jobs",
                                              str(args.jobs), *args.overrides])
        curves = pilot_curves(root, [m for m in cfg.methods if m != "base"], cfg.seeds[0])
        decision = {**pilot_rule(curves), "curves": curves}
        jsonl.write_json(root / "pilot_decision.json", decision)
        print(f"[protocol] pilot: gains {decision['gains']}; T = {decision['T']} ({decision['rule']})")
        return rc
    store = Path(args.store)
    if args.regime == "b":
        pool, pool_store = teacher_root(cfg) / "pool", store / f"{cfg.name}_teacher" / "pool"
        have, s = sync_pool(pool, pool_store), None
        if not have and not args.sync:  # no pool here or in the store: train the teacher, build it
            model = train_teacher(cfg, steps=args.teacher_steps, prompts=args.teacher_prompts,
                                  lr=args.teacher_lr, seed=args.teacher_seed)
            teacher_pool(cfg, model, samples=args.samples, max_new_tokens=args.max_new_tokens)
            s = check_pool(pool)  # before the store: a pool that fails the gate is never committed
            have = sync_pool(pool, pool_store)
        if have:
            s = s or check_pool(pool)
            extra = [f"data.file={s['data']}", "data.generate=null"]
        if args.teacher_only:
            return 0
        root = root.with_name(f"{cfg.name}_teacher")
    report_sync(root.name, sync_results(root, store / root.name))
    if args.sync:
        return 0
    rc = demo.main(["--config", args.config, "--run-dir", str(root), "--jobs", str(args.jobs),
                    *args.overrides, *extra])
    report_sync(root.name, sync_results(root, store / root.name))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
