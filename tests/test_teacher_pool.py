"""`duotune data teacher` (docs/protocol.md, regime b): the first verified sample becomes the demo,
the program's solution is kept beside it, unsolved questions are dropped, and the summary counts exact
(a scripted sampler); a teacher that solves nothing and rows without a gold answer are clear errors;
the CLI runs end to end on tiny-llm."""

import json

import pytest

from duotune.cli import main
from duotune.data.teacher_pool import build_pool
from duotune.errors import ConfigError, DataError
from duotune.rollout import Completion, HFSampler
from duotune.tasks import write_task


@pytest.fixture
def rows(tmp_path):
    return write_task("arithmetic", n=3, seed=0, out_dir=tmp_path / "src", level=1)


def _script(monkeypatch, answers_per_row):
    """HFSampler.sample returns, per row, completions boxing the given numbers (None: no box)."""
    def sample(self, examples, params):
        assert params.n == 2 and params.temperature == 0.7 and params.max_new_tokens == 20
        calls.append((len(examples), params.seed))
        return [[Completion(text=f"so \\boxed{{{a}}}" if a is not None else "I give up", token_ids=[1] * (3 + j),
                            finish_reason="stop") for j, a in enumerate(answers)]
                for answers in answers_per_row]
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(HFSampler, "sample", sample)
    return calls


def test_first_verified_sample_is_the_demo_and_unsolved_rows_are_dropped(rows, tmp_path, monkeypatch):
    golds = [json.loads(x)["answer"] for x in rows.read_text().splitlines()]
    wrong = str(int(golds[1]) + 1)
    # row 0: second sample right; row 1: both wrong (dropped); row 2: both right (the first is kept)
    calls = _script(monkeypatch, [[None, golds[0]], [wrong, None], [golds[2], golds[2]]])
    s = build_pool("tiny-llm", rows, tmp_path / "pool", samples=2, temperature=0.7, max_new_tokens=20,
                   engine="hf", progress=False)
    assert calls == [(3, 0)] and s["engine"] == "teacher engine: hf (teacher.engine=hf)"
    assert s["identical_to_programmatic"] == 0.0  # "so \\boxed{..}" is never the program's solution
    kept = [json.loads(x) for x in (tmp_path / "pool" / "data.jsonl").read_text().splitlines()]
    src = [json.loads(x) for x in rows.read_text().splitlines()]
    assert [r["id"] for r in kept] == [src[0]["id"], src[2]["id"]]
    assert [r["demo"] for r in kept] == [f"so \\boxed{{{golds[0]}}}", f"so \\boxed{{{golds[2]}}}"]
    assert [r["programmatic_demo"] for r in kept] == [src[0]["demo"], src[2]["demo"]]
    assert all(r["demo_source"] == "teacher:tiny-llm" and r["answer"] == g for r, g in zip(kept, golds[::2]))
    assert s["sample_correct_rate"] == 3 / 6 and s["kept"] == 2 and s["kept_share"] == 2 / 3
    assert s["mean_demo_tokens_teacher"] == (4 + 3) / 2  # row 0 kept its second sample (4 ids), row 2 its first
    assert json.loads((tmp_path / "pool" / "teacher_pool.json").read_text()) == s


def test_a_teacher_that_solves_nothing_and_rows_without_answers_are_errors(rows, tmp_path, monkeypatch):
    _script(monkeypatch, [[None, None]] * 3)
    with pytest.raises(ConfigError, match="solved none of the 3 questions"):
        build_pool("tiny-llm", rows, tmp_path / "pool", samples=2, temperature=0.7, max_new_tokens=20,
                   engine="hf", progress=False)
    assert not (tmp_path / "pool").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "q1", "question": "1+1?", "answer": "2"}) + "\n"
                   + json.dumps({"id": "q2", "question": "2+2?", "answer": ""}) + "\n")
    with pytest.raises(DataError, match="row 2, field 'answer'"):
        build_pool("tiny-llm", bad, tmp_path / "pool", progress=False)
    with pytest.raises(ConfigError, match="teacher.engine must be auto, hf or vllm"):
        build_pool("tiny-llm", rows, tmp_path / "pool", engine="sglang", progress=False)


def test_questions_are_sampled_in_chunks_each_seeded_on_its_own(rows, tmp_path, monkeypatch):
    """The progress bar moves per chunk on either engine (vLLM's sampler has no per-batch hook), and
    chunk k is seeded seed + its first row, so two chunks never share a seed."""
    import duotune.data.teacher_pool as tp

    golds = [json.loads(x)["answer"] for x in rows.read_text().splitlines()]
    monkeypatch.setattr(tp, "CHUNK", 2)
    calls = _script(monkeypatch, [[g, g] for g in golds[:2]])  # each call answers its first rows

    def per_call(self, examples, params, inner=HFSampler.sample):
        return inner(self, examples, params)[:len(examples)]
    monkeypatch.setattr(HFSampler, "sample", per_call)
    s = build_pool("tiny-llm", rows, tmp_path / "pool", samples=2, temperature=0.7, max_new_tokens=20,
                   seed=5, engine="hf", progress=False)
    assert calls == [(2, 5), (1, 7)]
    assert s["kept"] == 2  # rows 0 and 1 of chunk 1 solved; row 2 (chunk 2) got row 0's wrong answer


