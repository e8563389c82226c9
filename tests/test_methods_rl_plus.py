"""RL-PLUS: the multiple-importance-sampling ratio and exploration advantage on demo tokens (closed-form
loss value and gradient, no clip on demo tokens), group statistics over on-policy samples only, and on
tiny-llm every group's on-policy advantages centred without the demo."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from duotune import algos
from duotune.config import load_config
from duotune.registry import Registry
from duotune.trainers import METHODS, TrainConfig, train
from duotune.trainers.methods import LossInputs, Method
from duotune.trainers.methods.rl_plus import rl_plus_loss
from duotune.trainers.scoring import advantages

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"


def _digit_share(completions, **_):
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


@pytest.fixture(scope="module", autouse=True)
def probe():
    """Reward `test_share` and `probe_rl_plus`, RL-PLUS whose loss records its rows' advantages."""
    calls = []

    def recording(inp, logp, ent):
        calls.append({"adv": inp.advantages.clone(), "rewards": inp.rewards.clone(),
                      "groups": inp.batch.group_ids.clone(), "demo": inp.batch.is_demo.clone()})
        return rl_plus_loss(inp, logp, ent)

    reg = Registry.all()["reward"]
    reg.register("test_share", _digit_share)
    m = METHODS.get("rl_plus")
    METHODS.register("probe_rl_plus", Method(m.settings, m.demo_entry, recording, paper="test"))
    yield calls
    reg.unregister("test_share")
    METHODS.unregister("probe_rl_plus")


def _batch():
    """A group: rollouts 0 (A = 0.5), 1 (A = -0.5) and the demo, row 2, with p = 0.5, 0.25."""
    is_demo = torch.tensor([False, False, True])
    batch = SimpleNamespace(is_demo=is_demo, demo_mask=torch.ones(3, 2) * is_demo[:, None].float())
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.25]]))
    return batch, logp


def _inputs(algo, old=None):
    batch, logp = _batch()
    s = METHODS.get("rl_plus").settings.model_validate({"entropy_coef": 0, **algo})
    inp = LossInputs(settings=s, batch=batch, mask=torch.ones(3, 2), rewards=torch.tensor([1.0, 0.0, 1.0]),
                     correct=torch.tensor([True, False, True]), advantages=torch.tensor([0.5, -0.5, 0.5]),
                     old_logp=old, ref_logp=None, beta=0.0, progress=0.0, l_max=4)
    return inp, logp


def _grad(inp, logp):
    leaf = logp.clone().requires_grad_(True)
    out = rl_plus_loss(inp, leaf, None)
    (g,) = torch.autograd.grad(out.loss, leaf)
    return out, g


def test_demo_tokens_get_the_mis_ratio_times_the_exploration_advantage():
    """One update (pi_old = sg(pi)): r = p / (0.75 p + 0.25) = 0.8 and 4/7, A_explore = 0.5 sqrt(1 - p) =
    0.5 sqrt(0.5), 0.5 sqrt(0.75); demo loss -r A_explore, gradient -r A_explore (dr/dlogp = r, the
    denominator detached); rollouts -A rho, gradient -A; all summed / L_max = 4."""
    inp, logp = _inputs({})
    out, g = _grad(inp, logp)
    r = torch.tensor([0.8, 4 / 7])
    ae = 0.5 * torch.tensor([math.sqrt(0.5), math.sqrt(0.75)])
    assert float(out.loss.detach()) == pytest.approx(float(-(r * ae).sum()) / 4, rel=1e-6)  # rollouts cancel
    expect = torch.stack([torch.full((2,), -0.5), torch.full((2,), 0.5), -r * ae]) / 4
    assert torch.allclose(g, expect, atol=1e-7)
    assert out.metrics["rl_plus/demo_ratio_mean"] == pytest.approx(float(r.mean()), rel=1e-6)


def test_the_ratio_reads_the_sampling_policy_and_is_never_clipped_on_demo_tokens():
    """pi_old = 0.25 on a demo token with pi = 0.5: r = 0.5 / (0.1875 + 0.25) = 8/7 > 1.2, kept with
    clip on; a rollout token with rho = 2 and A > 0 is clipped to 1.2 (gradient 0)."""
    old = torch.log(torch.tensor([[0.25, 0.5], [0.5, 0.5], [0.25, 0.25]]))
    inp, logp = _inputs({"clip": True}, old=old)
    out, g = _grad(inp, logp)
    r_demo = torch.tensor([0.5 / (0.75 * 0.25 + 0.25), 0.25 / (0.75 * 0.25 + 0.25)])
    ae = 0.5 * torch.tensor([math.sqrt(0.5), math.sqrt(0.75)])
    assert torch.allclose(g[2], -r_demo * ae / 4, atol=1e-7)
    assert float(g[0, 0]) == 0.0 and float(g[0, 1]) == pytest.approx(-0.5 / 4)
    tok = (-1.2 * 0.5) + (-0.5) + 0.5 + 0.5 + float(-(r_demo * ae).sum())
    assert float(out.loss.detach()) == pytest.approx(tok / 4, rel=1e-6)


def test_group_statistics_leave_the_demo_out():
    """Rewards (1, 0 | demo 1): on-policy mean 0.5, so A = (0.5, -0.5, 0.5); LUFFY's statistics over
    the whole group give (1/3, -2/3, 1/3)."""
    rollout = SimpleNamespace(group_ids=[0, 0, 0], is_demo=[False, False, True], group_size=3,
                              off_policy=lambda: [False, False, True])
    r, ok = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([True, False, True])
    a, _ = advantages(METHODS.get("rl_plus").settings().group_stats(), rollout, r, ok)
    assert a.tolist() == pytest.approx([0.5, -0.5, 0.5])
    a, _ = advantages(METHODS.get("luffy").settings().group_stats(), rollout, r, ok)
    assert a.tolist() == pytest.approx([1 / 3, -2 / 3, 1 / 3])


def test_mixture_weight_and_power_are_settings():
    """w = 0: r = p (LUFFY's unshaped off-policy term); power 0: A_explore = A."""
    logp = torch.log(torch.tensor([[0.5]]))
    assert float(algos.mis_ratio(logp, logp, 0.0)) == pytest.approx(0.5)
    assert float(algos.mis_ratio(logp, logp, 1.0)) == pytest.approx(1.0)
    assert float(algos.exploration_advantage(torch.tensor([[2.0]]), logp, 0.0)) == pytest.approx(2.0)


def test_on_tiny_llm_on_policy_advantages_are_centred_without_the_demo(tmp_path, data_file, probe):
    probe.clear()
    res = train(load_config(TrainConfig, TINY / "rl_plus.yaml", [
        f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        "reward.names=[test_share]", "steps=2", "method=probe_rl_plus"]))
    assert len(probe) == 2
    for call in probe:
        for g in call["groups"].unique().tolist():
            rows = call["groups"] == g
            on, demo = rows & ~call["demo"], rows & call["demo"]
            assert int(demo.sum()) == 1 and int(on.sum()) == 3
            mean_on = call["rewards"][on].mean()
            assert float(call["adv"][on].sum()) == pytest.approx(0.0, abs=1e-6)
            assert float(call["adv"][demo]) == pytest.approx(float(call["rewards"][demo] - mean_on), abs=1e-6)
    recs = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["rl_plus/demo_ratio_mean"] and r["rl_plus/demo_explore_weight"] <= 1 for r in recs)
