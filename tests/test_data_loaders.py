"""load_examples on the real shared files (GSM8K, LUFFY parquet, MATH-500, ...) and on malformed rows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from duotune.data import BOXED_SUFFIX, LUFFY_SYSTEM_PROMPT, Example, load_examples
from duotune.errors import ConfigError, DataError, UnknownNameError
from duotune.paths import data_dir

DATA = data_dir()
GSM8K_TRAIN = DATA / "gsm8k" / "train.jsonl"
LUFFY_EVAL = DATA / "luffy_math_eval" / "valid.all.parquet"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_gsm8k_first_row_exact():
    (ex,) = load_examples(GSM8K_TRAIN, limit=1)
    assert ex == Example(
        id="train:1",
        prompt=[{"role": "user", "content": "Natalia sold clips to 48 of her friends in April, and then "
                 "she sold half as many clips in May. How many clips did Natalia sell altogether in April "
                 "and May?"}],
        answer="72",
        demo="Natalia sold 48/2 = 24 clips in May.\n"
             "Natalia sold 48+24 = 72 clips altogether in April and May.\n"
             "The final answer is \\boxed{72}.",
    )


def test_gsm8k_all_rows_clean_and_comma_gold():
    examples = load_examples(GSM8K_TRAIN)
    assert len(examples) == 7473
    assert all("<<" not in e.demo and ">>" not in e.demo and "####" not in e.demo for e in examples)
    assert all(e.demo.endswith(f"\\boxed{{{e.answer}}}.") and "," not in e.answer for e in examples)
    adam = examples[345]  # raw solution ends "#### 1,080" with "$<<40/10=4>>4" notes
    assert adam.answer == "1080"
    assert adam.demo.startswith("The amount of money deducted from Adam's daily pay is $40 / 10 = $4.\n")
    assert adam.demo.endswith("he earns $36 * 30 = $1080.\nThe final answer is \\boxed{1080}.")


def test_verl_parquet_rows():
    examples = load_examples(LUFFY_EVAL)
    assert len(examples) == 6023
    first = examples[0]
    assert first.id == "valid.all:1"
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert [m["role"] for m in first.prompt] == ["system", "user"]
    assert first.prompt[0]["content"] == LUFFY_SYSTEM_PROMPT
    assert first.prompt[1]["content"].startswith("Convert the point $(0,3)$ in rectangular coordinates")
    assert first.meta == {"data_source": "math", "ability": "math",
                          "extra_info": {"index": 0, "split": "default"}}
    assert first.demo is None and "__index_level_0__" not in first.meta


def test_verl_prompt_styles():
    (boxed,) = load_examples(LUFFY_EVAL, limit=1, prompt_style="boxed")
    assert [m["role"] for m in boxed.prompt] == ["user"]
    assert boxed.prompt[0]["content"].endswith("2 \\pi.$\n" + BOXED_SUFFIX)
    (luffy,) = load_examples(LUFFY_EVAL, limit=1, prompt_style="luffy")
    (plain,) = load_examples(LUFFY_EVAL, limit=1)
    assert luffy.prompt == plain.prompt
    (own,) = load_examples(LUFFY_EVAL, limit=1, system_prompt="Be brief.")
    assert own.prompt[0] == {"role": "system", "content": "Be brief."} and len(own.prompt) == 2


def test_verl_target_demo_and_roles(tmp_path):
    prompt = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
              {"role": "assistant", "content": "leaked"}]
    table = pa.Table.from_pylist([
        {"prompt": prompt, "reward_model": {"ground_truth": "7", "style": "rule"},
         "target": [{"role": "assistant", "content": "<think>\nx\n</think>\n\\boxed{7}"}],
         "data_source": "d"},
        {"prompt": prompt, "reward_model": {"ground_truth": "8", "style": "rule"}, "target": [],
         "data_source": "d"},
    ])
    pq.write_table(table, tmp_path / "train.parquet")
    a, b = load_examples(tmp_path / "train.parquet")
    assert a.prompt == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}]
    assert (a.answer, a.demo, a.meta) == ("7", "<think>\nx\n</think>\n\\boxed{7}", {"data_source": "d"})
    assert (b.answer, b.demo, b.id) == ("8", None, "train:2")
    rows = [{"prompt": [{"role": "user", "content": "Q"}], "reward_model": {"ground_truth": "1"},
             "target": ["plain demo"]}]
    assert load_examples(rows)[0].demo == "plain demo"


def test_math_style_rows():
    (m,) = load_examples(DATA / "math500" / "test.jsonl", limit=1)
    assert m.id == "test/precalculus/807.json" and m.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert m.demo.endswith("the polar coordinates are $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$")
    assert m.meta == {"subject": "Precalculus", "level": 2}
    (minerva,) = load_examples(DATA / "minerva_math" / "test.jsonl", limit=1)
    assert (minerva.id, minerva.answer) == ("0", "1.6")  # from the solution's last \boxed{}
    (amc,) = load_examples(DATA / "amc23" / "test.jsonl", limit=1)
    assert amc.answer == "27"  # stored as the float 27.0
    nested = [{"problem": "P",
               "solution": "so $\\boxed{\\frac{1}{2}}$ and then \\boxed{\\dfrac{\\sqrt{3}}{2}}"}]
    assert load_examples(nested)[0].answer == "\\dfrac{\\sqrt{3}}{2}"


def test_shuffle_limit_and_split_folder():
    a = [e.id for e in load_examples("shared:gsm8k", split="test", limit=5, shuffle=True, seed=3)]
    b = [e.id for e in load_examples(DATA / "gsm8k", split="test", limit=5, shuffle=True, seed=3)]
    assert a == b and a != [f"test:{i}" for i in range(1, 6)] and len(set(a)) == 5
    assert len(load_examples("shared:gsm8k/test.jsonl", limit=0)) == 0


def test_datasets_objects_and_saved_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"question": ["1+1?", "2+2?"], "answer": ["2", "4"]}
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)})
    assert [e.answer for e in load_examples(dd)] == ["2", "4"]
    with pytest.raises(DataError, match="no split 'test'; available: train"):
        load_examples(dd, split="test")
    dd.save_to_disk(str(tmp_path / "saved"))
    (ex, _) = load_examples(tmp_path / "saved")
    assert (ex.id, ex.prompt[0]["content"], ex.answer) == ("saved:1", "1+1?", "2")


def test_generic_rows_images_and_options(tmp_path):
    Image.new("RGB", (4, 3), (255, 0, 0)).save(tmp_path / "red.png")
    buf = io.BytesIO()
    Image.new("L", (2, 2), 128).save(buf, format="PNG")
    path = write_jsonl(tmp_path / "vqa.jsonl", [
        {"id": "a", "question": "How many?", "answer": "3", "image": "red.png", "reward_type": "digit"},
        {"prompt": "Left <image> right <image>", "answer": "2", "images": ["red.png", "red.png"]},
        {"question": "Pick one", "options": ["x", "y"], "answer": "B"},
    ])
    a, b, c = load_examples(path)
    assert a.prompt == [{"role": "user",
                         "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    assert (a.id, a.reward_type) == ("a", "digit")
    assert (a.images[0].size, a.images[0].getpixel((0, 0))) == ((4, 3), (255, 0, 0))
    assert b.prompt[0]["content"] == [{"type": "text", "text": "Left "}, {"type": "image"},
                                      {"type": "text", "text": " right "}, {"type": "image"}]
    assert (c.prompt[0]["content"], c.reward_type) == ("Pick one\n\nA) x\nB) y", "mcq")
    lazy = load_examples(path, limit=1, decode_images=False)[0]
    assert lazy.images == [str(tmp_path / "red.png")]
    (d,) = load_examples([{"prompt": "q", "answer": "1", "image": buf.getvalue()}])
    assert (d.images[0].mode, d.images[0].getpixel((1, 1))) == ("RGB", (128, 128, 128))


@pytest.mark.parametrize("rows, row, field, message", [
    (['{"question": "q", "answer": "1 #### 1"}', "", '{"question": "q", '], 3, None, "invalid JSON"),
    (['{"question": "q", "answer": "1 #### 1"}', '{"question": "q", "answer": "no final"}'], 2, "answer",
     "must end with '#### <final answer>'"),
    (['{"question": "q", "answer": "#### 1"}', '{"question": 5, "answer": "#### 1"}'], 2, "question",
     "must be str, not int"),
    (['{"prompt": "q", "completion": 5}'], 1, "completion", "must be a string or a list of chat messages"),
    (['{"prompt": 3, "answer": "1"}'], 1, "prompt", "must be a string or a list of chat messages"),
    (['[1, 2]'], 1, None, "a row must be a JSON object"),
    (['{"text": "q"}'], 1, None, "cannot tell the row format"),
    (['{"prompt": [{"role": "user", "content": "q"}], "reward_model": {"style": "rule"}}'], 1,
     "reward_model.ground_truth", "missing reward_model.ground_truth"),
    (['{"question": "q", "answer": "1", "image": "nope.png"}'], 1, "image", "not found"),
    (['{"prompt": [{"role": "user", "content": [{"type": "image"}]}], "answer": "1"}'], 1, "images",
     "1 image parts but the row gives 0 images"),
])
def test_malformed_rows_name_file_row_field(tmp_path, rows, row, field, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=message) as info:
        load_examples(path)
    assert (info.value.file, info.value.row, info.value.field) == (str(path), row, field)
    assert str(info.value).startswith(f"file {path}, row {row}")


def test_source_and_option_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_examples(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_examples(tmp_path / "x.csv")
    with pytest.raises(UnknownNameError, match="unknown data_format 'gsm8'.*did you mean 'gsm8k'"):
        load_examples(GSM8K_TRAIN, format="gsm8")
    with pytest.raises(ConfigError, match="limit must be a non-negative integer"):
        load_examples(GSM8K_TRAIN, limit=-1)
    with pytest.raises(DataError, match=r"row 1, field 'demo'.*needs a final answer"):
        load_examples([{"prompt": "q", "demo": "no answer here"}], prompt_style="think_answer")
    forced = load_examples(GSM8K_TRAIN, format="generic", limit=1)[0]
    assert forced.answer.endswith("#### 72") and forced.demo is None
