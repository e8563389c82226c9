"""Watching a run (issue 18): rollouts files, accelerate's trackers, library bars that follow
`run.progress`, and the disk a finished run keeps (optimizer state dropped unless asked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker, register_tracker_class

from duotune.config import load_config
from duotune.errors import DuotuneError
from duotune.registry import Registry
from duotune.trainers import TrainConfig, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def _has_digit(completions, **_):
    return [float(any(ch.isdigit() for ch in c)) for c in completions]


def _length(completions, **_):
    return [float(len(c)) for c in completions]


class MemoryTracker(GeneralTracker):
    """An accelerate tracker that keeps what it is given (registered by name, like a built-in one)."""

    name = "duotune_test_memory"
    requires_logging_directory = False
    runs: list[MemoryTracker] = []

    def __init__(self, run_name: str, **kwargs):
        super().__init__()
        self.run_name, self.kwargs, self.config, self.logged, self.finished = run_name, kwargs, None, [], False
        MemoryTracker.runs.append(self)

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True


@pytest.fixture(scope="module", autouse=True)
def rewards_and_tracker():
    reg = Registry.all()["reward"]
    reg.register("test_has_digit", _has_digit)
    reg.register("test_length", _length)
    register_tracker_class(MemoryTracker)
    yield
    reg.unregister("test_has_digit")
    reg.unregister("test_length")
    LOGGER_TYPE_TO_CLASS.pop(MemoryTracker.name, None)


def _cfg(tmp_path, data_file, method, *extra):
    return load_config(TrainConfig, CONFIGS / f"{method}.yaml", [
        f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        "reward.names=[test_has_digit,test_length]", "reward.weights=[1.0,0.5]", *extra])


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_luffy_rollouts_file_holds_every_row_with_its_rewards_advantage_and_demo_flag(tmp_path, data_file):
    res = train(_cfg(tmp_path, data_file, "luffy", "steps=2", "prompts_per_step=2", "rollout.group_size=4",
                     "algo.advantage=grpo"))
    for step in (1, 2):
        rows = _lines(res.run_dir / "rollouts" / f"step-{step:06d}.jsonl")
        assert len(rows) == 2 * 4 and sum(r["is_demo"] for r in rows) == 2  # one demo per group
        for r in rows:
            want = r["rewards"]["test_has_digit"] + 0.5 * r["rewards"]["test_length"]
            assert r["reward"] == pytest.approx(want)
            assert r["rewards"]["test_length"] == len(r["completion"])
            assert r["prompt"][-1]["role"] == "user" and r["answer"] is not None
        for g in {r["group"] for r in rows}:  # GRPO advantages are centred in each group
            assert sum(r["advantage"] for r in rows if r["group"] == g) == pytest.approx(0.0, abs=1e-5)
        demos = [r for r in rows if r["is_demo"]]
        assert all(r["completion"].startswith(r["answer"]) for r in demos)  # toy demos: "iii i"


def test_rollouts_every_n_steps_and_sft_rows_are_the_demos(tmp_path, data_file):
    res = train(_cfg(tmp_path, data_file, "sft", "steps=4", "prompts_per_step=2", "run.rollouts_every=2"))
    assert sorted(p.name for p in (res.run_dir / "rollouts").iterdir()) == ["step-000002.jsonl",
                                                                            "step-000004.jsonl"]
    rows = _lines(res.run_dir / "rollouts" / "step-000002.jsonl")
    assert len(rows) == 2 and all(r["is_demo"] and r["rewards"] == {} and r["advantage"] == 0.0 for r in rows)
    off = train(_cfg(tmp_path, data_file, "sft", "steps=1", "run.name=no_rollouts", "run.rollouts_every=0"))
    assert not (off.run_dir / "rollouts").exists()


def test_metrics_go_to_accelerate_trackers_named_in_log_with(tmp_path, data_file):
    MemoryTracker.runs.clear()
    res = train(_cfg(tmp_path, data_file, "grpo", "steps=2", f"run.log_with=[{MemoryTracker.name}]",
                     "run.project=watch", "optim.lr=1e-3"))
    (tracker,) = MemoryTracker.runs
    assert tracker.run_name == "watch" and tracker.finished
    assert tracker.config["optim.lr"] == 1e-3 and tracker.config["method"] == "grpo"
    records = _lines(res.run_dir / "metrics.jsonl")
    assert [step for step, _ in tracker.logged] == [1, 2]
    for (_, values), rec in zip(tracker.logged, records):
        numeric = {k: v for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert values == numeric and "reward/mean" in values and "method" not in values


def test_library_bars_follow_run_progress(tmp_path, data_file, capfd):
    train(_cfg(tmp_path, data_file, "sft", "steps=1", "run.name=quiet"))
    quiet = capfd.readouterr().err
    assert "Writing model shards" not in quiet and "train quiet" not in quiet
    train(_cfg(tmp_path, data_file, "sft", "steps=1", "run.name=loud", "run.progress=true"))
    loud = capfd.readouterr().err
    assert "Writing model shards" in loud and "train loud" in loud  # the bar names the run


def test_finished_run_drops_optimizer_state_unless_asked_and_prints_its_size(tmp_path, data_file, capsys):
    over = ["steps=2", "algo.kl.beta=0.1", "run.resume=auto"]  # KL on: the stage start is saved too
    res = train(_cfg(tmp_path, data_file, "grpo", "run.name=lean", *over))
    assert (res.run_dir / "checkpoint-000002" / "model").is_dir()
    assert not list(res.run_dir.glob("checkpoint-*/trainer_state.*")) and not list(res.run_dir.glob("stage-*"))
    out = capsys.readouterr().out
    assert f"run folder {res.run_dir}: " in out and out.rstrip().endswith(("kB", "MB"))
    kept = train(_cfg(tmp_path, data_file, "grpo", "run.name=kept", "run.keep_optimizer_state=true", *over))
    assert (kept.checkpoint / "trainer_state.json").is_file() and (kept.run_dir / "stage-0-init").is_dir()
    # Re-running the finished (pruned) run trains nothing; asking it for more steps says why it cannot.
    metrics = (res.run_dir / "metrics.jsonl").read_text()
    again = train(_cfg(tmp_path, data_file, "grpo", "run.name=lean", *over))
    assert again.global_step == 2 and (res.run_dir / "metrics.jsonl").read_text() == metrics
    with pytest.raises(DuotuneError, match="training state was deleted when its run finished at step 2.*asks for 3.*keep_optimizer_state"):
        train(_cfg(tmp_path, data_file, "grpo", "run.name=lean", *over, "steps=3"))


def test_an_unfinished_run_keeps_what_its_resume_needs(tmp_path, data_file):
    res = train(_cfg(tmp_path, data_file, "grpo", "steps=3", "run.stop_after=1", "algo.kl.beta=0.1"))
    assert (res.checkpoint / "trainer_state.json").is_file() and (res.run_dir / "stage-0-init").is_dir()
