"""docs/protocol.md's claims, one row each, one column per study: where each claim held (issue 20 item 3,
"the README says in which regime each held").

Reads each study's finished record and writes nothing it did not find there:
- the arithmetic regimes (a) and (b): a comparison's `results.json` (`duotune compare ... --report-only`
  or `duotune.studies.arith_protocol`): its paired differences (H1, H4, H6), the time-to-target ratios
  (H2), the entropy test (H3) and the length/reward correlations (H7);
- OThink-MR1 (`othink.json`, H4 and H5 per direction) and VLAA-Thinking (`vlaa.json`, H6), only when
  made at the protocol scale.

A claim is decided in an arithmetic study only when every run it rests on is in the record (all the
protocol's seeds of both methods; H7 all its runs: docs/protocol.md reports a study only when all its
seeds are in), else its cell says how many runs are in. A missing study reads "not run", and "-" marks a
claim the study does not test. Where the
in- and out-of-distribution sets (or the vision study's tasks) agree the cell names one verdict, else
one per set. `python -m duotune.studies.verdicts --out docs/protocol_verdicts` writes `verdicts.md` and
`verdicts.json` there. Imports only the standard library and duotune's jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from duotune.jsonl import write_json
from duotune.paths import REPO_ROOT

# the arithmetic studies' methods and seeds, both regimes (regime (b) swaps only the data)
PROTOCOL = REPO_ROOT / "configs" / "compare" / "protocol_arith.yaml"

# (row label, the pair A > B in a comparison's `paired`) for the arithmetic studies
PAIRS = [
    ("H1 SRFT > SFT -> GRPO", ("srft", "sft_then_grpo")),
    ("H1 SFT -> GRPO > SFT", ("sft_then_grpo", "sft")),
    ("H1 SRFT > GRPO", ("srft", "grpo")),
    ("H1 SRFT > SFT", ("srft", "sft")),
    ("H4 GRPO-D > GRPO", ("grpo_d", "grpo")),
    ("H6 GRPO > SFT -> GRPO", ("grpo", "sft_then_grpo")),
]
ROWS = [label for label, _ in PAIRS[:4]] + [
    "H2 SRFT >= 2.28x faster than SFT -> GRPO", "H3 SRFT's entropy above GRPO's", PAIRS[4][0],
    "H5 SFT does not transfer, GRPO-D does", PAIRS[5][0], "H7 length does not track the score",
    "H7 reward does not track the score"]
STUDIES = {
    "a": ("arithmetic (a): programmatic demos", REPO_ROOT / "docs" / "protocol_arith_a" / "results.json"),
    "b": ("arithmetic (b): teacher demos", REPO_ROOT / "docs" / "protocol_arith_b" / "results.json"),
    "othink": ("OThink-MR1 (vision)", REPO_ROOT / "docs" / "protocol_othink" / "othink.json"),
    "vlaa": ("VLAA-Thinking (vision)", REPO_ROOT / "docs" / "protocol_vlaa" / "vlaa.json"),
}
NOT_RUN = "not run"
# the methods each non-pair arithmetic row rests on (None: every method of the study)
NEEDS: dict[str, tuple[str, ...] | None] = {ROWS[4]: ("srft", "sft_then_grpo"), ROWS[5]: ("srft", "grpo"),
                                            ROWS[9]: None, ROWS[10]: None}


def pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def merge(parts: list[tuple[str, str, str]]) -> str:
    """One cell from (where, verdict, detail) parts: the shared verdict when all agree, else each
    part's; the details follow in parentheses."""
    if not parts:
        return "-"
    verdicts = {v for _, v, _ in parts}
    detail = "; ".join(f"{w} {d}".strip() for w, _, d in parts if d or w)
    if len(verdicts) == 1:
        return f"**{parts[0][1]}**" + (f" ({detail})" if detail else "")
    return "; ".join(f"{w}: **{v}**" + (f" {d}" if d else "") for w, v, d in parts)


def protocol_runs() -> tuple[list[str], list[int]]:
    """The arithmetic protocol's methods and seeds (configs/compare/protocol_arith.yaml)."""
    cfg = yaml.safe_load(PROTOCOL.read_text(encoding="utf-8"))
    return list(cfg["methods"]), list(cfg["seeds"])


def gate(rec: dict[str, Any], cells: dict[str, str], methods: list[str], seeds: list[int]) -> dict[str, str]:
    """Replace each cell whose runs are not all in the record's curves by "not decided: k of n runs"."""
    have = set(rec.get("curves", {}))
    needs = {**{label: pair for label, pair in PAIRS}, **NEEDS}
    out = dict(cells)
    for row, need in needs.items():
        runs = [f"{m}-s{k}" for m in (methods if need is None else need) for k in seeds]
        done = sum(r in have for r in runs)
        if done < len(runs):
            out[row] = f"not decided: {done} of {len(runs)} runs in"
    return out


