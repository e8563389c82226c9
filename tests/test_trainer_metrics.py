"""Metric sinks, curves.png and the non-finite-update guard of the trainer (issue 6, item 7)."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from duotune.errors import ConfigError, DuotuneError
from duotune.trainers.config import RunCfg
from duotune.trainers.distributed import Parallel
from duotune.trainers.metrics import MetricsLogger, accelerator_kwargs, panel_keys, plot_curves, progress_fields
from duotune.trainers.step import StageState, _optimizer_step

SRFT_RECORD = {"step": 1, "reward/mean": 0.25, "reward/demo_mean": 1.0, "reward/math/mean": 0.25,
               "entropy/mean": 1.5, "entropy/on_policy": 1.7, "completion/len_mean": 40.0,
               "completion/len_max": 64.0, "completion/clipped_ratio": 0.5, "kl/beta": 0.0,
               "loss/total": -2.0, "srft/loss": -2.0, "srft/loss_sft": 0.3, "srft/loss_incorrect": -2.3,
               "loss/sft_weight": 1.0, "train/grad_norm": 3.0, "train/lr": 1e-5, "method": "srft",
               "train/skipped": False}


def _logger(tmp_path, **kw):
    return MetricsLogger(tmp_path, 3, 0, **{"progress": False, "is_main": True, **kw})


def test_panels_hold_every_loss_term_and_put_beta_and_lr_on_a_second_axis():
    panels = {title: (left, right) for title, left, right in panel_keys([SRFT_RECORD])}
    assert panels["loss terms"] == (["loss/total", "srft/loss_sft", "srft/loss_incorrect"], [])
    assert panels["KL / beta"] == ([], ["kl/beta"])
    assert panels["grad norm / lr"] == (["train/grad_norm"], ["train/lr"])
    assert panels["reward"] == (["reward/mean", "reward/demo_mean", "reward/math/mean"], [])
    assert panels["completion length"] == (["completion/len_mean", "completion/len_max"],
                                           ["completion/clipped_ratio"])


def test_curves_png_written_from_training_records_only(tmp_path):
    log = _logger(tmp_path)
    for s in (1, 2):
        log.log({**SRFT_RECORD, "step": s})
    log.log({"step": 2, "kind": "eval", "eval/gsm8k/accuracy": 0.5})
    log.close()
    out = plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert out == tmp_path / "curves.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty.jsonl").write_text("")
    assert plot_curves(tmp_path / "empty.jsonl", tmp_path / "none.png") is None


def test_metrics_jsonl_turns_nan_into_null_and_writes_no_tracker_unless_asked(tmp_path):
    log = _logger(tmp_path)
    log.log({"step": 1, "loss/total": float("nan"), "x": float("inf")})
    log.close()
    rec = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert rec == {"step": 1, "loss/total": None, "x": 1e308}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


@pytest.mark.parametrize("tracker,package", [("tensorboard", "tensorboard"), ("wandb", "wandb"),
                                             ("mlflow", "mlflow")])
def test_asking_for_a_tracker_that_is_not_installed_names_the_package(tmp_path, tracker, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(ConfigError, match=rf"pip install {package}.*duotune\[tracking\]"):
        accelerator_kwargs([tracker], tmp_path)


def test_an_unknown_tracker_lists_accelerates_trackers(tmp_path):
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord'.*tensorboard"):
        accelerator_kwargs(["tensorbord"], tmp_path)
    assert accelerator_kwargs([], tmp_path) == {}


def test_progress_line_shows_reward_solve_rate_kl_entropy_length_and_step_time():
    grpo = {"reward/mean": 0.625, "solve_rate/on_policy": 0.5, "kl/mean": 0.0123456, "entropy/mean": 0.2,
            "entropy/on_policy": 0.25, "completion/len_mean": 37.5, "loss/total": -0.01, "time/step": 12.34}
    assert progress_fields(grpo) == {"reward": "0.625", "solved": "0.5", "kl": "0.0123", "entropy": "0.25",
                                     "len": "37.5", "loss": "-0.01", "s/step": "12.3"}
    # SFT: no reward, solve rate or KL; the length shown is the demonstrations'
    sft = {"entropy/mean": 0.5, "completion/demo_len_mean": 40.0, "loss/total": 0.3, "time/step": 2.0}
    assert progress_fields(sft) == {"entropy": "0.5", "len": "40", "loss": "0.3", "s/step": "2"}


def _state(max_bad: int = 2) -> StageState:
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    cfg = SimpleNamespace(optim=SimpleNamespace(grad_clip=None), run=RunCfg(max_bad_steps=max_bad))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    acc = Accelerator(cpu=True)
    return StageState(cfg=cfg, method=None, needs=None, bundle=SimpleNamespace(model=model), encoder=None,
                      sampler=None, reference=None, optimizer=opt, scheduler=sched, kl=None, examples=[],
                      accelerator=acc, logger=None, total_updates=1, parallel=Parallel(acc, model, "single"))


def test_non_finite_loss_or_gradient_skips_the_update_then_stops_the_run():
    st = _state(max_bad=3)
    w0 = st.bundle.model.weight.detach().clone()
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        rec = _optimizer_step(st, torch.tensor(float("nan")))
    assert rec["train/skipped"] == 1.0 and st.bad_in_row == 1 and st.opt_steps == 0
    st.bundle.model.weight.grad = torch.full_like(w0, float("inf"))  # finite loss, overflowed gradient
    with pytest.warns(RuntimeWarning, match="non-finite gradient norm"):
        _optimizer_step(st, torch.tensor(1.0))
    assert torch.equal(st.bundle.model.weight, w0) and st.bad_in_row == 2
    st.bundle.model.weight.grad = torch.ones_like(w0)
    st.bundle.model.bias.grad = torch.zeros(1)
    rec = _optimizer_step(st, torch.tensor(1.0))
    # SGD lr 0.5 on a unit gradient: w -> w - 0.5; the good step resets the counter.
    assert torch.allclose(st.bundle.model.weight, w0 - 0.5) and rec["train/skipped"] == 0.0
    assert st.bad_in_row == 0 and st.opt_steps == 1
    st2 = _state(max_bad=2)
    with pytest.warns(RuntimeWarning):
        _optimizer_step(st2, torch.tensor(float("inf")))
    with pytest.warns(RuntimeWarning), pytest.raises(DuotuneError, match="2 non-finite .* in a row"):
        _optimizer_step(st2, torch.tensor(float("nan")))


class _RecordingSampler:
    """Records the weights it was handed at each sync (what a vLLM engine would load)."""

    def __init__(self):
        self.synced = []

    def sync_weights(self, model):
        self.synced.append(model.weight.detach().clone())


def test_weights_are_synced_into_the_sampler_after_each_optimizer_step_only():
    st = _state()
    st.sampler = _RecordingSampler()
    w0 = st.bundle.model.weight.detach().clone()
    st.bundle.model.weight.grad, st.bundle.model.bias.grad = torch.ones_like(w0), torch.zeros(1)
    rec = _optimizer_step(st, torch.tensor(1.0))
    # the engine got the post-step weights (SGD lr 0.5 on a unit gradient), and the time is logged
    assert len(st.sampler.synced) == 1 and torch.allclose(st.sampler.synced[0], w0 - 0.5)
    assert "time/weight_sync_s" in rec
    with pytest.warns(RuntimeWarning):  # a skipped update changes no weight: nothing to push
        rec = _optimizer_step(st, torch.tensor(float("nan")))
    assert len(st.sampler.synced) == 1 and "time/weight_sync_s" not in rec
