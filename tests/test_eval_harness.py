"""The eval run with a fake sampler of known outputs: exact scores, pass@k/maj@k over samples, MCQ
grading after the shuffle, garbage scored 0, resume, length-sorted batches, eval slices, the matrix."""

from __future__ import annotations

import argparse
import json

import pytest

from duotune.errors import ConfigError
from duotune.eval import (
    add_eval_arguments,
    add_matrix_arguments,
    evaluate,
    evaluate_matrix,
    load_benchmark,
    run_eval_slice,
)
from duotune.rollout.sampler import Completion


class FakeSampler:
    """Answers `reply(example, sample_index)`; records (ids, params) of every generate call."""

    def __init__(self, reply):
        self.reply = reply
        self.calls = []

    def sample(self, examples, params):
        self.calls.append(([ex.id for ex in examples], params))
        out = []
        for ex in examples:
            texts = [self.reply(ex, j) for j in range(params.n)]
            out.append([Completion(t, list(range(len(t.split()))), "length" if t.endswith("...") else "stop")
                        for t in texts])
        return out

    @property
    def sequences(self):
        return sum(len(ids) * p.n for ids, p in self.calls)


GSM = load_benchmark("gsm8k", limit=6)


def _boxed(x):
    return f"Step by step. The answer is \\boxed{{{x}}}."


def test_fake_sampler_exact_scores_and_records():
    replies = {GSM[0].id: _boxed(18), GSM[1].id: _boxed(0), GSM[2].id: _boxed(GSM[2].answer), GSM[3].id: ""}
    sampler = FakeSampler(lambda ex, j: replies[ex.id])
    s = evaluate(sampler, "gsm8k", limit=4, progress=False)["gsm8k"]
    assert (s["items"], s["n"], s["accuracy"]) == (4, 1, 0.5)
    assert s["answered_fraction"] == 0.75 and s["truncated_fraction"] == 0.0
    assert s["mean_length"] == pytest.approx((7 + 7 + 7 + 0) / 4)  # words of the fake completions
    assert s["settings"]["temperature"] == 0.6 and s["settings"]["max_new_tokens"] == 8192


@pytest.mark.parametrize("name", ["gsm8k", "aime24", "aime25", "amc23"])
def test_every_numeric_gold_grades_itself_right_with_the_training_verifier(name):
    s = evaluate(FakeSampler(lambda ex, j: _boxed(ex.answer)), name, n=1, progress=False,
                 batch_size=256)[name]
    assert s["accuracy"] == 1.0 and s["ungradable_items"] == 0 and s["items"] == len(load_benchmark(name))


def test_pass_and_maj_over_samples():
    # Per item: wrong, right, wrong -> pass@1 1/3, pass@2 2/3, pass@3 1; votes: "-1" wins every k.
    sampler = FakeSampler(lambda ex, j: _boxed(ex.answer if j == 1 else -1))
    s = evaluate(sampler, ["gsm8k"], limit=2, n=3, progress=False)["gsm8k"]
    assert s["accuracy"] == pytest.approx(1 / 3) and s["avg@3"] == pytest.approx(1 / 3)
    assert s["pass@k"] == pytest.approx({"1": 1 / 3, "2": 2 / 3, "3": 1.0})
    assert s["maj@k"] == {"1": 0.0, "2": 0.0, "3": 0.0}
    assert all(p.n == 3 for _, p in sampler.calls)


@pytest.mark.parametrize("text", ["", "   ", "!!!@#$", "\\boxed{", "\\boxed{}", "<answer></answer>",
                                  "\\frac{" * 50, "\x00\ufffd" * 100, "The answer is..."])
def test_empty_or_garbage_output_scores_zero(text):
    s = evaluate(FakeSampler(lambda ex, j: text), "gsm8k", limit=2, progress=False)["gsm8k"]
    assert s["accuracy"] == 0.0 and s["pass@k"] == {"1": 0.0} and s["maj@k"] == {"1": 0.0}


def test_mcq_grading_follows_the_shuffle():
    examples = load_benchmark("arc_c", limit=30)
    kept = sum(ex.answer == ex.meta["original_answer"] for ex in examples)
    right = evaluate(FakeSampler(lambda ex, j: _boxed(ex.answer)), "arc_c", limit=30, progress=False)
    stale = evaluate(FakeSampler(lambda ex, j: _boxed(ex.meta["original_answer"])), "arc_c", limit=30,
                     progress=False)
    assert right["arc_c"]["accuracy"] == 1.0
    assert stale["arc_c"]["accuracy"] == pytest.approx(kept / 30) and kept < 30


