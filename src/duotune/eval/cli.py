"""Flags and entry points of `duotune eval` and `duotune matrix` (cli.py mounts them as subcommands).

Imports `duotune.eval` modules only; models are loaded lazily by the harness.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from duotune.errors import ConfigError
from duotune.eval.benchmarks import benchmarks, suites
from duotune.eval.report import evaluate_matrix, format_table, matrix_markdown, model_slug
from duotune.rewards.final import EXTRACTION_MODES


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    # Flags whose default is "the benchmark's own" use SUPPRESS (read back with `_opt`), so the help
    # formatter does not append a misleading "(default: None)".
    parser.add_argument("--benchmarks", "--benchmark", dest="benchmarks", default=argparse.SUPPRESS,
                        help=f"comma-separated benchmarks: {', '.join(benchmarks.names())}")
    parser.add_argument("--suite", choices=suites.names(), default=argparse.SUPPRESS,
                        help="a named set of benchmarks (math_id: SRFT's five math sets; ood: ARC-C, "
                             "GPQA-D, MMLU-Pro; all); combined with --benchmarks")
    parser.add_argument("--limit", type=_positive_int, default=argparse.SUPPRESS,
                        help="evaluate only the first N items of each benchmark (default: all)")
    parser.add_argument("--n", type=_positive_int, default=argparse.SUPPRESS,
                        help="samples per item (default: 32 for AIME/AMC, else 1)")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=argparse.SUPPRESS,
                        help="generation budget per sample (default: 8192, SPEC 8)")
    parser.add_argument("--temperature", type=float, default=argparse.SUPPRESS,
                        help="sampling temperature, 0 = greedy (default: 0.6)")
    parser.add_argument("--top-p", type=float, default=argparse.SUPPRESS,
                        help="nucleus sampling top_p (default: 1.0)")
    parser.add_argument("--batch-size", type=_positive_int, default=8,
                        help="sequences per generate call (prompts sorted by length)")
    parser.add_argument("--seed", type=int, default=0,
                        help="sampling seed and MCQ option-shuffle seed")
    parser.add_argument("--prompt-style", default=argparse.SUPPRESS,
                        help="prompt style instead of the benchmark's (boxed for math, lettered MCQ); "
                             "e.g. luffy, think_answer (see `duotune list prompt_style`)")
    parser.add_argument("--extraction", choices=EXTRACTION_MODES, default=argparse.SUPPRESS,
                        help="how math answers are read: lenient (default of every math benchmark: "
                             "boxed, 'the final answer is ...', inline maths, the last number) or strict "
                             "(the final \\boxed{} or <answer>, as training rewards); see `duotune list "
                             "benchmark`. MCQ benchmarks always read the option letter")
    parser.add_argument("--device", default=argparse.SUPPRESS,
                        help="device for the model, e.g. cpu or cuda:0 (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `duotune eval`."""
    parser.add_argument("--model", required=True, default=argparse.SUPPRESS,
                        help="hub id, local path, checkpoint folder or alias (e.g. smollm2-135m-instruct)")
    _common_arguments(parser)
    parser.add_argument("--out", default=argparse.SUPPRESS,
                        help="run folder for samples and summaries; re-running resumes "
                             "(default: eval_runs/<model>)")


def add_matrix_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `duotune matrix` (models x benchmarks)."""
    parser.add_argument("--models", required=True, default=argparse.SUPPRESS,
                        help="comma-separated models or checkpoint folders (the matrix rows)")
    parser.add_argument("--labels", default=argparse.SUPPRESS,
                        help="comma-separated row labels, one per model (default: the model names)")
    _common_arguments(parser)
    parser.add_argument("--out", default="eval_runs/matrix",
                        help="folder for each model's run, matrix.json and matrix.md; re-running resumes")


def run_eval_command(args: argparse.Namespace) -> int:
    """`duotune eval`: evaluate one model, write the run folder, print the table."""
    from duotune.eval.harness import evaluate

    out = Path(_opt(args, "out") or Path("eval_runs") / model_slug(args.model))
    results = evaluate(args.model, _opt(args, "benchmarks"), suite=_opt(args, "suite"), out_dir=out,
                       **_eval_kwargs(args))
    print(format_table(results))
    print(f"samples and summaries: {out}")
    return 0


def run_matrix_command(args: argparse.Namespace) -> int:
    """`duotune matrix`: every model on every benchmark; print the markdown matrix."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise ConfigError("--models is empty; give comma-separated model names or checkpoint folders")
    labels = [x.strip() for x in args.labels.split(",")] if _opt(args, "labels") else None
    matrix = evaluate_matrix(models, _opt(args, "benchmarks"), suite=_opt(args, "suite"), out_dir=args.out,
                             labels=labels, **_eval_kwargs(args))
    print(matrix_markdown(matrix), end="")
    print(f"matrix: {Path(args.out) / 'matrix.json'}, {Path(args.out) / 'matrix.md'}")
    return 0


def _eval_kwargs(args: argparse.Namespace) -> dict[str, object]:
    keys = ("n", "limit", "max_new_tokens", "temperature", "top_p", "prompt_style", "device", "extraction")
    return {**{k: _opt(args, k) for k in keys}, "batch_size": args.batch_size, "seed": args.seed,
            "progress": not args.no_progress}


def _opt(args: argparse.Namespace, name: str) -> object:
    """A flag's value, None when it was not given (flags with a SUPPRESS default)."""
    return getattr(args, name, None)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
