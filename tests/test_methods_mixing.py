"""CHORD (mu-weighted GRPO + SFT over a separate expert batch) and HPT / SuperRL (a per-question gate
on the number solved): closed-form loss values and gradients on hand-built batches, the gates, the
expert batch's size and draw, and on tiny-llm the gate routing exactly the unsolved questions."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from duotune import algos
from duotune.config import load_config
from duotune.errors import ConfigError
from duotune.registry import Registry
from duotune.trainers import METHODS, TrainConfig, train
from duotune.trainers import step as step_module
from duotune.trainers.methods import LossInputs, Method, settings_for
from duotune.trainers.methods.chord import chord_loss
from duotune.trainers.methods.hpt import hpt_loss
from duotune.trainers.optim import prompt_indices

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"
LN2 = math.log(2)


def _even_answer(completions, answer, **_):
    """1 for every completion of a question whose gold answer is even, else 0 (a per-question outcome)."""
    return [float(int(a) % 2 == 0) for a in answer]


@pytest.fixture(scope="module", autouse=True)
def probe():
    """Reward `test_even`, and `probe_chord`: CHORD-mu whose loss records each update's rows."""
    calls = []

    def recording(inp, logp, ent):
        calls.append({"demo": inp.batch.is_demo.clone(), "groups": inp.batch.group_ids.clone()})
        return chord_loss(inp, logp, ent)

    reg = Registry.all()["reward"]
    reg.register("test_even", _even_answer)
    chord = METHODS.get("chord_mu")
    METHODS.register("probe_chord", Method(chord.settings, chord.demo_entry, recording, paper="test"))
    yield calls
    reg.unregister("test_even")
    METHODS.unregister("probe_chord")


def _inputs(method, algo, batch, adv, correct=None, progress=0.5, l_max=4):
    s = METHODS.get(method).settings.model_validate(algo)
    n = batch.is_demo.shape[0]
    return LossInputs(settings=s, batch=batch, mask=torch.ones(n, 2), rewards=torch.zeros(n),
                      correct=torch.zeros(n, dtype=torch.bool) if correct is None else torch.tensor(correct),
                      advantages=torch.tensor(adv), old_logp=None, ref_logp=None, beta=0.0, progress=progress,
                      l_max=l_max)


def _grad(loss_fn, inp, logp):
    leaf = logp.clone().requires_grad_(True)
    out = loss_fn(inp, leaf, None)
    (g,) = torch.autograd.grad(out.loss, leaf)
    return out, g


# ------------------------------------------------------------------ CHORD

def _chord_batch():
    """Rows 0, 1: rollouts (A = +1, -1); row 2: an expert demo with p = 0.5, 0.25."""
    is_demo = torch.tensor([False, False, True])
    batch = SimpleNamespace(is_demo=is_demo, demo_mask=torch.ones(3, 2) * is_demo[:, None].float(),
                            group_ids=torch.tensor([0, 0, -1]), prompt_index=torch.tensor([0, 0, 1]))
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.25]]))
    return batch, logp


def test_chord_mu_loss_and_gradient_are_the_mu_mix_of_two_own_means():
    """mu(0.5) = 0.05 + 0.85 (1 + cos(pi/2)) / 2 = 0.475. GRPO at rho = 1: token mean of -A = 0, gradient
    -A / 4 on each of the 4 rollout tokens; NLL token mean over the 2 expert tokens: (ln 2 + ln 4) / 2 =
    1.5 ln 2, gradient -1/2. L = 0.525 GRPO + 0.475 NLL."""
    batch, logp = _chord_batch()
    inp = _inputs("chord_mu", {"entropy_coef": 0}, batch, [1.0, -1.0, 0.0])
    out, g = _grad(chord_loss, inp, logp)
    mu = 0.475
    assert out.metrics["chord/mu"] == pytest.approx(mu)
    assert float(out.loss.detach()) == pytest.approx(mu * 1.5 * LN2, rel=1e-6)
    expect = torch.tensor([[-(1 - mu) / 4] * 2, [(1 - mu) / 4] * 2, [-mu / 2] * 2])
    assert torch.allclose(g, expect, atol=1e-7)


