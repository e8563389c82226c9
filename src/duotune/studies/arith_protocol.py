"""The arithmetic study of docs/protocol.md in one resumable command, in either demonstration regime.

- `--regime a`: the comparison of `configs/compare/protocol_arith.yaml` as it stands (the task's
  programmatic demos), run by `duotune.demo`'s worker processes into `<output_dir>/<name>`.
- `--regime b`: demos from another model. (1) The teacher: the comparison's model, SFT-trained on the
  word-problem variant of its training rows (`word: true`; seed 100, 30 steps x 8 prompts, lr 1e-5 by
  default) into `<output_dir>/<name>_teacher/teacher/run`. (2) Its pool: `data.teacher_pool.build_pool`
  samples each training question 4 times and keeps the first answer the verifier accepts
  (`.../teacher/pool`, with `teacher_pool.json`: correctness, kept share, demo lengths). (3) The same
  comparison on the pool (`data.file=<pool>`), into `<output_dir>/<name>_teacher`.

Each step is skipped when its output is on disk, so re-running the command continues the study.
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

CONFIG = REPO_ROOT / "configs" / "compare" / "protocol_arith.yaml"


def teacher_root(cfg: CompareConfig) -> Path:
    return Path(cfg.output_dir) / f"{cfg.name}_teacher" / "teacher"


def train_teacher(cfg: CompareConfig, *, steps: int = 30, prompts: int = 8, lr: float = 1e-5,
                  seed: int = 100) -> Path:
    """The teacher's checkpoint folder (trained unless already there): SFT from `cfg.model` on the
    word-problem variant of the comparison's generated training rows."""
    from duotune.tasks import write_task
    from duotune.trainers import TrainConfig, train
    from duotune.trainers.checkpoint import PREFIX

    root = teacher_root(cfg)
    model = root / "run" / f"{PREFIX}{steps:06d}" / "model"
    if (model / "config.json").is_file():
        return model
    src = cfg.data.generate
    if src is None or src.task != "arithmetic":
        raise ConfigError("regime b writes the teacher's data as arithmetic word problems: the comparison's "
                          "data.generate must be the arithmetic task")
    data = write_task(src.task, n=src.n, seed=src.seed, out_dir=root / "data", split=src.split,
                      **{**src.params, "word": True})
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
    """The pool's summary (`teacher_pool.json`), built unless already there, from the comparison's own
    (programmatic) training rows."""
    import json

    from duotune.analysis.evalsets import train_file
    from duotune.data.teacher_pool import build_pool

    out = teacher_root(cfg) / "pool"
    summary = out / "teacher_pool.json"
    if summary.is_file() and (out / "data.jsonl").is_file():
        return json.loads(summary.read_text())
    rows = train_file(cfg, Path(cfg.output_dir) / cfg.name)
    return build_pool(str(model), rows, out, samples=samples, max_new_tokens=max_new_tokens, seed=seed,
                      progress=cfg.progress)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m duotune.studies.arith_protocol",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--regime", choices=["a", "b"], required=True,
                   help="a: the task's programmatic demos; b: demos from an SFT teacher (rejection-sampled)")
    p.add_argument("--config", default=str(CONFIG), help="the comparison YAML")
    p.add_argument("--jobs", type=int, default=2, help="worker processes of the comparison (duotune.demo)")
    p.add_argument("--teacher-steps", type=int, default=30, help="regime b: SFT steps of the teacher")
    p.add_argument("--teacher-prompts", type=int, default=8, help="regime b: prompts per teacher step")
    p.add_argument("--teacher-lr", type=float, default=1e-5, help="regime b: the teacher's learning rate")
    p.add_argument("--teacher-seed", type=int, default=100, help="regime b: the teacher run's seed")
    p.add_argument("--samples", type=int, default=4, help="regime b: teacher samples per question")
    p.add_argument("--max-new-tokens", type=int, default=96, help="regime b: decode length of a teacher sample")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the comparison config (e.g. seeds=[0])")
    return p


def main(argv: list[str] | None = None) -> int:
    from duotune import demo

    args = _parser().parse_args(argv)
    cfg = load_config(CompareConfig, args.config, [f"recipes={REPO_ROOT / 'configs'}", *args.overrides])
    extra: list[str] = []
    root = Path(cfg.output_dir) / cfg.name
    if args.regime == "b":
        model = train_teacher(cfg, steps=args.teacher_steps, prompts=args.teacher_prompts, lr=args.teacher_lr,
                              seed=args.teacher_seed)
        s = teacher_pool(cfg, model, samples=args.samples, max_new_tokens=args.max_new_tokens)
        print(f"[protocol] teacher pool: {100 * s['sample_correct_rate']:.1f} % of samples correct, kept "
              f"{s['kept']} of {s['questions']} questions, demos {s['mean_demo_tokens_teacher']:.1f} tokens "
              f"(program {s['mean_demo_tokens_programmatic']:.1f}); {s['data']}", flush=True)
        root = root.with_name(f"{cfg.name}_teacher")
        extra = [f"data.file={s['data']}", "data.generate=null"]
    return demo.main(["--config", args.config, "--run-dir", str(root), "--jobs", str(args.jobs),
                      *args.overrides, *extra])


if __name__ == "__main__":
    raise SystemExit(main())
