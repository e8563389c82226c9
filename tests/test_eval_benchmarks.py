"""Every benchmark loader reads its shared file with the right count; MCQ shuffles keep the gold option;
bad names, a missing data folder and a corrupted file give clear errors. (GPQA content is never printed.)"""

from __future__ import annotations

import json

import pytest

from duotune.errors import DataError, DuotuneError, UnknownNameError
from duotune.eval.benchmarks import benchmarks, load_benchmark, resolve_benchmarks, suites

COUNTS = {"gsm8k": 1319, "math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "minerva": 272,
          "olympiadbench": 675, "arc_c": 1172, "gpqa_diamond": 198, "mmlu_pro": 12030}


class _Loaded(dict):
    """Each benchmark loaded once per module, on first use (so one bad file fails only its tests)."""

    def __missing__(self, name):
        self[name] = load_benchmark(name)
        return self[name]


@pytest.fixture(scope="module")
def loaded():
    return _Loaded()


def test_registry_and_suites():
    assert benchmarks.names() == sorted(COUNTS)
    assert suites.get("math_id") == ("aime24", "amc23", "math500", "minerva", "olympiadbench")
    assert suites.get("ood") == ("arc_c", "gpqa_diamond", "mmlu_pro")
    assert set(suites.get("all")) == set(COUNTS)
    names = ("aime24", "aime25", "amc23", "math500", "gsm8k")
    assert [benchmarks.get(b).n for b in names] == [32, 32, 32, 1, 1]
    assert {benchmarks.get(b).temperature for b in COUNTS} == {0.6}
    assert {benchmarks.get(b).top_p for b in COUNTS} == {1.0}
    # Reports read math answers leniently by default (each default shown by `duotune list benchmark`).
    assert {b: benchmarks.get(b).extraction for b in COUNTS} == {
        b: "letter" if b in suites.get("ood") else "lenient" for b in COUNTS}
    assert all(benchmarks.describe(b).endswith(f"[extraction: {benchmarks.get(b).extraction}]") for b in COUNTS)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_each_loader_reads_its_file_with_the_right_count(loaded, name):
    examples = loaded[name]
    assert len(examples) == COUNTS[name]
    assert len({ex.id for ex in examples}) == COUNTS[name]
    assert all(ex.answer for ex in examples)
    kind = benchmarks.get(name).kind
    assert {ex.reward_type for ex in examples} == {kind}
    assert all(ex.prompt[-1]["role"] == "user" for ex in examples)


def test_math_golds_and_prompts(loaded):
    assert loaded["gsm8k"][0].answer == "18"
    assert loaded["amc23"][0].answer == "27"  # the file stores 27.0
    assert loaded["minerva"][0].answer == "1.6"  # last \boxed{} of the solution
    assert loaded["aime24"][0].answer == "204"
    assert loaded["olympiadbench"][0].answer == "2"
    assert loaded["math500"][0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert loaded["math500"][0].meta["level"] == 2 and loaded["math500"][0].meta["subject"] == "Precalculus"
    aime25 = loaded["aime25"]
    assert len({ex.prompt[-1]["content"] for ex in aime25}) == 30  # the 32 repeats are gone
    assert aime25[0].id == "aime25-0" and aime25[0].answer == "70"
    for ex in (loaded["gsm8k"][0], aime25[0]):
        assert [m["role"] for m in ex.prompt] == ["user"]  # boxed style: no system prompt
        assert ex.prompt[0]["content"].endswith("put your final answer within \\boxed{}.")


@pytest.mark.parametrize("name,sizes", [("arc_c", {3, 4, 5}), ("gpqa_diamond", {4}),
                                        ("mmlu_pro", set(range(3, 11)))])
def test_mcq_gold_letter_follows_the_shuffle(loaded, name, sizes):
    # Failures report item ids only: GPQA rows must never reach a log (the authors' request).
    examples = loaded[name]
    assert {len(ex.meta["options"]) for ex in examples} == sizes
    bad = []
    for ex in examples:
        perm, opts = ex.meta["mcq_permutation"], ex.meta["options"]
        new_index = "ABCDEFGHIJ".index(ex.answer)
        ok = (sorted(perm) == list(range(len(opts))) and ex.meta["mcq_seed"] == 0
              and perm[new_index] == "ABCDEFGHIJ".index(ex.meta["original_answer"])
              and f"\n{ex.answer}) {opts[new_index]}\n" in ex.prompt[-1]["content"])
        if not ok:
            bad.append(ex.id)
    assert bad == []
    moved = sum(ex.answer != ex.meta["original_answer"] for ex in examples)
    assert moved > len(examples) // 2  # the shuffle really moves most golds


def test_arc_first_item_gold_option_text(loaded):
    ex = loaded["arc_c"][0]
    assert ex.meta["original_answer"] == "C"
    assert ex.meta["options"]["ABCDE".index(ex.answer)] == "Planetary days will become shorter."
    assert ex.meta["options"] == load_benchmark("arc_c", limit=1)[0].meta["options"]  # fixed seed
    assert ex.meta["options"] != load_benchmark("arc_c", limit=1, seed=1)[0].meta["options"]


def test_gpqa_instruction_is_replaced_by_the_shared_template(loaded):
    bad = [ex.id for ex in loaded["gpqa_diamond"]
           if "ANSWER: $LETTER" in ex.prompt[-1]["content"]
           or not ex.prompt[-1]["content"].endswith("within \\boxed{}.")]
    assert bad == []  # ids only, never the rows


def test_unknown_benchmark_lists_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        load_benchmark("gsm8")
    message = str(err.value)
    assert "unknown benchmark 'gsm8'" in message and "did you mean 'gsm8k'" in message
    assert all(name in message for name in COUNTS)
    with pytest.raises(UnknownNameError, match="valid: all, math_id, ood"):
        resolve_benchmarks(None, suite="mathid")
    assert resolve_benchmarks("gsm8k, aime24,gsm8k", suite="ood") == [
        "gsm8k", "aime24", "arc_c", "gpqa_diamond", "mmlu_pro"]


def test_missing_data_folder_names_the_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("DUOTUNE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DuotuneError, match=r"\$DUOTUNE_DATA"):
        load_benchmark("gsm8k")
    monkeypatch.setenv("DUOTUNE_DATA", str(tmp_path))  # folder exists, file does not
    with pytest.raises(DataError, match=r"gsm8k/test\.jsonl.*\$DUOTUNE_DATA"):
        load_benchmark("gsm8k")


def test_corrupted_file_names_file_and_row(tmp_path, monkeypatch):
    (tmp_path / "gsm8k").mkdir()
    good = json.dumps({"question": "1+1?", "answer": "one and one\n#### 2"})
    (tmp_path / "gsm8k" / "test.jsonl").write_text(good + "\n" + '{"question": "broken', encoding="utf-8")
    monkeypatch.setenv("DUOTUNE_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_benchmark("gsm8k")
    assert err.value.file.endswith("gsm8k/test.jsonl") and err.value.row == 2
    (tmp_path / "arc_challenge").mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [{"data_source": "arc_c", "prompt": [{"role": "user", "content": "Q?\n\nA) x\nB) y\n"}],
             "reward_model": {"ground_truth": g, "style": "rule"}} for g in ("A", "Z")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "arc_challenge" / "valid.arc_c.parquet")
    with pytest.raises(DataError) as err:
        load_benchmark("arc_c")
    assert err.value.file.endswith("valid.arc_c.parquet") and err.value.row == 2
    assert "gold answer 'Z'" in str(err.value)