def test_chord_phi_weights_expert_tokens_by_p_one_minus_p():
    """Constant mu 0.1; phi = sg(p (1 - p)) = 0.25 and 0.1875: L = 0.1 x -(0.25 ln 0.5 + 0.1875 ln 0.25) / 2,
    gradient on expert tokens -0.1 phi / 2 (the weight is detached)."""
    batch, logp = _chord_batch()
    inp = _inputs("chord_phi", {}, batch, [1.0, -1.0, 0.0], progress=0.9)
    out, g = _grad(chord_loss, inp, logp)
    phi = torch.tensor([0.25, 0.1875])
    assert float(out.loss.detach()) == pytest.approx(0.1 * float(-(phi * logp[2]).sum() / 2), rel=1e-6)
    assert torch.allclose(g[2], -0.1 * phi / 2, atol=1e-7)
    assert torch.allclose(g[0], torch.full((2,), -0.9 / 4), atol=1e-7)


def test_chord_expert_rows_follow_the_ratio_of_the_release():
    """Trinity: ceil(0.2 x 320) = 64 expert rows beside 256 rollouts, i.e. ratio / (1 - ratio) x rollouts."""
    s = METHODS.get("chord_mu").settings()
    assert [s.expert_rows(n) for n in (256, 8, 3, 1)] == [64, 2, 1, 1]
    assert METHODS.get("chord_phi").settings.model_validate({"expert_ratio": 0.5}).expert_rows(8) == 8


def test_mini_batches_deal_expert_rows_evenly():
    """4 prompts with groups of 2 + 2 expert rows (prompts 4, 5), k = 2: each update gets 2 prompts and
    1 expert row (the expert rows, appended last, all fell into the last mini-batch before)."""
    batch = SimpleNamespace(prompt_index=torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 5]),
                            group_ids=torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, -1, -1]))
    first, second = step_module.mini_batches(batch, 2)
    assert first.tolist() == [0, 1, 2, 3, 8] and second.tolist() == [4, 5, 6, 7, 9]


def _cfg(tmp_path, data_file, recipe, *extra):
    return load_config(TrainConfig, TINY / f"{recipe}.yaml", [
        f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        "reward.names=[test_even]", *extra])


def _records(res):
    return [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]


def test_chord_trains_on_a_separate_expert_draw(tmp_path, data_file, probe, monkeypatch):
    """Each step: 2 prompts x 4 rollouts and ceil(0.25 x 8) = 2 expert demos drawn by their own seeded
    stream (not the step's prompts' demos), dealt one per mini-batch; mu follows the schedule per update
    and the loss is (1 - mu) GRPO + mu NLL."""
    drawn = []
    real = step_module.build_groups
    monkeypatch.setattr(step_module, "build_groups",
                        lambda *a, **k: drawn.append((list(a[2]), list(k["expert_demos"]))) or real(*a, **k))
    probe.clear()
    res = train(_cfg(tmp_path, data_file, "chord_mu", "method=probe_chord", "steps=2",
                     "algo.ppo_mini_batches=2", "algo.entropy_coef=0"))
    ids = [f"toy:{i + 1}" for i in range(8)]
    for step, (prompts, experts) in enumerate(drawn):
        want = prompt_indices(8, 2, step, 0, 1, step_module.EXPERT_SEED, True)
        assert [e.id for e in experts] == [ids[i] for i in want]
        assert [e.id for e in prompts] == [ids[i] for i in prompt_indices(8, 2, step, 0, 1, 0, True)]
    assert [int(c["demo"].sum()) for c in probe] == [1, 1, 1, 1]
    assert all(bool((c["groups"][c["demo"]] == -1).all()) for c in probe)
    recs = _records(res)
    assert [r["n_prompts"] for r in recs] == [2, 2]
    # 4 updates over the stage: progress 0, 0.25 | 0.5, 0.75; mu averaged over a step's two updates
    mus = [0.05 + 0.85 * 0.5 * (1 + math.cos(math.pi * x)) for x in (0, 0.25, 0.5, 0.75)]
    assert [r["chord/mu"] for r in recs] == pytest.approx([sum(mus[:2]) / 2, sum(mus[2:]) / 2])


# ------------------------------------------------------------------ HPT / SuperRL gates

def test_gates_map_solved_counts_to_weights():
    rl, sft = algos.gate("switch")(torch.tensor([0, 1, 2]), gamma=1)
    assert rl.tolist() == [0, 0, 1] and sft.tolist() == [1, 1, 0]
    rl, sft = algos.gate("soft")(torch.tensor([0, 1, 3, 7]))
    assert rl.tolist() == [0, 0.125, 0.5, 1.0] and sft.tolist() == [1.0, 0.5, 0.125, 0.0]


