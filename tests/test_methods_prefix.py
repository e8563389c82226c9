"""Expert-prefix methods (UFT, Prefix-RFT, TRAPO): the schedule and hint draw, rows that continue a
demo prefix prefilled once, the prefix tokens marked off-policy, group statistics without hybrid rows,
each loss's value and gradient on a hand-computed batch, and each method's behaviour on tiny-llm."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from duotune import algos
from duotune.config import load_config
from duotune.data import Example
from duotune.errors import ConfigError
from duotune.models import load_model
from duotune.registry import Registry
from duotune.rollout import Completion, HFSampler, PromptEncoder, SamplingParams, build_groups, collate
from duotune.rollout.prefix import PrefixPlan, sample_prefixed, segment_bounds, solution_steps
from duotune.trainers import METHODS, TrainConfig, train
from duotune.trainers.methods import LossInputs
from duotune.trainers.scoring import advantages

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny"


@pytest.fixture(scope="module")
def bundle():
    return load_model("tiny-llm")


@pytest.fixture(scope="module", autouse=True)
def rewards():
    reg = Registry.all()["reward"]
    reg.register("test_zero", lambda completions, **_: [0.0] * len(completions))
    reg.register("test_digits", lambda completions, **_: [sum(c.isdigit() for c in x) / max(1, len(x))
                                                          for x in completions])
    yield
    reg.unregister("test_zero")
    reg.unregister("test_digits")


def _cfg(tmp_path, data_file, recipe, *extra):
    return load_config(TrainConfig, TINY / f"{recipe}.yaml", [
        f"data.train={data_file}", f"run.output_dir={tmp_path}", "run.progress=false", "run.plots=false",
        "reward.names=[test_zero]", *extra])


def _records(res):
    return [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ schedule, hint draw, demo splits

def test_cosine_decay_is_ufts_hint_schedule():
    """UFT: p(t) = 0.05 + 0.45 (1 + cos(pi t / T_hint)), T_hint = 0.6 of the stage, then 0."""
    f = algos.mix_schedule("cosine_decay")
    assert f(0.0, decay_frac=0.6, after=0.0) == pytest.approx(0.95)
    assert f(0.3, decay_frac=0.6, after=0.0) == pytest.approx(0.5)
    assert f(0.15, decay_frac=0.6, after=0.0) == pytest.approx(0.05 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert f(0.6, decay_frac=0.6, after=0.0) == pytest.approx(0.05)
    assert f(0.61, decay_frac=0.6, after=0.0) == 0.0 and f(0.9) == pytest.approx(0.05 + 0.45 * (1 + math.cos(0.9 * math.pi)))


def test_hint_segments_and_demo_splits():
    assert algos.uft_hint_segments(5, 0.0) == 0 and algos.uft_hint_segments(5, 1.0) == 5
    g = torch.Generator().manual_seed(0)
    draws = [algos.uft_hint_segments(4, 0.5, g) for _ in range(200)]
    assert set(draws) <= {0, 1, 2, 3, 4} and 1.6 < sum(draws) / 200 < 2.4  # mean of Binomial(4, .5) = 2
    steps = solution_steps("Add 2. Then 3!  Done?")
    assert steps == ["Add 2. ", "Then 3!  ", "Done?"] and "".join(steps) == "Add 2. Then 3!  Done?"
    assert solution_steps("a\nb\n") == ["a\n", "b\n"]
    # UFT: separation = round(i / num * len(hint)), num = min(5, len(hint))
    assert segment_bounds(12, 5) == [0, 2, 5, 7, 10, 12] and segment_bounds(3, 5) == [0, 1, 2, 3]


def test_top_fraction_mask_picks_the_highest_entropy_prefix_tokens():
    ent = torch.tensor([[0.1, 0.9, 0.3, 0.5, 0.2], [2.0, 0.0, 0.0, 0.0, 0.0]])
    pre = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    assert algos.top_fraction_mask(ent, pre, 0.2).tolist() == [[False, True, False, False, False], [False] * 5]
    assert algos.top_fraction_mask(ent, pre, 0.4)[0].tolist() == [False, True, False, True, False]
    assert not algos.top_fraction_mask(ent, pre, 0.0).any()


# ------------------------------------------------------------------ rows that continue a demo prefix

class _Recorder:
    """A sampler that answers every prompt with tokens 7, 8, 9 and records what it was asked."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append(([list(p.input_ids) for p in prompts], params))
        return [[Completion("x", [7, 8, 9], "length", [-1.0, -2.0, -3.0]) for _ in range(params.n)]
                for _ in prompts]