def test_resume_skips_finished_samples(tmp_path):
    make = lambda: FakeSampler(lambda ex, j: _boxed(ex.answer if j == 0 else 1))  # noqa: E731
    first = make()
    s1 = evaluate(first, "gsm8k", limit=3, n=2, out_dir=tmp_path, progress=False, model_name="m")["gsm8k"]
    assert first.sequences == 6
    again = make()
    s2 = evaluate(again, "gsm8k", limit=3, n=2, out_dir=tmp_path, progress=False, model_name="m")["gsm8k"]
    assert again.sequences == 0 and s2 == s1
    more = make()
    evaluate(more, "gsm8k", limit=5, n=3, out_dir=tmp_path, progress=False, model_name="m")
    assert more.sequences == 2 * 3 + 3 * 1  # two new items x 3, three old items x their 3rd sample
    lines = (tmp_path / "gsm8k" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 15
    rec = json.loads(lines[0])
    assert set(rec) >= {"item_id", "sample_index", "prompt_hash", "completion", "extracted", "score",
                        "length", "truncated"}
    summary = json.loads((tmp_path / "summary.json").read_text())["gsm8k"]
    # The fake's j counts within one call, so each old item's 3rd sample (asked alone) is right:
    # old items 2/3 right, new items 1/3.
    assert summary["items"] == 5 and summary["accuracy"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 3) / 5)
    # A finished run named by a model string never loads that model.
    done = evaluate("m", "gsm8k", limit=5, n=3, out_dir=tmp_path, progress=False)["gsm8k"]
    assert done == summary


def test_resume_tolerates_a_cut_last_line_and_refuses_other_settings(tmp_path):
    evaluate(FakeSampler(lambda ex, j: _boxed(ex.answer)), "gsm8k", limit=2, out_dir=tmp_path,
             progress=False, model_name="m")
    with (tmp_path / "gsm8k" / "samples.jsonl").open("a") as f:
        f.write('{"item_id": "test:3", "sample')
    redo = FakeSampler(lambda ex, j: _boxed(ex.answer))
    assert evaluate(redo, "gsm8k", limit=3, out_dir=tmp_path, progress=False,
                    model_name="m")["gsm8k"]["accuracy"] == 1.0
    assert redo.sequences == 1
    with pytest.raises(ConfigError, match=r"temperature: 0\.6 -> 0\.0.*another --out"):
        evaluate(redo, "gsm8k", limit=2, temperature=0.0, out_dir=tmp_path, progress=False, model_name="m")


def test_batches_are_sorted_by_prompt_length_and_sized():
    sampler = FakeSampler(lambda ex, j: "")
    evaluate(sampler, "gsm8k", limit=6, batch_size=2, progress=False)
    assert [len(ids) for ids, _ in sampler.calls] == [2, 2, 2]
    order = [i for ids, _ in sampler.calls for i in ids]
    length = {ex.id: len(ex.prompt[-1]["content"]) for ex in GSM}
    assert [length[i] for i in order] == sorted(length.values())


def test_run_eval_slice_returns_flat_accuracy():
    sampler = FakeSampler(lambda ex, j: _boxed(ex.answer) if ex.id == GSM[0].id else "no idea")
    out = run_eval_slice(sampler, "gsm8k", limit=4, max_new_tokens=64, batch_size=4, seed=3)
    assert out == {"accuracy": 0.25, "mean_length": pytest.approx((7 + 3 * 2) / 4),
                   "truncated_fraction": 0.0, "answered_fraction": 0.25, "extraction_rate": 0.25,
                   "items": 4.0}
    params = sampler.calls[0][1]
    assert (params.temperature, params.max_new_tokens, params.n) == (0.0, 64, 1)


def _stated(ex, j):
    """Item 0 boxes its answer, item 1 states it in prose, item 2 in inline maths, item 3 not at all."""
    return {0: _boxed(ex.answer), 1: f"So she makes {ex.answer} dollars.",
            2: f"The final answer is ${ex.answer}$.", 3: "I am not sure."}[GSM.index(ex) % 4]