def test_the_pool_counts_demos_identical_to_the_programs(rows, tmp_path, monkeypatch):
    src = [json.loads(x) for x in rows.read_text().splitlines()]

    def sample(self, examples, params):  # rows 0 and 1: the program's demo word for word; row 2: another
        return [[Completion(text=(r["demo"] + " ") if k < 2 else f"it is \\boxed{{{r['answer']}}}",
                            token_ids=[1], finish_reason="stop")] for k, r in enumerate(src)]
    monkeypatch.setattr(HFSampler, "sample", sample)
    s = build_pool("tiny-llm", rows, tmp_path / "pool", samples=1, engine="hf", progress=False)
    assert s["kept"] == 3 and s["identical_to_programmatic"] == 2 / 3


def test_cli_runs_on_tiny_llm(rows, tmp_path, capsys, monkeypatch):
    """tiny-llm (random weights) solves nothing: the command fails with the reason, naming the teacher;
    with a scripted sampler it writes the pool and prints its figures."""
    args = ["data", "teacher", "--model", "tiny-llm", "--data", str(rows), "--out", str(tmp_path / "p"),
            "--samples", "2", "--max-new-tokens", "4", "--engine", "hf", "--no-progress"]
    assert main(args) != 0
    assert "the teacher tiny-llm solved none of the 3 questions in 2 samples each" in capsys.readouterr().err
    golds = [json.loads(x)["answer"] for x in rows.read_text().splitlines()]
    _script(monkeypatch, [[g, None] for g in golds])
    assert main([*args[:-3], "--max-new-tokens", "20", "--temperature", "0.7", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "50.0 % of 3 x 2 samples correct; kept 3 of 3 questions (100.0 %), demos 3.0 tokens" in out
    assert len((tmp_path / "p" / "data.jsonl").read_text().splitlines()) == 3


def test_the_teacher_can_be_prompted_as_it_was_trained_and_its_demos_land_on_the_rows(rows, tmp_path,
                                                                                        monkeypatch):
    """Regime (b)'s teacher learnt the prose style from prose few-shot prompts: `prompts` (the same rows
    in its style) is what it sees, the demos go onto `data`'s rows, and the summary counts the demos that
    are the teacher's own training demos word for word."""
    from duotune.tasks import write_task

    prose = write_task("arithmetic", n=3, seed=0, out_dir=tmp_path / "prose", level=1, style="prose")
    src = [json.loads(x) for x in rows.read_text().splitlines()]
    said = [json.loads(x) for x in prose.read_text().splitlines()]
    seen = []

    def sample(self, examples, params):  # row 0: the prose demo word for word; rows 1, 2: other words
        seen.extend(examples)
        return [[Completion(text=r["demo"] if k == 0 else f"thus \\boxed{{{r['answer']}}}", token_ids=[1],
                            finish_reason="stop")] for k, r in enumerate(said)]
    monkeypatch.setattr(HFSampler, "sample", sample)
    s = build_pool("tiny-llm", rows, tmp_path / "pool", prompts=prose, samples=1, engine="hf", progress=False)
    assert [e.prompt[-1]["content"] for e in seen] == [r["question"] for r in src]
    assert [e.prompt[1]["content"] for e in seen] == [r["prompt"][1]["content"] for r in said]  # prose shots
    kept = [json.loads(x) for x in (tmp_path / "pool" / "data.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in kept] == [r["prompt"] for r in src]  # the rows keep their own prompts
    assert kept[0]["demo"] == said[0]["demo"] and kept[0]["programmatic_demo"] == src[0]["demo"]
    assert s["identical_to_programmatic"] == 0.0 and s["identical_to_teacher_data"] == 1 / 3
    assert s["prompts"] == str(prose)
    other = tmp_path / "other.jsonl"  # rows that are not the same questions, in order: refused by row
    other.write_text("\n".join(json.dumps({**r, "id": "x"} if k == 1 else r) for k, r in enumerate(said)) + "\n")
    with pytest.raises(DataError, match="row 2, field 'id'.*arithmetic-train-s0-00001"):
        build_pool("tiny-llm", rows, tmp_path / "pool2", prompts=other, samples=1, engine="hf", progress=False)
