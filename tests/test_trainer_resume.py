"""Resume and run folders (issue 16): corrupt or odd checkpoints fall back to the newest that verifies,
training state holds no pickle (a crafted one never runs), resume=PATH into a new folder, a run folder
is bound to its config, resume=never starts clean, metrics are cut back to the resumed step."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from duotune.config import load_config
from duotune.errors import ConfigError, DuotuneError
from duotune.trainers import TrainConfig, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def _cfg(tmp_path, data_file, *extra, method="grpo"):
    return load_config(TrainConfig, CONFIGS / f"{method}.yaml", [
        f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        "reward.names=[toy_rewards:digit_share]", "run.resume=auto", *extra])


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(ckpt / "model" / "model.safetensors")


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_file):
    """An uninterrupted 3-step GRPO run (KL on, so it has a reference model and stage-0-init)."""
    out = tmp_path_factory.mktemp("ref")
    res = train(_cfg(out, data_file, "run.name=full", "steps=3"))
    return res.run_dir


def test_corrupt_newest_checkpoint_falls_back_to_the_older_one(tmp_path, data_file, reference, capsys):
    over = ["run.name=cut", "steps=3", "run.save_every=1", "run.keep_last=3"]
    train(_cfg(tmp_path, data_file, *over, "run.stop_after=2"))
    run = tmp_path / "cut"
    newest = run / "checkpoint-000002"
    weights = newest / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # torn by a full disk
    capsys.readouterr()
    res = train(_cfg(tmp_path, data_file, *over))
    out = capsys.readouterr().out
    assert "skipping checkpoint-000002" in out and "model/model.safetensors" in out
    assert "resuming from checkpoint-000001 (step 1)" in out
    assert _same(_weights(res.checkpoint), _weights(reference / "checkpoint-000003"))
    assert _steps(run) == [1, 2, 3]


def test_truncated_trainer_state_is_skipped_too(tmp_path, data_file, reference, capsys):
    over = ["run.name=cut", "steps=3", "run.save_every=1", "run.keep_last=3"]
    train(_cfg(tmp_path, data_file, *over, "run.stop_after=2"))
    for f in (tmp_path / "cut" / "checkpoint-000002").glob("trainer_state*"):
        f.write_bytes(f.read_bytes()[:10])
    capsys.readouterr()
    res = train(_cfg(tmp_path, data_file, *over))
    assert "resuming from checkpoint-000001 (step 1)" in capsys.readouterr().out
    assert _same(_weights(res.checkpoint), _weights(reference / "checkpoint-000003"))


def test_a_checkpoint_path_that_does_not_verify_is_refused(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, "run.name=a", "steps=1"))
    ckpt = tmp_path / "a" / "checkpoint-000001"
    (ckpt / "model" / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(ConfigError, match="checkpoint-000001.*model/model.safetensors"):
        train(_cfg(tmp_path, data_file, "run.name=b", "steps=2", f"run.resume={ckpt}"))


def test_non_numeric_checkpoint_folders_are_ignored(tmp_path, data_file):
    final = tmp_path / "r" / "checkpoint-final"
    final.mkdir(parents=True)
    (final / "meta.json").write_text(json.dumps({"step": 99}))
    res = train(_cfg(tmp_path, data_file, "run.name=r", "steps=1"))
    assert res.global_step == 1 and _steps(res.run_dir) == [1]
    assert final.is_dir()  # not ours to delete


def test_resume_path_into_a_new_run_folder_with_a_reference_model(tmp_path, data_file, reference):
    train(_cfg(tmp_path, data_file, "run.name=a", "steps=3", "run.save_every=1", "run.stop_after=1"))
    res = train(_cfg(tmp_path, data_file, "run.name=b", "steps=3", "run.keep_optimizer_state=true",
                     f"run.resume={tmp_path / 'a' / 'checkpoint-000001'}"))
    assert _same(_weights(res.checkpoint), _weights(reference / "checkpoint-000003"))
    assert (res.run_dir / "stage-0-init" / "config.json").is_file()  # b resumes on its own later
    assert _steps(res.run_dir) == [2, 3]


def test_training_state_is_saved_without_pickle(tmp_path, data_file, monkeypatch):
    res = train(_cfg(tmp_path, data_file, "run.name=a", "steps=2", "run.save_every=1", "run.stop_after=1"))
    names = {p.name for p in res.checkpoint.rglob("*") if p.is_file()}
    assert not {n for n in names if n.endswith((".pt", ".bin", ".pkl", ".pth"))}, names

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called on resume")

    monkeypatch.setattr(torch, "load", no_pickle)
    assert train(_cfg(tmp_path, data_file, "run.name=a", "steps=2")).global_step == 2


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_a_crafted_pickle_in_a_checkpoint_never_runs(tmp_path, data_file):
    res = train(_cfg(tmp_path, data_file, "run.name=a", "steps=1"))
    evil = tmp_path / "evil" / "checkpoint-000001"
    evil.mkdir(parents=True)
    (evil / "model").symlink_to(res.checkpoint / "model")
    marker = tmp_path / "marker"
    (evil / "trainer_state.pt").write_bytes(pickle.dumps({"global_step": 1, "x": _Payload(marker)}))
    (evil / "meta.json").write_text(json.dumps({"step": 1}))
    with pytest.raises(DuotuneError, match="trainer_state.pt"):
        train(_cfg(tmp_path, data_file, "run.name=b", "steps=2", f"run.resume={evil}"))
    assert not marker.exists()


def test_a_run_folder_refuses_a_changed_config(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, "run.name=r", "steps=2"))
    saved = (tmp_path / "r" / "config.yaml").read_text()
    with pytest.raises(ConfigError) as err:
        train(_cfg(tmp_path, data_file, "run.name=r", "steps=2", "optim.lr=0.01", "model=tiny-qwen2"))
    msg = str(err.value)
    assert "optim.lr: 0.001 -> 0.01" in msg and "model: 'tiny-llm' -> 'tiny-qwen2'" in msg
    assert "run.name" in msg and "run.resume=never" in msg
    assert (tmp_path / "r" / "config.yaml").read_text() == saved  # still describes the run it holds


def test_run_length_and_logging_fields_may_change_on_resume(tmp_path, data_file, reference, capsys):
    # a finished run keeps what a longer resume needs only when asked (run.keep_optimizer_state)
    train(_cfg(tmp_path, data_file, "run.name=r", "steps=2", "run.save_every=1", "run.keep_optimizer_state=true"))
    capsys.readouterr()
    res = train(_cfg(tmp_path, data_file, "run.name=r", "steps=3", "run.save_every=0", "run.keep_last=1",
                     "run.plots=true", "eval.every=0", "run.keep_optimizer_state=true"))
    assert "resuming from checkpoint-000002 (step 2)" in capsys.readouterr().out
    assert _steps(res.run_dir) == [1, 2, 3]
    assert yaml.safe_load((res.run_dir / "config.yaml").read_text())["steps"] == 3


def test_resume_never_starts_clean(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, "run.name=r", "steps=2", "run.save_every=1"))
    (tmp_path / "r" / "notes.txt").write_text("mine")
    (tmp_path / "r" / ".config.yaml.4242.0a1b.tmp").write_text("a save cut short by a kill")  # jsonl's name
    res = train(_cfg(tmp_path, data_file, "run.name=r", "steps=1", "optim.lr=0.01", "run.resume=never"))
    assert _steps(res.run_dir) == [1]
    assert sorted(p.name for p in res.run_dir.glob("checkpoint-*")) == ["checkpoint-000001"]
    assert yaml.safe_load((res.run_dir / "config.yaml").read_text())["optim"]["lr"] == 0.01
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"  # only duotune's own files go
    assert not list(res.run_dir.glob(".*.tmp"))


def test_metrics_are_cut_back_to_the_resumed_step(tmp_path, data_file):
    over = ["run.name=r", "steps=3", "run.save_every=1"]
    train(_cfg(tmp_path, data_file, *over, "run.stop_after=1"))
    metrics = tmp_path / "r" / "metrics.jsonl"
    with metrics.open("a") as f:  # step 2 logged, then killed before its checkpoint
        f.write(json.dumps({"step": 2, "loss/total": 9.0}) + "\n" + json.dumps({"step": 2, "kind": "eval"}))
    res = train(_cfg(tmp_path, data_file, *over))
    assert _steps(res.run_dir) == [1, 2, 3]
    assert 9.0 not in [json.loads(x).get("loss/total") for x in metrics.read_text().splitlines()]


def test_a_resumed_grpo_d_run_keeps_its_beta_schedule(tmp_path, data_file):
    over = ["steps=4", "run.save_every=1", "algo.kl.beta_min=0.01", "algo.kl.beta_max=0.05"]
    full = train(_cfg(tmp_path, data_file, "run.name=full", *over, method="grpo_d"))
    train(_cfg(tmp_path, data_file, "run.name=cut", "run.stop_after=2", *over, method="grpo_d"))
    cut = train(_cfg(tmp_path, data_file, "run.name=cut", *over, method="grpo_d"))
    betas = [[json.loads(x)["kl/beta"] for x in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
             for r in (full, cut)]
    assert betas[1] == betas[0]
    assert _same(_weights(cut.checkpoint), _weights(full.checkpoint))


def test_fewer_steps_than_the_checkpoint_or_a_broken_reward_leave_the_run_alone(tmp_path, data_file):
    train(_cfg(tmp_path, data_file, "run.name=r", "steps=2"))
    with pytest.raises(ConfigError, match="checkpoint-000002 is at step 2, past this config's 1 steps"):
        train(_cfg(tmp_path, data_file, "run.name=r", "steps=1"))
    with pytest.raises(ConfigError, match="could not be imported"):  # checked before anything is deleted
        train(_cfg(tmp_path, data_file, "run.name=r", "run.resume=never", "reward.names=[nosuchmod:fn]"))
    assert _steps(tmp_path / "r") == [1, 2] and (tmp_path / "r" / "checkpoint-000002").is_dir()


def test_a_checkpoint_of_an_older_duotune_still_resumes(tmp_path, data_file, reference):
    """trainer_state.pt (torch.save of the optimizer, schedule, KL vars, RNG with numpy arrays) and a
    meta.json without hashes: read with weights_only=True, and the run ends as the uninterrupted one."""
    from duotune.trainers.checkpoint import load_trainer_state

    train(_cfg(tmp_path, data_file, "run.name=old", "steps=3", "run.save_every=1", "run.stop_after=1"))
    ckpt = tmp_path / "old" / "checkpoint-000001"
    state = load_trainer_state(ckpt)
    for f in ckpt.glob("trainer_state.*"):
        f.unlink()
    torch.save(state, ckpt / "trainer_state.pt")
    (ckpt / "meta.json").write_text(json.dumps({"step": 1}))
    res = train(_cfg(tmp_path, data_file, "run.name=old", "steps=3"))
    assert _same(_weights(res.checkpoint), _weights(reference / "checkpoint-000003"))