def _hpt_batch():
    """Question 0: rollouts 0 (solved), 1; question 1: rollouts 2, 3 (none solved); rows 4, 5 are the
    demos of questions 0 and 1 (p = 0.5, 0.25 on the second)."""
    is_demo = torch.tensor([False, False, False, False, True, True])
    batch = SimpleNamespace(is_demo=is_demo, demo_mask=torch.ones(6, 2) * is_demo[:, None].float(),
                            group_ids=torch.tensor([0, 0, 1, 1, -1, -1]),
                            prompt_index=torch.tensor([0, 0, 1, 1, 0, 1]))
    logp = torch.log(torch.tensor([[0.5, 0.5]] * 5 + [[0.5, 0.25]]))
    # the unsolved question's rollouts carry advantages on purpose: dropped rows must not count
    return batch, logp, [0.5, -0.5, 1.0, -2.0, 0.0, 0.0], [True, False, False, False, True, True]


def test_hpt_switch_drops_the_unsolved_questions_rollouts_and_trains_its_demo():
    """Question 0 (1 solved) keeps GRPO: token mean over its 4 tokens only, gradient -A/4 (not -A/8: the
    dropped rollouts are outside the normaliser); question 1 (0 solved) trains NLL on its demo only:
    L = 2 x (ln 2 + ln 4) / 2, gradient -2/2 = -1 per token; question 0's demo gets no gradient."""
    batch, logp, adv, correct = _hpt_batch()
    inp = _inputs("hpt", {"aggregation": "token_mean", "entropy_coef": 0, "sft_coef": 2.0}, batch, adv, correct)
    out, g = _grad(hpt_loss, inp, logp)
    assert float(out.loss.detach()) == pytest.approx(2.0 * 1.5 * LN2, rel=1e-6)
    expect = torch.tensor([[-0.5 / 4] * 2, [0.5 / 4] * 2, [0.0] * 2, [0.0] * 2, [0.0] * 2, [-1.0] * 2])
    assert torch.allclose(g, expect, atol=1e-7)
    assert out.metrics["hpt/sft_frac"] == 0.5 and out.metrics["hpt/rl_rows"] == 2


def test_hpt_soft_table_interpolates_rl_and_sft_by_the_number_solved():
    """Soft table: 1 solved -> (0.125, 0.5), 0 solved -> (0, 1). RL: advantages x 0.125 on question 0's
    rollouts (gradient -0.125 A / 4); SFT: weighted token mean over the 4 demo tokens with a weight,
    -(0.5 (2 ln 0.5) + (ln 0.5 + ln 0.25)) / 4, gradients -0.5/4 and -1/4."""
    batch, logp, adv, correct = _hpt_batch()
    inp = _inputs("hpt", {"gate": "soft", "aggregation": "token_mean", "entropy_coef": 0}, batch, adv, correct)
    out, g = _grad(hpt_loss, inp, logp)
    assert float(out.loss.detach()) == pytest.approx((0.5 * 2 * LN2 + 3 * LN2) / 4, rel=1e-6)
    expect = torch.tensor([[-0.125 * 0.5 / 4] * 2, [0.125 * 0.5 / 4] * 2, [0.0] * 2, [0.0] * 2,
                           [-0.5 / 4] * 2, [-1 / 4] * 2])
    assert torch.allclose(g, expect, atol=1e-7)
    assert out.metrics["hpt/sft_frac"] == 1.0


def test_superrl_is_the_switch_on_grpo_and_refuses_the_soft_table():
    s = METHODS.get("superrl").settings()
    assert (s.gate.name, s.gate.gamma, s.advantage, s.clip, s.aggregation) == ("switch", 0, "grpo", True,
                                                                               "token_mean")
    with pytest.raises(ConfigError, match="gate.name: Input should be 'switch'.*method 'superrl'"):
        settings_for("superrl", {"gate": "soft"})


@pytest.mark.parametrize("method", ["hpt", "superrl"])
def test_the_gate_routes_exactly_the_unsolved_questions_to_sft(tmp_path, data_file, method):
    """Reward 1 on every completion of an even-answer question, 0 otherwise: each step the share routed
    to SFT is the share of odd answers among its prompts, and only even questions keep rollouts."""
    res = train(_cfg(tmp_path, data_file, method, "steps=4", f"run.name={method}"))
    recs = _records(res)
    odd = [sum(i % 2 for i in prompt_indices(8, 2, s, 0, 1, 0, True)) for s in range(4)]
    assert [r["hpt/sft_frac"] for r in recs] == [o / 2 for o in odd]
    assert [r["hpt/rl_rows"] for r in recs] == [4 * (2 - o) for o in odd]
    assert {0, 1} <= set(odd) or {1, 2} <= set(odd)  # the run saw both kinds of question
