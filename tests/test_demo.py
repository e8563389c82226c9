"""`python -m duotune.demo` end to end on `tiny-llm` (the real demo runs SmolLM2 on
configs/compare/demo.yaml): two worker processes share one comparison, the table with Wilson
intervals, demo_results.json and the report; a second call with --run-dir trains nothing.
The GSM8K option (`--gsm8k`) keeps its run folder and continues it without retraining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from duotune.analysis.intervals import wilson_interval
from duotune.demo import _status, claim, demo_config, main, queue_order

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", str(ROOT / "configs" / "compare" / "tiny.yaml"), f"recipes={ROOT / 'configs' / 'tiny'}"]


def test_workers_take_base_first_then_the_dearest_and_never_the_same_method(tmp_path):
    assert queue_order(["sft", "srft", "base", "grpo"]) == ["base", "grpo", "srft", "sft"]
    assert queue_order(["distill", "sft", "base", "dapo"]) == ["base", "dapo", "sft", "distill"]
    assert claim(tmp_path, "grpo", 0) and not claim(tmp_path, "grpo", 1) and claim(tmp_path, "sft", 1)
    assert (tmp_path / "claims" / "grpo").read_text() == "0"


def test_the_status_line_shows_every_seed(tmp_path):
    """With seeds [0, 1] the line showed seed 0 only: a worker on seed 1 read as done (or idle)."""
    import argparse

    root = tmp_path / "cmp"
    args = argparse.Namespace(config=TINY[1], overrides=[TINY[2], "seeds=[0,1]", "methods=[base,grpo,sft]"],
                              engine=None)
    cfg = demo_config(args, root)
    main_set = cfg.main_set()
    (root / "results").mkdir(parents=True)
    for name, acc in (("base-s0", 0.36), ("base-s1", 0.36), ("grpo-s0", 0.58)):
        (root / "results" / f"{name}.json").write_text(json.dumps(
            {"status": "done", "curve": [{"evals": {main_set: {"accuracy": acc}}}]}))
    (root / "runs" / "grpo-s1").mkdir(parents=True)
    (root / "runs" / "grpo-s1" / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/mean": 0.25}) + "\n")
    assert _status(root, cfg) == (f"base 36%, 36% | grpo 58%, step 1/{cfg.budget.steps} reward 0.25 | sft -, -")
    one = cfg.model_copy(update={"seeds": [0]})
    assert _status(root, one) == "base 36% | grpo 58% | sft -"


def test_the_status_line_reads_past_a_line_the_trainer_is_still_writing(tmp_path):
    """The parent polls metrics.jsonl while a worker appends to it: a half-written last line raised
    JSONDecodeError and ended the demo's status loop (and with it the parent)."""
    import argparse

    root = tmp_path / "cmp"
    args = argparse.Namespace(config=TINY[1], overrides=[TINY[2], "seeds=[0]", "methods=[grpo]"], engine=None)
    cfg = demo_config(args, root)
    (root / "runs" / "grpo-s0").mkdir(parents=True)
    (root / "runs" / "grpo-s0" / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "reward/mean": 0.25}) + "\n" + '{"step": 2, "rew')
    assert _status(root, cfg) == f"grpo step 1/{cfg.budget.steps} reward 0.25"


def test_demo_splits_the_comparison_over_workers_and_prints_where_it_landed(tmp_path, capsys):
    assert main([*TINY, "--jobs", "2", "--output-dir", str(tmp_path)]) == 0
    (root,) = [p for p in tmp_path.iterdir() if p.name.startswith("demo-")]
    for name in ("report.html", "report.md", "results.json", "logs/worker-0.log", "logs/worker-1.log",
                 "runs/srft-s0/rollouts/step-000002.jsonl", "runs/grpo-s0/checkpoint-000002/model"):
        assert (root / name).exists(), name
    res = json.loads((root / "demo_results.json").read_text())
    taken = [w["methods"] for w in res["workers"]]
    assert sorted(m for ms in taken for m in ms) == ["base", "grpo", "sft", "srft"]  # each exactly once
    assert all(w["returncode"] == 0 and w["cpu_s"] > 0 for w in res["workers"])
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"base", "sft", "grpo", "srft"} and rows["srft"]["items"] == 8
    lo, hi = wilson_interval(rows["sft"]["accuracy"], 8, percent=True)
    assert rows["sft"]["ci95"] == pytest.approx([lo, hi])
    out = capsys.readouterr().out
    assert f"| sft | {100 * rows['sft']['accuracy']:.1f} [{lo:.1f}, {hi:.1f}] |" in out
    assert f"where it landed ({root}" in out and "report.html" in out and "CPU time per worker" in out
    results = {p.name: p.read_text() for p in (root / "results").iterdir()}
    # The same folder again: every method is done, nothing is trained or evaluated again.
    assert main([*TINY, "--jobs", "1", "--run-dir", str(root)]) == 0
    assert {p.name: p.read_text() for p in (root / "results").iterdir()} == results


def test_gsm8k_demo_writes_its_run_folder_and_continues_it_without_retraining(tmp_path, capsys):
    args = ["--gsm8k", "--steps", "1", "--eval-limit", "2", "--eval-tokens", "4", "--train-tokens", "8",
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


def test_demo_runs_on_hf_by_default_and_engine_flag_overrides(tmp_path):
    """configs/compare/demo.yaml pins transformers generate (measured faster at the demo's size);
    `--engine` replaces it for every method, workers included."""
    from duotune.analysis.compare_config import CompareConfig
    from duotune.config import load_config
    from duotune.demo import _parser, demo_config

    assert load_config(CompareConfig, ROOT / "configs" / "compare" / "demo.yaml", []).common["rollout.engine"] == "hf"
    args = _parser().parse_args(["--engine", "auto"])
    assert demo_config(args, tmp_path / "d").common["rollout.engine"] == "auto"
    assert demo_config(_parser().parse_args([]), tmp_path / "d").common["rollout.engine"] == "hf"
