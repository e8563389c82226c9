"""The `duotune` command line: train, eval, matrix, compare, analyze, pipeline, list, data.

Subcommands import their subsystem lazily so `duotune --help` stays fast. User errors
(`DuotuneError`) print one line and exit 2; everything else is a real bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from duotune.errors import DuotuneError

# Modules whose import fills the registries that `duotune list` shows.
REGISTRY_MODULES = ("duotune.algos", "duotune.rewards", "duotune.models", "duotune.data",
                    "duotune.eval", "duotune.trainers", "duotune.tasks")


def _train_help(method: str | None = None) -> str:
    from duotune.config import describe_fields
    from duotune.trainers import TrainConfig
    from duotune.trainers.methods.base import describe_method

    rows = describe_fields(TrainConfig)
    width = max(len(k) for k, _, _ in rows)
    lines = [f"  {k:<{width}}  {desc} [default: {d}]" for k, d, desc in rows]
    text = "config fields (set in the YAML or as key=value overrides):\n" + "\n".join(lines)
    tail = describe_method(method) if method else "run `duotune train --help METHOD` for a method's `algo` settings"
    return f"{text}\n\n{tail}"


def _task_params_help() -> str:
    """Every task's key=value parameters with their defaults (the epilog of `data make --help`)."""
    from duotune.tasks import task_params, tasks

    lines = ["task parameters (key=value after the task name):"]
    for name in tasks.names():
        lines.append(f"  {name}:")
        lines += [f"    {k}  {p.help} [default: {p.default!r}]" for k, p in task_params(name).items()]
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    from duotune.config import load_config
    from duotune.trainers import TrainConfig, train

    cfg = load_config(TrainConfig, args.config, args.overrides)
    result = train(cfg)
    print(f"run folder: {getattr(result, 'run_dir', result)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from duotune.registry import Registry

    for mod in REGISTRY_MODULES:
        importlib.import_module(mod)
    registries = Registry.all()
    kind = args.kind
    if kind and kind not in registries and kind.endswith("s") and kind[:-1] in registries:
        kind = kind[:-1]  # `duotune list rewards` means the `reward` registry
    if args.name:
        if kind != "method":
            raise DuotuneError(f"`duotune list {kind} NAME` is not supported; NAME works with `list method`")
        from duotune.trainers.methods.base import describe_method

        print(describe_method(args.name))
        return 0
    kinds = [kind] if kind else sorted(registries)
    for kind in kinds:
        if kind not in registries:
            from duotune.errors import UnknownNameError
            raise UnknownNameError("registry kind", kind, registries)
        reg = registries[kind]
        print(f"{kind}:")
        width = max((len(n) for n in reg.names()), default=0)
        for name in reg.names():
            print(f"  {name:<{width}}  {reg.describe(name)}")
    return 0


def cmd_data_make(args: argparse.Namespace) -> int:
    from duotune.tasks import write_task

    params = dict(_kv(p) for p in args.params)
    out = write_task(args.task, n=args.n, seed=args.seed, out_dir=args.out, split=args.split, **params)
    print(f"wrote {args.n} {args.task} rows to {out}")
    return 0


def _kv(item: str) -> tuple[str, object]:
    from duotune.config import parse_override

    keys, value = parse_override(item)
    return ".".join(keys), value


# Subcommands whose flags live in their subsystem: (name, help, module, add-arguments fn, run fn).
SUBSYSTEM_COMMANDS = [
    ("eval", "evaluate a model or checkpoint on benchmarks",
     "duotune.eval", "add_eval_arguments", "run_eval_command"),
    ("matrix", "cross-task matrix: several models x several benchmarks",
     "duotune.eval", "add_matrix_arguments", "run_matrix_command"),
    ("compare", "every method on one task, one budget, one protocol",
     "duotune.analysis", "add_compare_arguments", "run_compare_command"),
    ("analyze", "token-distribution shift and learning-dynamics map",
     "duotune.analysis", "add_analyze_arguments", "run_analyze_command"),
    ("pipeline", "VLAA-style six-stage distillation pipeline",
     "duotune.pipeline", "add_pipeline_arguments", "run_pipeline_command"),
]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser(with_train_fields: bool = False, method: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; `with_train_fields` adds the field tables that need heavier imports (train's
    config fields, the tasks' parameters) to the help epilogs: `main` sets it when help is asked for;
    `method` adds that method's settings to train's."""
    parser = argparse.ArgumentParser(
        prog="duotune", formatter_class=_HelpFormatter,
        description="Post-train LLMs and VLMs for reasoning: SFT, GRPO, GRPO-D, LUFFY, SRFT and "
                    "sequential pipelines as configs of one trainer.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train with a YAML recipe (see configs/)",
                       formatter_class=_HelpFormatter,
                       epilog=_train_help(method) if with_train_fields else
                       "run `duotune train --help` to see every config field")
    p.add_argument("config", help="YAML recipe, e.g. configs/srft.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=1e-6")
    p.set_defaults(func=cmd_train)

    for name, help_, module, add, run in SUBSYSTEM_COMMANDS:
        p = sub.add_parser(name, help=help_, formatter_class=_HelpFormatter)
        _optional_arguments(p, module, add, run)

    p = sub.add_parser("list", help="list registered names (methods, losses, rewards, models, ...)",
                       formatter_class=_HelpFormatter)
    p.add_argument("kind", nargs="?", help="only this registry kind (e.g. reward, benchmark, method)")
    p.add_argument("name", nargs="?", help="with `method`: that method's paper, needs and settings")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("data", help="generate synthetic task data", formatter_class=_HelpFormatter)
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    m = dsub.add_parser("make", help="write N rows (+ PNG images) of a synthetic task",
                        formatter_class=_HelpFormatter,
                        epilog=_task_params_help() if with_train_fields else
                        "run `duotune data make --help` to see every task's parameters")
    m.add_argument("task", help="task name (see `duotune list task`)")
    m.add_argument("--n", type=int, default=100, help="number of rows")
    m.add_argument("--seed", type=int, default=0, help="generator seed")
    m.add_argument("--split", default="train", choices=["train", "test"],
                   help="train and test draw from disjoint seed streams")
    m.add_argument("--out", required=True, help="output folder (data.jsonl, images/)")
    m.add_argument("params", nargs="*", help="task parameters as key=value (e.g. level=2)")
    m.set_defaults(func=cmd_data_make)
    t = dsub.add_parser("teacher", help="demos written by another model: sample, keep the first the verifier "
                        "accepts (docs/protocol.md, regime b)", formatter_class=_HelpFormatter)
    _optional_arguments(t, "duotune.data.teacher_pool", "add_teacher_arguments", "run_teacher_command")
    return parser


def _optional_arguments(p: argparse.ArgumentParser, module: str, add: str, run: str) -> None:
    """Let a subsystem define its own flags; keeps cli.py free of subsystem details."""
    mod = importlib.import_module(module)
    getattr(mod, add)(p)
    p.set_defaults(func=getattr(mod, run))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_help = any(a in ("-h", "--help") for a in argv)
    method = None
    if wants_help and argv[:1] == ["train"]:  # `duotune train --help METHOD` adds that method's settings
        import duotune.trainers  # noqa: F401 - fills the method registry
        from duotune.registry import Registry

        method = next((a for a in argv[1:] if a in Registry.all()["method"].names()), None)
    parser = build_parser(with_train_fields=wants_help, method=method)
    # key=value items may come after flags (`data make counting --n 3 variant=mix`): argparse
    # stops collecting a positional list at the first flag, so collect the stragglers here.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if "=" not in e or e.startswith("-")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        target = "overrides" if hasattr(args, "overrides") else "params"
        if not hasattr(args, target):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, target, list(getattr(args, target)) + extra)
    try:
        return int(args.func(args) or 0)
    except DuotuneError as e:
        print(f"duotune {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