def _examples(k=2):
    return [Example(id=f"e{i}", prompt=[{"role": "user", "content": f"q{i}"}], answer="1", demo="1 2 3 4")
            for i in range(k)]


def test_prefix_rows_continue_the_prompt_plus_prefix(bundle):
    """Group = 2 sampled + 2 hybrid rows; the hybrid rows' prompt is prompt + prefix (one call, n = 2),
    their response prefix + continuation with the prefix marked off-policy in demo_mask, a room of
    max_len - len(prefix) tokens (a longer continuation is cut and counts as truncated)."""
    enc = PromptEncoder(bundle)
    sampler = _Recorder()
    plan = PrefixPlan(rows=2, replace=True, tokens=[[40, 41], [50, 51, 52, 53]])
    r = build_groups(sampler, enc, _examples(), SamplingParams(seed=3), group_size=4, demo_in_group=False,
                     demo_rows=False, max_completion_length=6, prefix=plan)
    (plain_ids, plain), (hyb_ids, hyb) = sampler.calls
    prompts = [enc.encode(e).input_ids for e in _examples()]
    assert plain.n == 2 and hyb.n == 2 and hyb.max_new_tokens == 6 - 2 and hyb.seed == 4
    assert hyb_ids == [prompts[0] + [40, 41], prompts[1] + [50, 51, 52, 53]]
    assert r.group_size == 4 and r.group_ids == [0, 0, 0, 0, 1, 1, 1, 1]
    assert r.responses[2] == [40, 41, 7, 8, 9] and r.responses[6] == [50, 51, 52, 53, 7, 8]
    assert r.prefix_lens == [0, 0, 2, 2, 0, 0, 4, 4] and r.truncated[6]
    assert r.logprobs[2] == [0.0, 0.0, -1.0, -2.0, -3.0] and r.logprobs[6] == [0.0] * 4 + [-1.0, -2.0]
    b = collate(r, enc)
    assert b.demo_mask[2].tolist() == [1, 1, 0, 0, 0, 0] and b.demo_mask[6].tolist() == [1, 1, 1, 1, 0, 0]
    assert b.demo_mask[0].sum() == 0 and not b.is_demo.any()
    joined = build_groups(_Recorder(), enc, _examples(), SamplingParams(seed=3), group_size=4,
                          demo_in_group=False, demo_rows=False, max_completion_length=6,
                          prefix=PrefixPlan(2, False, plan.tokens))
    assert joined.group_size == 6 and joined.prefix_lens[:6] == [0, 0, 0, 0, 2, 2]
    with pytest.raises(ConfigError, match="prefix.rows=5 replaces more rows than the group has"):
        build_groups(_Recorder(), enc, _examples(), SamplingParams(), group_size=4, demo_in_group=False,
                     demo_rows=False, max_completion_length=6, prefix=PrefixPlan(5, True, plan.tokens))


def test_the_prefix_is_prefilled_once_for_its_continuations(bundle, monkeypatch):
    """HFSampler's shared prefill runs prompt + prefix once per prompt and copies its KV cache to
    the n continuations: one prefill of [2 prompts, prompt + prefix - 1 tokens], repeat = 3."""
    enc = PromptEncoder(bundle)
    seen = []
    real = HFSampler._shared_prefill

    def spy(self, inputs, repeat):
        seen.append((tuple(inputs["input_ids"].shape), repeat))
        return real(self, inputs, repeat)

    monkeypatch.setattr(HFSampler, "_shared_prefill", spy)
    exs = _examples()
    plan = PrefixPlan(3, True, [[40, 41, 42], [50, 51, 52]])
    out = sample_prefixed(HFSampler(bundle), [enc.encode(e) for e in exs], plan, SamplingParams(seed=0), 8)
    width = max(len(enc.encode(e).input_ids) for e in exs) + 3
    assert seen == [((2, width), 3)]
    assert all(len(s.ids) <= 8 and s.ids[:3] == plan.tokens[b] for b, per in enumerate(out) for s in per)


