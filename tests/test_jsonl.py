"""JSONL files that survive a torn tail (issue 16 item 1): eval samples and training metrics appended
after a kill mid-write stay one record per line, and a bad middle line names its file and row."""

from __future__ import annotations

import json

import pytest

from duotune.errors import DataError
from duotune.eval import evaluate
from duotune.rollout.sampler import Completion
from duotune.trainers.metrics import MetricsLogger, plot_curves, read_metrics


class _Sampler:
    def sample(self, examples, params):
        return [[Completion(f"\\boxed{{{ex.answer}}}", [1, 2], "stop") for _ in range(params.n)]
                for ex in examples]


def _records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def test_eval_reruns_after_a_torn_last_line_keep_every_line_whole(tmp_path):
    evaluate(_Sampler(), "gsm8k", limit=2, out_dir=tmp_path, progress=False, model_name="m")
    samples = tmp_path / "gsm8k" / "samples.jsonl"
    with samples.open("a") as f:
        f.write('{"item_id": "test:3", "sample')  # killed mid-write
    for limit in (3, 4, 5):  # each re-run appends; none may glue onto the torn line
        assert evaluate(_Sampler(), "gsm8k", limit=limit, out_dir=tmp_path, progress=False,
                        model_name="m")["gsm8k"]["items"] == limit
    assert sorted(r["item_id"] for r in _records(samples)) == sorted(
        {r["item_id"] for r in _records(samples)})  # whole, and no sample twice
    assert len(_records(samples)) == 5


def test_a_bad_middle_line_of_samples_names_file_and_row(tmp_path):
    evaluate(_Sampler(), "gsm8k", limit=3, out_dir=tmp_path, progress=False, model_name="m")
    samples = tmp_path / "gsm8k" / "samples.jsonl"
    lines = samples.read_text().split("\n")
    lines[1] = "{oops"
    samples.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"samples\.jsonl.*row 2"):
        evaluate(_Sampler(), "gsm8k", limit=3, out_dir=tmp_path, progress=False, model_name="m")


def _logger(run_dir, start):
    return MetricsLogger(run_dir, 5, start, progress=False, is_main=True)


def test_metrics_logger_repairs_a_torn_tail_before_appending(tmp_path):
    log = _logger(tmp_path, 0)
    log.log({"step": 1, "loss/total": 1.0})
    log.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "loss/to')
    log = _logger(tmp_path, 1)
    log.log({"step": 2, "loss/total": 2.0})
    log.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png").is_file()


def test_metrics_logger_drops_records_past_the_resumed_step(tmp_path):
    log = _logger(tmp_path, 0)
    for s in (1, 2, 3):
        log.log({"step": s, "loss/total": float(s)})
    log.log({"step": 3, "kind": "eval", "eval/x/accuracy": 0.5})
    log.close()
    log = _logger(tmp_path, 2)  # resumed from the step-2 checkpoint
    log.log({"step": 3, "loss/total": 30.0})
    log.close()
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["loss/total"]) for r in recs] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_read_metrics_names_file_and_row_of_a_bad_middle_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, oops\n{"step": 3}\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl.*row 2"):
        read_metrics(path)


def test_plots_of_a_resumed_run_never_double_back(tmp_path):
    from duotune.analysis.plots import read_metrics as run_metrics

    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss/total": float(s)}) + "\n" for s in (1, 2, 3, 2, 3, 4)) + '{"st')
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert [r["step"] for r in run_metrics(tmp_path)] == [1, 2, 3, 4]


def test_non_utf8_training_data_names_file_and_row(tmp_path):
    from duotune.data import load_examples

    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"prompt": "a", "answer": "1"}\n{"prompt": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"rows\.jsonl.*row 2.*UTF-8"):
        load_examples(str(path))


@pytest.mark.parametrize("write", ["write_rows", "write_json"])
def test_two_writers_of_one_file_never_take_each_others_temporary_file(tmp_path, monkeypatch, write):
    """`make demo`'s two workers generate the same data file at once. With one shared temporary name
    the second writer renamed the first one's file away (FileNotFoundError in the first's rename).
    Here a second write of the same path runs inside the first one's rename, as that race does."""
    import os

    from duotune import jsonl

    target = tmp_path / "data.jsonl"
    real_replace, nested = os.replace, []

    def racing_replace(src, dst):
        if not nested:
            nested.append(1)
            getattr(jsonl, write)(target, [{"by": "second"}] if write == "write_rows" else {"by": "second"})
        real_replace(src, dst)

    monkeypatch.setattr(jsonl.os, "replace", racing_replace)
    getattr(jsonl, write)(target, [{"by": "first"}] if write == "write_rows" else {"by": "first"})
    assert "first" in target.read_text() and [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]
