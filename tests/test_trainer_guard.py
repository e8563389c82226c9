"""The guard after the update (issue 16 item 5/6): an update that leaves non-finite or exploded weights,
or a loss past `run.max_loss`, is rolled back to the pre-step weights and optimizer state; NaN/inf
rewards are an error naming the reward and sample; a run that applied no update exits non-zero."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from duotune.cli import main
from duotune.config import load_config
from duotune.errors import DuotuneError
from duotune.models import load_model
from duotune.rewards import RewardError, RewardManager
from duotune.trainers import TrainConfig, train
from duotune.trainers.config import RunCfg
from duotune.trainers.distributed import Parallel
from duotune.trainers.step import StageState, _optimizer_step

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def _overrides(tmp_path, data_file, *extra):
    return [f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
            "reward.names=[toy_rewards:digit_share]", "run.name=r", *extra]


def _state(**run) -> StageState:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    cfg = SimpleNamespace(optim=SimpleNamespace(grad_clip=None), run=RunCfg(**run))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    acc = Accelerator(cpu=True)
    return StageState(cfg=cfg, method=None, needs=None, bundle=SimpleNamespace(model=model), encoder=None,
                      sampler=None, reference=None, optimizer=opt, scheduler=sched, kl=None, examples=[],
                      accelerator=acc, logger=None, total_updates=1, parallel=Parallel(acc, model, "single"))


def _grads(st, value):
    for p in st.bundle.model.parameters():
        p.grad = torch.full_like(p, value)


def test_an_exploding_update_is_rolled_back_with_the_optimizer_state():
    st = _state(max_bad_steps=3)
    _grads(st, 1.0)
    _optimizer_step(st, torch.tensor(1.0))  # one good AdamW step: the optimizer now has moments
    good = copy.deepcopy(st.bundle.model.state_dict())
    opt_state = copy.deepcopy(st.optimizer.state_dict())
    st.optimizer.param_groups[0]["lr"] = 1e30  # the next update writes +-1e30 weights (finite)
    _grads(st, -1.0)
    with pytest.warns(RuntimeWarning, match="rolled back"):
        rec = _optimizer_step(st, torch.tensor(1.0))
    assert rec["train/skipped"] == 1.0 and rec["train/rolled_back"] == 1.0
    assert all(torch.equal(v, good[k]) for k, v in st.bundle.model.state_dict().items())
    after = st.optimizer.state_dict()
    assert all(torch.equal(after["state"][i][k], opt_state["state"][i][k])
               for i in opt_state["state"] for k in opt_state["state"][i])
    assert st.scheduler.last_epoch == 1 and st.opt_steps == 1 and st.bad_in_row == 1


def test_a_loss_past_the_spike_bound_is_not_applied():
    st = _state(max_loss=10.0)
    w0 = copy.deepcopy(st.bundle.model.state_dict())
    _grads(st, 1.0)
    with pytest.warns(RuntimeWarning, match="run.max_loss"):
        rec = _optimizer_step(st, torch.tensor(11.0))
    assert rec["train/skipped"] == 1.0
    assert all(torch.equal(v, w0[k]) for k, v in st.bundle.model.state_dict().items())
    _grads(st, 1.0)
    with pytest.warns(RuntimeWarning, match="loss -11"):  # a bound on |loss|
        assert _optimizer_step(st, torch.tensor(-11.0))["train/skipped"] == 1.0
    _grads(st, 1.0)
    assert _optimizer_step(st, torch.tensor(9.0))["train/skipped"] == 0.0


def test_lr_1e30_stops_with_a_message_and_never_checkpoints_exploded_weights(tmp_path, data_file):
    cfg = load_config(TrainConfig, CONFIGS / "grpo.yaml",
                      _overrides(tmp_path, data_file, "optim.lr=1e30", "steps=4", "run.save_every=1"))
    with pytest.raises(DuotuneError, match="3 .* in a row.*optim.lr"):
        train(cfg)
    initial = load_model("tiny-llm").model.state_dict()
    for ckpt in (tmp_path / "r").glob("checkpoint-*"):  # whatever was saved is the untouched model
        saved = load_file(ckpt / "model" / "model.safetensors")
        assert all(torch.equal(saved[k], initial[k]) for k in saved)


def test_a_run_that_applied_no_update_exits_non_zero(tmp_path, data_file, capsys):
    code = main(["train", str(CONFIGS / "grpo.yaml"),
                 *_overrides(tmp_path, data_file, "optim.lr=1e30", "steps=2", "run.max_bad_steps=10")])
    assert code == 2
    assert "no update was applied in 2 steps" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rewards_name_the_reward_and_the_sample(bad):
    def broken(completions, **_):
        return [bad if i == 2 else 0.5 for i in range(len(completions))]

    with pytest.raises(RewardError, match=r"reward 'broken' failed on sample 2: returned (nan|inf|-inf)"):
        RewardManager([broken]).score(["a", "b", "c"], {})


def test_a_nan_reward_stops_training_with_the_reward_named(tmp_path, data_file):
    cfg = load_config(TrainConfig, CONFIGS / "grpo.yaml", _overrides(
        tmp_path, data_file, "reward.names=[toy_rewards:nan_on_third]", "steps=1"))
    with pytest.raises(RewardError, match=r"toy_rewards:nan_on_third.*sample 2"):
        train(cfg)