def test_hybrid_rows_leave_the_group_statistics_when_asked():
    """Group rewards [1 (on), 0 (on), 1 (prefix)], r - mean: on-policy mean 0.5 -> [.5, -.5, .5]
    (TRAPO); all rows in the mean 2/3 -> [1/3, -2/3, 1/3] (Prefix-RFT)."""
    r = SimpleNamespace(group_ids=[0, 0, 0], group_size=3, is_demo=[False] * 3,
                        off_policy=lambda: [False, False, True])
    rewards, correct = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([True, False, True])
    a, m = advantages(("no_std", 1e-6, False), r, rewards, correct)
    assert a.tolist() == pytest.approx([0.5, -0.5, 0.5]) and m["solve_rate/prefix"] == 1.0
    a, _ = advantages(("no_std", 1e-6, True), r, rewards, correct)
    assert a.tolist() == pytest.approx([1 / 3, -2 / 3, 1 / 3])


# ------------------------------------------------------------------ each loss on a hand-computed batch

def _batch(prefix_len):
    """Row 0: 3 policy tokens; row 1: a hybrid row with `prefix_len` of its 3 tokens from the demo."""
    mask = torch.ones(2, 3)
    demo_mask = torch.zeros(2, 3)
    demo_mask[1, :prefix_len] = 1
    return SimpleNamespace(is_demo=torch.tensor([False, False]), demo_mask=demo_mask), mask


def _inputs(method, over, batch, mask, adv, l_max=4):
    s = METHODS.get(method).settings.model_validate(over)
    return LossInputs(settings=s, batch=batch, mask=mask, rewards=torch.zeros(2), correct=torch.zeros(2).bool(),
                      advantages=torch.tensor(adv), old_logp=None, ref_logp=None, beta=0.0, progress=0.0,
                      l_max=l_max)


def _loss_and_grad(fn, inp, logp, ent=None):
    logp = logp.clone().requires_grad_(True)
    out = fn(inp, logp, ent)
    out.loss.backward()
    return float(out.loss.detach()), logp.grad, out.metrics


def test_trapo_loss_value_and_gradient():
    """Prefix tokens p = 0.05 and 0.5 (alpha 0.1): J = p / max(sg p, .1) = 0.5 and 1, dJ/dlogp = 0.5
    and 1, loss -J (advantage 1); policy tokens -A rho (rho = 1): A = 2 on row 0, -1 on row 1.
    Sum over the 6 tokens / L_max 4 = (-6 - 0.5 - 1 + 1) / 4."""
    batch, mask = _batch(2)
    logp = torch.log(torch.tensor([[0.3, 0.3, 0.3], [0.05, 0.5, 0.3]]))
    inp = _inputs("trapo", {"entropy_coef": 0}, batch, mask, [2.0, -1.0])
    loss, grad, m = _loss_and_grad(METHODS.get("trapo").loss, inp, logp)
    assert loss == pytest.approx((-6 - 0.5 - 1 + 1) / 4)
    assert torch.allclose(grad, torch.tensor([[-0.5, -0.5, -0.5], [-0.125, -0.25, 0.25]]))
    assert m["trapo/prefix_token_frac"] == pytest.approx(2 / 6)