@pytest.mark.parametrize("mode, accuracy, rate", [("lenient", 0.75, 0.75), ("strict", 0.25, 0.25)])
def test_extraction_mode_sets_score_and_extraction_rate(mode, accuracy, rate):
    s = evaluate(FakeSampler(_stated), "gsm8k", limit=4, progress=False, extraction=mode)["gsm8k"]
    assert (s["accuracy"], s["extraction_rate"], s["extraction"]) == (accuracy, rate, mode)
    assert s["settings"]["extraction"] == mode


def test_math_benchmarks_default_to_lenient_and_mcq_reads_letters():
    assert evaluate(FakeSampler(_stated), "gsm8k", limit=4, progress=False)["gsm8k"]["extraction"] == "lenient"
    arc = evaluate(FakeSampler(lambda ex, j: _boxed(ex.answer)), "arc_c", limit=2, progress=False,
                   extraction="strict")["arc_c"]
    assert (arc["extraction"], arc["accuracy"]) == ("letter", 1.0)
    with pytest.raises(ConfigError, match="extraction mode 'exact'"):
        evaluate(FakeSampler(_stated), "gsm8k", limit=1, progress=False, extraction="exact")


def test_resume_with_another_extraction_regrades_without_sampling(tmp_path):
    kwargs = dict(limit=4, out_dir=tmp_path, progress=False, model_name="m")
    strict = evaluate(FakeSampler(_stated), "gsm8k", extraction="strict", **kwargs)["gsm8k"]
    again = FakeSampler(_stated)
    lenient = evaluate(again, "gsm8k", **kwargs)["gsm8k"]
    assert (strict["accuracy"], lenient["accuracy"], again.sequences) == (0.25, 0.75, 0)
    samples = tmp_path / "gsm8k" / "samples.jsonl"
    assert len(samples.read_text().splitlines()) == 8        # four samples, each regraded once
    assert evaluate(FakeSampler(_stated), "gsm8k", **kwargs)["gsm8k"] == lenient
    assert len(samples.read_text().splitlines()) == 8        # same mode: nothing regraded


def test_matrix_rows_models_columns_benchmarks(tmp_path):
    good = FakeSampler(lambda ex, j: _boxed(ex.answer))
    bad = FakeSampler(lambda ex, j: _boxed("nope"))
    matrix = evaluate_matrix([good, bad], "gsm8k,aime24", labels=["good", "bad"], out_dir=tmp_path,
                             limit=2, n=1, progress=False)
    assert matrix == {"models": ["good", "bad"], "benchmarks": ["gsm8k", "aime24"],
                      "accuracy": {"good": {"gsm8k": 1.0, "aime24": 1.0},
                                   "bad": {"gsm8k": 0.0, "aime24": 0.0}}}
    assert (tmp_path / "matrix.md").read_text() == (
        "| model | gsm8k | aime24 | mean |\n|---|---:|---:|---:|\n"
        "| good | 100.0 | 100.0 | 100.0 |\n| bad | 0.0 | 0.0 | 0.0 |\n")
    assert json.loads((tmp_path / "matrix.json").read_text()) == matrix
    assert (tmp_path / "good" / "gsm8k" / "samples.jsonl").is_file()
    with pytest.raises(ConfigError, match="unique"):
        evaluate_matrix([good, bad], "gsm8k", labels=["x", "x"], out_dir=tmp_path)


@pytest.mark.parametrize("add,model_flag", [(add_eval_arguments, "--model"),
                                            (add_matrix_arguments, "--models")])
def test_every_cli_flag_has_help(add, model_flag):
    parser = argparse.ArgumentParser()
    add(parser)
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert {"--benchmarks", "--suite", "--limit", "--n", "--max-new-tokens", "--batch-size",
            "--temperature", "--out", "--seed"} <= {o for a in flags for o in a.option_strings}
    assert all(a.help for a in flags)
    args = parser.parse_args([model_flag, "m", "--suite", "ood", "--limit", "5", "--n", "4"])
    assert (args.suite, args.limit, args.n, args.batch_size) == ("ood", 5, 4, 8)
    assert not hasattr(args, "temperature")  # not given: the benchmark's default applies
    assert not hasattr(args, "extraction")
    assert parser.parse_args([model_flag, "m", "--extraction", "strict"]).extraction == "strict"
    with pytest.raises(SystemExit):
        parser.parse_args([model_flag, "m", "--limit", "0"])
