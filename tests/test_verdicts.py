"""duotune.studies.verdicts: the per-study verdict table reads each record's rows exactly, decides an
arithmetic claim only when all its runs are in, and ignores a vision record below the protocol scale."""

from __future__ import annotations

import json

from duotune.studies import verdicts as V

METHODS, SEEDS = ["base", "sft", "grpo", "grpo_d", "sft_then_grpo", "luffy", "srft"], [0, 1, 2]
SETS = [{"name": "arith_l1", "distribution": "in"}, {"name": "arith_word", "distribution": "out"}]


def comparison(methods=METHODS):
    def pair(a, b, s, diff, low, high, verdict):
        return {"a": a, "b": b, "eval_set": s, "diff": diff, "low": low, "high": high, "verdict": verdict}
    return {
        "config": {"eval_sets": SETS},
        "curves": {f"{m}-s{k}": {} for m in methods for k in SEEDS},
        "paired": [pair("srft", "sft", "arith_l1", 0.05, 0.01, 0.09, "held"),
                   pair("srft", "sft", "arith_word", 0.02, -0.01, 0.05, "inconclusive"),
                   pair("grpo", "sft_then_grpo", "arith_l1", -0.1, -0.185, -0.02, "did not hold"),
                   pair("grpo", "sft_then_grpo", "arith_word", -0.08, -0.157, -0.005, "did not hold")],
        "seed_targets": [{"fraction": 0.5, "ratio": {"ratio": 3.0, "low": 2.5, "high": 3.5, "verdict": "held"}},
                         {"fraction": 0.9, "ratio": {"ratio": 2.0, "low": 1.5, "high": 2.5,
                                                     "verdict": "inconclusive"}}],
        "dynamics": {"entropy_test": {"p": 0.05, "verdict": "held"},
                     "tracking": {"completion/len_mean": {"rho": -0.24, "low": -0.57, "high": 0.13, "n": 42,
                                                          "verdict": "held"}}},
    }


def cells(rec):
    return V.gate(rec, V.comparison_cells(rec), METHODS, SEEDS)


def test_comparison_cells_read_each_row():
    c = cells(comparison())
    assert c["H1 SRFT > SFT"] == "ID: **held** +5.0 [+1.0, +9.0]; OOD: **inconclusive** +2.0 [-1.0, +5.0]"
    assert c["H6 GRPO > SFT -> GRPO"] == "**did not hold** (ID -10.0 [-18.5, -2.0]; OOD -8.0 [-15.7, -0.5])"
    assert c[V.ROWS[4]] == "t50: **held** 3.00x [2.50, 3.50]; t90: **inconclusive** 2.00x [1.50, 2.50]"
    assert c[V.ROWS[5]] == "**held** (p = 0.05)"
    assert c[V.ROWS[9]] == "**held** (rho -0.24 [-0.57, +0.13], 42 checkpoints)"
    assert c[V.ROWS[10]] == "-"  # no reward correlation in the record
    assert c["H1 SRFT > GRPO"] == "-"  # all runs in, but the record has no such pair


def test_a_claim_waits_for_all_its_runs():
    rec = comparison()
    del rec["curves"]["srft-s2"]
    c = cells(rec)
    assert c["H1 SRFT > SFT"] == "not decided: 5 of 6 runs in"
    assert c[V.ROWS[4]] == "not decided: 5 of 6 runs in"
    assert c[V.ROWS[9]] == "not decided: 20 of 21 runs in"  # H7 rests on every run
    assert c["H6 GRPO > SFT -> GRPO"].startswith("**did not hold**")  # srft is not in this pair


def test_table_columns_and_vision_scale(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps(comparison()))
    row = ["H4 GRPO-D > GRPO", "counting", "+3.0", "[+1.0, +5.0]", "held"]
    othink = {"scale": {"name": "cpu"}, "claims": {"rows": [row], "h5": [["counting -> geometry", "held"]]}}
    (tmp_path / "o.json").write_text(json.dumps(othink))
    paths = {"a": a, "b": tmp_path / "absent.json", "othink": tmp_path / "o.json", "vlaa": tmp_path / "v.json"}
    t = V.table(paths)
    by = {r[0]: r[1:] for r in t["rows"]}
    assert [r[0] for r in t["rows"]] == V.ROWS
    assert by["H1 SRFT > SFT"][1:] == ["not run", "not run", "not run"]  # cpu-scale OThink is not the protocol
    othink["scale"]["name"] = "protocol"
    (tmp_path / "o.json").write_text(json.dumps(othink))
    by = {r[0]: r[1:] for r in V.table(paths)["rows"]}
    assert by["H4 GRPO-D > GRPO"][2] == "**held** (counting +3.0 [+1.0, +5.0])"
    assert by["H5 SFT does not transfer, GRPO-D does"][2] == "**held** (counting -> geometry)"
    assert by["H1 SRFT > SFT"][2] == "-"  # OThink does not test H1
    md = V.markdown(V.table(paths))
    assert md.splitlines()[0] == "| claim | " + " | ".join(t["columns"]) + " |"
    assert len(md.splitlines()) == 2 + len(V.ROWS)


def test_main_writes_files(tmp_path, capsys):
    a = tmp_path / "a.json"
    a.write_text(json.dumps(comparison()))
    assert V.main(["--a", str(a), "--b", str(tmp_path / "x"), "--othink", str(tmp_path / "x"),
                   "--vlaa", str(tmp_path / "x"), "--out", str(tmp_path / "out")]) == 0
    assert "| H1 SRFT > SFT | ID: **held**" in capsys.readouterr().out
    rec = json.loads((tmp_path / "out" / "verdicts.json").read_text())
    assert rec["sources"] == {"a": str(a), "b": None, "othink": None, "vlaa": None}
    assert (tmp_path / "out" / "verdicts.md").read_text().startswith("# docs/protocol.md's claims")
