"""Reports: the printed summary table of one run, and the cross-task matrix (OThink-MR1's cross-task
evaluation: rows = models/checkpoints, columns = benchmarks) as JSON and markdown.

Imports `duotune.eval.harness` for `evaluate_matrix`; the formatting functions are pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from duotune.errors import ConfigError
from duotune.eval.benchmarks import resolve_benchmarks
from duotune.eval.harness import evaluate


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A fixed-width table: benchmark, items, n, accuracy (avg@n), pass@n, maj@n, extraction rate and
    mode, mean length, truncated."""
    header = ("benchmark", "items", "n", "acc %", "pass@n %", "maj@n %", "extracted %", "extraction",
              "mean len", "trunc %")
    rows = [header]
    for name, s in results.items():
        n = s.get("n", 0)
        rows.append((name, str(s.get("items", 0)), str(n), _pct(s.get("accuracy")),
                     _pct(s.get("pass@k", {}).get(str(n))), _pct(s.get("maj@k", {}).get(str(n))),
                     _pct(s.get("extraction_rate")), str(s.get("extraction", "-")),
                     f"{s.get('mean_length', 0.0):.1f}", _pct(s.get("truncated_fraction"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def build_matrix(labels: Sequence[str], benchmarks: Sequence[str],
                 results: Sequence[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The matrix record: models, benchmarks, accuracy[model][benchmark] (None where not evaluated)."""
    if len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} result sets")
    return {"models": list(labels), "benchmarks": list(benchmarks),
            "accuracy": {label: {b: res.get(b, {}).get("accuracy") for b in benchmarks}
                         for label, res in zip(labels, results)}}


def matrix_markdown(matrix: dict[str, Any]) -> str:
    """Markdown table of accuracies in percent: one row per model, one column per benchmark, + mean."""
    benches = matrix["benchmarks"]
    lines = ["| model | " + " | ".join(benches) + " | mean |",
             "|---|" + "---:|" * (len(benches) + 1)]
    for model in matrix["models"]:
        accs = [matrix["accuracy"][model].get(b) for b in benches]
        done = [a for a in accs if a is not None]
        mean = sum(done) / len(done) if done else None
        lines.append(f"| {model} | " + " | ".join(_pct(a) for a in accs) + f" | {_pct(mean)} |")
    return "\n".join(lines) + "\n"


def evaluate_matrix(models: Sequence[Any], benchmarks: str | Sequence[str] | None = None, *,
                    out_dir: str | Path, suite: str | None = None, labels: Sequence[str] | None = None,
                    **eval_kwargs: Any) -> dict[str, Any]:
    """Evaluate every model (name, path, checkpoint folder, bundle or sampler) on every benchmark.

    Each model's run goes to `<out>/<label>/` (so re-running resumes); the matrix is written to
    `<out>/matrix.json` and `<out>/matrix.md`. `eval_kwargs` are passed to `evaluate`.
    """
    names = resolve_benchmarks(benchmarks, suite)
    labels = list(labels) if labels else [_label(m) for m in models]
    if len(labels) != len(models):
        raise ConfigError(f"{len(labels)} labels given for {len(models)} models; give one label per model")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"model labels must be unique (got {labels}); pass distinct --labels")
    out = Path(out_dir)
    results = [evaluate(m, names, out_dir=out / model_slug(label), model_name=label, **eval_kwargs)
               for m, label in zip(models, labels)]
    matrix = build_matrix(labels, names, results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.json").write_text(json.dumps(matrix, indent=2) + "\n", encoding="utf-8")
    (out / "matrix.md").write_text(matrix_markdown(matrix), encoding="utf-8")
    return matrix


def _label(model: Any) -> str:
    if isinstance(model, (str, Path)):
        return str(model)
    return str(getattr(model, "name", None) or type(model).__name__)


def model_slug(text: str) -> str:
    """A folder name for a model label: path separators and odd characters become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