def test_prefix_rft_trains_only_the_top_entropy_prefix_tokens():
    """Row 1 is 3 prefix tokens with entropies .1, .9, .3: top 20 % = 1 token (the .9 one) gets
    -A logp (A = 3), the other two leave the loss; row 0 (A = -1) the PPO surrogate. Dr. GRPO
    aggregation: sum / (N x L_max) = sum / 8."""
    batch, mask = _batch(3)
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.4, 0.8]]))
    ent = torch.tensor([[1.0, 1.0, 1.0], [0.1, 0.9, 0.3]])
    inp = _inputs("prefix_rft", {}, batch, mask, [-1.0, 3.0])
    loss, grad, m = _loss_and_grad(METHODS.get("prefix_rft").loss, inp, logp, ent)
    assert loss == pytest.approx((3 * 1.0 - 3 * math.log(0.4)) / 8)
    assert torch.allclose(grad, torch.tensor([[1 / 8] * 3, [0.0, -3 / 8, 0.0]]))
    assert m["prefix/kept_frac"] == pytest.approx(1 / 3)


def test_uft_loss_is_grpo_on_the_continuation_plus_hint_nll():
    """Row 1's first 2 tokens are the hint: token-mean NLL over them x 0.001; GRPO (rho = 1, token
    mean over the 4 policy tokens, beta 0): A = 1 and -2."""
    batch, mask = _batch(2)
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.25, 0.5, 0.5]]))
    inp = _inputs("uft", {"entropy_coef": 0, "kl": {"beta": 0.0}}, batch, mask, [1.0, -2.0])
    loss, grad, m = _loss_and_grad(METHODS.get("uft").loss, inp, logp)
    nll = -(math.log(0.25) + math.log(0.5)) / 2
    assert loss == pytest.approx((-3 * 1 + 2) / 4 + 0.001 * nll)
    assert torch.allclose(grad, torch.tensor([[-0.25] * 3, [-0.0005, -0.0005, 0.5]]))
    assert m["loss/hint_nll"] == pytest.approx(nll)


# ------------------------------------------------------------------ tiny-llm training

def test_uft_hints_decay_to_nothing(tmp_path, data_file):
    """4 steps, p(t) 1.0 -> 0.05 over the first half, then 0: step 1 hints every prompt (p = 1, all
    segments), steps 3-4 (progress 0.5, 0.75 > 0.5 ... after the decay) hint none; the hint NLL is
    trained while there is a hint."""
    res = train(_cfg(tmp_path, data_file, "uft", "steps=4", "algo.prefix.schedule={start: 1.0, end: 0.05, "
                     "decay_frac: 0.4, after: 0.0}"))
    recs = _records(res)
    assert recs[0]["prefix/rows_frac"] == 1.0 and recs[0]["loss/hint_nll"] > 0
    assert [r["prefix/rows_frac"] for r in recs[2:]] == [0.0, 0.0]
    assert all(r["prefix/token_frac"] == 0.0 for r in recs[2:])


def test_prefix_rft_prefix_fraction_decays(tmp_path, data_file):
    """The hybrid row's share of the demo shrinks with the cosine schedule (0.95 -> 0.05)."""
    res = train(_cfg(tmp_path, data_file, "prefix_rft", "steps=3", "rollout.max_completion_length=24"))
    lens = [r["prefix/len_mean"] for r in _records(res)]
    # demos "iii i" are 5 byte tokens: round(f x 5) for f(0) = 0.95, f(1/3) = 0.725, f(2/3) = 0.275
    assert lens == [5.0, 4.0, 1.0] and _records(res)[0]["prefix/rows_frac"] == pytest.approx(1 / 4)


def test_trapo_raises_the_prefix_likelihood_with_no_reward(tmp_path, data_file):
    """With every reward 0 (no RL signal) TRAPO's SFT-type prefix term alone raises p of the demo
    prefix tokens (demo/p_mean) step after step; Prefix-RFT (-A x J with A = 0) leaves it at chance."""
    over = ["steps=4", "optim.lr=1.0e-2", "algo.prefix.schedule={start: 1.0, end: 1.0}",
            "rollout.max_completion_length=24"]
    trapo = [r["demo/p_mean"] for r in _records(train(_cfg(tmp_path, data_file, "trapo", "run.name=t", *over)))]
    assert trapo[-1] > 2 * trapo[0]
    rft = _records(train(_cfg(tmp_path, data_file, "prefix_rft", "run.name=p", *over)))
    assert all(r["loss/policy"] == 0.0 for r in rft)
