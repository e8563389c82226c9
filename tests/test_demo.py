"""`python -m duotune.demo` end to end on `tiny-llm` (the real demo swaps in SmolLM2): run folder
contents, the results JSON, and continuing a finished run folder without retraining."""

from __future__ import annotations

import json

from duotune.demo import main


def test_demo_writes_its_run_folder_and_continues_it_without_retraining(tmp_path, capsys):
    args = ["--steps", "1", "--eval-limit", "2", "--eval-tokens", "4", "--train-tokens", "8",
            "--output-dir", str(tmp_path), "model=tiny-llm", "run.progress=false"]
    assert main(args) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.name.startswith("demo-srft-")]
    for name in ("metrics.jsonl", "curves.png", "config.yaml", "checkpoint-000001/model",
                 "eval-before/gsm8k/samples.jsonl", "eval-after/gsm8k/samples.jsonl"):
        assert (run / name).exists(), name
    res = json.loads((run / "demo_results.json").read_text())
    assert res["steps"] == 1 and res["before"]["items"] == 2 and res["after"]["items"] == 2
    assert res["checkpoint"].endswith("checkpoint-000001")
    out = capsys.readouterr().out
    assert "GSM8K test[:2]" in out and f"run folder: {run}" in out
    metrics = (run / "metrics.jsonl").read_text()
    # Same folder again: training is already complete, so the checkpoint is evaluated, not retrained.
    assert main(args + ["--run-dir", str(run)]) == 0
    assert (run / "metrics.jsonl").read_text() == metrics
    again = json.loads((run / "demo_results.json").read_text())
    assert again["steps"] == 1 and again["after"]["accuracy"] == res["after"]["accuracy"]
