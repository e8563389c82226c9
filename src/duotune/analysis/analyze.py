"""`duotune analyze shift|map`: the token-distribution shift between an initial and a trained model, and
the learning-dynamics map of checkpoints (or of a comparison's recorded evaluations), as PNG + JSON.

Imports torch-using modules lazily, so building the CLI parser stays light.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from duotune.errors import ConfigError


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `duotune analyze` (two actions: shift, map)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter  # every flag's help shows its default
    sub = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    s = sub.add_parser("shift", help="token-distribution shift: initial vs trained model on fixed responses",
                       formatter_class=fmt)
    s.add_argument("--initial", required=True, help="initial model (alias, path or checkpoint model folder)")
    s.add_argument("--trained", required=True, help="trained model (e.g. runs/x/checkpoint-000018/model)")
    s.add_argument("--responses", default="demos",
                   help="fixed responses: demos (the data's demonstrations), initial or trained "
                        "(that model's greedy answers)")
    s.add_argument("--threshold", type=float, default=0.1, help="a token moved when |delta p| > this")
    m = sub.add_parser("map", help="learning-dynamics map: checkpoints placed by mean log p on references",
                       formatter_class=fmt)
    m.add_argument("--compare", default=None, help="a comparison folder: redraw its recorded map")
    m.add_argument("--path", action="append", default=[], metavar="METHOD=CKPT[,CKPT...]",
                   help="one path: a method's checkpoints (model folders) in training order; repeatable")
    m.add_argument("--references", default="demos,model:smollm2-135m-instruct",
                   help="comma-separated reference sources: demos, model:<name or path> (two or more)")
    for p in (s, m):
        p.add_argument("--data", default=None, help="prompts (with demos): a .jsonl file or shared:<path>; "
                                                    "None = the arithmetic task's test split")
        p.add_argument("--limit", type=int, default=32, help="number of prompts")
        p.add_argument("--max-new-tokens", type=int, default=128, help="decode length of model answers")
        p.add_argument("--out", default="analysis", help="output folder (PNG + JSON)")


def _examples(args: argparse.Namespace) -> list[Any]:
    from duotune.data import load_examples
    from duotune.tasks import make_examples

    if args.limit < 1:
        raise ConfigError(f"--limit must be >= 1 (got {args.limit})")
    if args.data:
        return load_examples(args.data, limit=args.limit)
    return make_examples("arithmetic", args.limit, seed=0, split="test")


def run_shift(args: argparse.Namespace) -> dict[str, Any]:
    from duotune.analysis.dynamics_map import model_responses
    from duotune.analysis.teacher import with_responses
    from duotune.analysis.token_shift import plot_shift, token_shift
    from duotune.models import load_model

    examples = _examples(args)
    initial, trained = load_model(args.initial), load_model(args.trained)
    if args.responses in ("initial", "trained"):
        bundle = initial if args.responses == "initial" else trained
        examples = with_responses(examples, model_responses(bundle, examples, args.max_new_tokens))
    elif args.responses != "demos":
        raise ConfigError(f"--responses {args.responses!r}: use demos, initial or trained")
    stats, before, after = token_shift(initial, trained, examples, threshold=args.threshold)
    out = Path(args.out)
    plot_shift(before, after, args.threshold, out / "token_shift.png")
    result = {"initial": args.initial, "trained": args.trained, "responses": args.responses, **stats}
    (out / "token_shift.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _step_of(path: str, index: int) -> int:
    found = re.search(r"checkpoint-(\d+)", path)
    return int(found.group(1)) if found else index


def run_map(args: argparse.Namespace) -> dict[str, Any]:
    from duotune.analysis.dynamics_map import coordinates, plot_map, reference_sets
    from duotune.models import load_model

    out = Path(args.out)
    if args.compare:
        res = json.loads((Path(args.compare) / "results.json").read_text())
        paths = {k: v for k, v in res["curves"].items() if any("map" in p for p in v)}
        refs = res["config"]["map"]["references"]
    else:
        refs = [r.strip() for r in args.references.split(",") if r.strip()]
        if not args.path:
            raise ConfigError("give --compare DIR or at least one --path METHOD=CKPT[,CKPT...]")
        ref_sets = reference_sets(refs, _examples(args), out / "refs", max_new_tokens=args.max_new_tokens)
        paths = {}
        for item in args.path:
            method, _, ckpts = item.partition("=")
            if not ckpts:
                raise ConfigError(f"--path {item!r} must look like METHOD=CKPT[,CKPT...]")
            paths[method] = [{"step": _step_of(c, i), "checkpoint": c,
                              "map": coordinates(load_model(c.strip()), ref_sets)}
                             for i, c in enumerate(ckpts.split(","))]
    if len(refs) < 2:
        raise ConfigError(f"a dynamics map needs two or more references (got {refs})")
    plot_map(paths, (refs[0], refs[1]), out / "dynamics_map.png")
    result = {"references": refs, "paths": {m: [{k: p[k] for k in ("step", "map", "checkpoint") if k in p}
                                                for p in pts] for m, pts in paths.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "dynamics_map.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_analyze_command(args: argparse.Namespace) -> int:
    """`duotune analyze`: run the chosen analysis and print where its files are."""
    result = run_shift(args) if args.analysis == "shift" else run_map(args)
    if args.analysis == "shift":
        print(f"{100 * result['fraction']:.2f}% of {result['tokens']} tokens moved by more than "
              f"{result['threshold']}; entropy there {result['entropy_moved']}, elsewhere {result['entropy_rest']}")
    print(f"wrote {Path(args.out)}")
    return 0
