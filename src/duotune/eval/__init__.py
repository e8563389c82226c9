"""Evaluation: benchmark registry (math in-distribution, MCQ out-of-distribution), the resumable eval
run graded by the training verifier, pass@k / maj@k / avg@k, the cross-task matrix, CLI entry points.

Importing this package fills the `benchmark` and `suite` registries; torch is imported through
`duotune.rollout`, models only when a run needs one.
"""

from duotune.eval.benchmarks import (
    Benchmark,
    benchmarks,
    get_benchmark,
    load_benchmark,
    resolve_benchmarks,
    suites,
)
from duotune.eval.cli import add_eval_arguments, add_matrix_arguments, run_eval_command, run_matrix_command
from duotune.eval.grading import grade
from duotune.eval.harness import ModelSource, evaluate, run_eval_slice
from duotune.eval.mcq import Choice, parse_options, render_mcq, shuffle_choice
from duotune.eval.metrics import maj_at_k, pass_at_k, summarize
from duotune.eval.report import build_matrix, evaluate_matrix, format_table, matrix_markdown

__all__ = [
    "Benchmark", "Choice", "ModelSource", "add_eval_arguments", "add_matrix_arguments", "benchmarks",
    "build_matrix", "evaluate", "evaluate_matrix", "format_table", "get_benchmark", "grade",
    "load_benchmark", "maj_at_k", "matrix_markdown", "parse_options", "pass_at_k", "render_mcq",
    "resolve_benchmarks", "run_eval_command", "run_eval_slice", "run_matrix_command", "shuffle_choice",
    "suites", "summarize",
]