def comparison_cells(rec: dict[str, Any]) -> dict[str, str]:
    """The arithmetic rows of one comparison's results.json (ungated: see `gate`)."""
    kind = {s["name"]: "ID" if s.get("distribution") == "in" else "OOD" for s in rec["config"]["eval_sets"]}
    cells: dict[str, str] = {}
    for label, (a, b) in PAIRS:
        parts = [(kind.get(p["eval_set"], p["eval_set"]), p["verdict"],
                  f"{pts(p['diff'])} [{pts(p['low'])}, {pts(p['high'])}]")
                 for p in rec.get("paired", []) if (p["a"], p["b"]) == (a, b)]
        cells[label] = merge(parts)
    ratios = [(f"t{round(100 * t['fraction'])}", t["ratio"]) for t in rec.get("seed_targets", [])]
    cells[ROWS[4]] = merge([(w, r["verdict"], f"{r['ratio']:.2f}x [{r['low']:.2f}, {r['high']:.2f}]")
                            for w, r in ratios if r.get("verdict")])
    ent = rec.get("dynamics", {}).get("entropy_test")
    cells[ROWS[5]] = merge([("", ent["verdict"], f"p = {ent['p']:.2f}")]) if ent and ent.get("verdict") else "-"
    tracking = rec.get("dynamics", {}).get("tracking", {})
    for row, key in ((ROWS[9], "completion/len_mean"), (ROWS[10], "reward/mean")):
        t = tracking.get(key)
        cells[row] = (merge([("", t["verdict"], f"rho {t['rho']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}], "
                                                f"{t['n']} checkpoints")]) if t and t.get("verdict") else "-")
    return cells


def vision_cells(rec: dict[str, Any]) -> dict[str, str]:
    """The rows of a vision study's record (othink.json or vlaa.json): its claim rows
    [claim, where, A - B, interval, verdict] and OThink's H5 per direction."""
    claims = rec.get("claims", {})
    cells: dict[str, str] = {}
    for label in (PAIRS[4][0], PAIRS[5][0]):
        parts = [(r[1], r[4], f"{r[2]} {r[3]}") for r in claims.get("rows", []) if r[0].startswith(label)]
        if parts:
            cells[label] = merge(parts)
    if claims.get("h5"):
        cells[ROWS[7]] = merge([(w, v, "") for w, v in claims["h5"]])
    return cells


def load(path: Path, kind: str) -> dict[str, Any] | None:
    """A study's record, or None when absent (or, for a vision study, not at the protocol scale)."""
    if not path.is_file():
        return None
    rec = json.loads(path.read_text(encoding="utf-8"))
    if kind in ("othink", "vlaa") and rec.get("scale", {}).get("name") != "protocol":
        return None
    return rec


def rel(path: Path) -> str:
    """A path as the repository names it when inside it (the committed table names no machine's paths)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def table(paths: dict[str, Path]) -> dict[str, Any]:
    """{"columns": [study titles], "rows": [[claim, cell per study]], "sources": {study: path or None}}."""
    cols, per_study, sources = [], [], {}
    for kind, (title, default) in STUDIES.items():
        path = paths.get(kind, default)
        rec = load(path, kind)
        sources[kind] = rel(path) if rec is not None else None
        cols.append(title)
        per_study.append(None if rec is None else
                         gate(rec, comparison_cells(rec), *protocol_runs()) if kind in ("a", "b")
                         else vision_cells(rec))
    rows = [[row] + [NOT_RUN if cells is None else cells.get(row, "-") for cells in per_study] for row in ROWS]
    return {"columns": cols, "rows": rows, "sources": sources}


def markdown(t: dict[str, Any]) -> str:
    head = ["claim"] + t["columns"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in t["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m duotune.studies.verdicts", description=__doc__.split("\n\n")[0])
    for kind, (title, default) in STUDIES.items():
        p.add_argument(f"--{kind}", type=Path, default=default, help=f"{title}: its record")
    p.add_argument("--out", type=Path, default=None, help="folder for verdicts.md and verdicts.json "
                   "(default: print the table only)")
    args = p.parse_args(argv)
    t = table({k: getattr(args, k) for k in STUDIES})
    md = markdown(t)
    print(md, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "verdicts.md").write_text("# docs/protocol.md's claims, per study\n\n" + md, encoding="utf-8")
        write_json(args.out / "verdicts.json", t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
