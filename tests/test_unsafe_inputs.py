"""Hostile and mistaken inputs (issue 16 items 7-11): huge integers, unknown benchmarks, folders that
are not models, bad grading references, reward modules that run code on import, run names that climb
out of output_dir. Each gets one clear message (or a score), never a traceback or a side effect."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from duotune.cli import main
from duotune.config import load_config
from duotune.errors import ConfigError, DuotuneError
from duotune.models import load_model
from duotune.rewards import GradingPool, get_reward
from duotune.trainers import TrainConfig, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"
HUGE = "7" * 5000  # past Python's 4,300-digit int() limit


def _cfg(tmp_path, data_file, *extra):
    return load_config(TrainConfig, CONFIGS / "grpo.yaml", [
        f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        "reward.names=[toy_rewards:digit_share]", *extra])


def test_digit_and_mixed_rewards_score_integers_past_the_int_limit():
    digit = get_reward("digit")
    assert digit([f"<answer>{HUGE}</answer>", f"\\boxed{{{HUGE}}}", "<answer>7</answer>"],
                 answer=["7", HUGE, HUGE]) == [0.0, 1.0, 0.0]
    mixed = get_reward("mixed")
    assert mixed([f"<answer>{HUGE}</answer>"] * 2, answer=["7", HUGE], reward_type=["digit"] * 2) == [0.0, 1.0]


def test_eval_benchmark_is_validated_when_the_config_loads(tmp_path, data_file):
    with pytest.raises(ConfigError, match="eval.benchmark.*unknown benchmark 'gsm9k'.*gsm8k"):
        _cfg(tmp_path, data_file, "eval.benchmark=gsm9k", "eval.every=1")


def test_folders_that_are_not_models_get_one_clear_message(tmp_path):
    empty = tmp_path / "notamodel"
    empty.mkdir()
    (empty / "readme.txt").write_text("hi")
    with pytest.raises(DuotuneError, match=r"notamodel.*not a model folder.*config\.json"):
        load_model(str(empty))
    with pytest.raises(DuotuneError, match=r"/no/such/dir/model.*no such folder"):
        load_model("/no/such/dir/model")
    with pytest.raises(DuotuneError, match=r"\./missing-model.*no such folder"):
        load_model("./missing-model")


def test_a_checkpoint_folder_and_a_run_folder_load_as_models(tmp_path, data_file):
    res = train(_cfg(tmp_path, data_file, "run.name=r", "steps=1"))
    assert load_model(str(res.checkpoint)).model.config.model_type == "llama"
    assert load_model(str(res.run_dir)).model.config.model_type == "llama"  # its newest checkpoint


def test_eval_cli_on_a_folder_that_is_not_a_model_is_one_line(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert main(["eval", "--model", str(tmp_path / "x"), "--benchmark", "gsm8k", "--limit", "1",
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a model folder" in err


def test_grading_pool_reports_bad_references_and_unpicklable_values_as_errors():
    with GradingPool(1, timeout_s=1.0) as p:
        out = p.map("nosuchmod:fn", [(1,), (2,), (3,)])
        assert all(o.error and "nosuchmod" in o.error and not o.timed_out for o in out)
        out = p.map("threading:Lock", [(), ()])
        assert all(o.error and "picklable" in o.error and not o.timed_out for o in out)
        assert p.map("math:sqrt", [(4.0,)])[0].value == 2.0
        assert p.replacements == 0 and p.timeouts == 0


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A reward module whose import writes a marker file."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_reward.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "def score(completions, **_):\n    return [0.0] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("evil_reward", None)


def test_validating_a_config_never_imports_a_reward_module(tmp_path, data_file, evil_module):
    cfg = _cfg(tmp_path, data_file, "reward.names=[evil_reward:score]", "run.name=r", "steps=1")
    assert not evil_module.exists()
    with pytest.raises(ConfigError, match="rollout.group_sise"):
        _cfg(tmp_path, data_file, "reward.names=[evil_reward:score]", "rollout.group_sise=2")
    assert not evil_module.exists()
    train(cfg)  # training is where user code runs, by design
    assert evil_module.exists()


def test_a_reward_that_cannot_be_imported_fails_before_the_first_step(tmp_path, data_file):
    cfg = _cfg(tmp_path, data_file, "reward.names=[nosuch_reward_mod:score]", "run.name=r")
    with pytest.raises(ConfigError, match="nosuch_reward_mod:score.*could not be imported"):
        train(cfg)
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


@pytest.mark.parametrize("override", ["run.name=../../x", "run.name=a/b", "run.name=..",
                                      "run.output_dir=runs/../../x"])
def test_run_folders_cannot_escape_their_parent(tmp_path, data_file, override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        _cfg(tmp_path, data_file, override)
