"""`duotune eval` / `duotune matrix` end to end: a tiny random model through the real sampler and verifier
writes the run folder; bad names fail with one line before any model loads."""

from __future__ import annotations

import json

from duotune.cli import main


def test_eval_command_with_a_tiny_model_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["eval", "--model", "tiny-llm", "--benchmarks", "gsm8k,arc_c", "--limit", "2",
            "--max-new-tokens", "4", "--temperature", "0", "--batch-size", "2", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["benchmark", "items", "n", "acc", "%", "pass@n", "%",
                                             "maj@n", "%", "extracted", "%", "extraction", "mean", "len",
                                             "trunc", "%"]
    assert [line.split()[7] for line in table.splitlines()[2:4]] == ["lenient", "letter"]  # gsm8k, arc_c
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"gsm8k", "arc_c"}
    for name in ("gsm8k", "arc_c"):
        s = summary[name]
        assert (s["items"], s["n"], s["settings"]["max_new_tokens"]) == (2, 1, 4)
        assert 1 <= s["mean_length"] <= 4
        records = [json.loads(line) for line in (out / name / "samples.jsonl").read_text().splitlines()]
        assert sorted(r["item_id"] for r in records) == sorted({r["item_id"] for r in records})
        assert all(r["length"] <= 4 and r["truncated"] == (r["length"] == 4) for r in records)
    # Same command again: everything is resumed, nothing is generated, the summary is unchanged.
    assert main(argv) == 0
    assert json.loads((out / "summary.json").read_text()) == summary


def test_unknown_benchmark_fails_with_the_valid_names(tmp_path, capsys):
    code = main(["eval", "--model", "no-such-model", "--benchmarks", "gsm8", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown benchmark 'gsm8'" in err and "did you mean 'gsm8k'" in err and "mmlu_pro" in err
    assert not any(tmp_path.iterdir())  # failed before writing anything


def test_matrix_command_prints_the_markdown_table(tmp_path, capsys):
    out = tmp_path / "m"
    code = main(["matrix", "--models", "tiny-llm", "--labels", "tiny", "--benchmarks", "aime24",
                 "--limit", "1", "--n", "1", "--max-new-tokens", "2", "--temperature", "0",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| model | aime24 | mean |\n|---|---:|---:|\n| tiny | ")
    assert json.loads((out / "matrix.json").read_text())["models"] == ["tiny"]
    assert (out / "tiny" / "aime24" / "samples.jsonl").is_file()
