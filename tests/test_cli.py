"""The `duotune` CLI: help lists every config field, list shows registries, errors are one line."""

import json
from pathlib import Path

import pytest

from duotune.cli import main

TINY_SFT = str(Path(__file__).resolve().parents[1] / "configs" / "tiny" / "sft.yaml")


def test_train_help_lists_every_field_with_description(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    from duotune.config import describe_fields
    from duotune.trainers import TrainConfig
    for key, _, desc in describe_fields(TrainConfig):
        assert key in out, key
        assert desc, f"{key} has no description"


def test_list_shows_registries(capsys):
    assert main(["list", "method"]) == 0
    out = capsys.readouterr().out.split()
    assert {"sft", "grpo", "grpo_d", "luffy", "srft", "rl_sft_loss"} <= set(out)


def test_unknown_name_is_one_line_exit_2(capsys, tmp_path):
    assert main(["list", "rewardz"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "did you mean 'reward'" in err


def test_bad_override_names_key(capsys):
    assert main(["train", TINY_SFT, "optim.lrr=1"]) == 2
    assert "unknown key 'optim.lrr'" in capsys.readouterr().err


def test_data_make_params_after_flags(tmp_path, capsys):
    out = tmp_path / "arith"
    assert main(["data", "make", "arithmetic", "--n", "3", "--out", str(out), "level=2"]) == 0
    rows = [json.loads(x) for x in (out / "data.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["level"] == 2 for r in rows)
