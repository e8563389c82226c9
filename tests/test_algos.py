"""duotune.algos: advantages, KL estimators/controllers, aggregation, entropy, demo weights, schedules.

Every expectation is a closed-form value written out in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch

from duotune import algos
from duotune.errors import ConfigError, ShapeError, UnknownNameError

# ---------------------------------------------------------------- GRPO-D (SPEC 2)


def test_grpo_d_beta_endpoints_and_slopes():
    # t = 10, explore_frac 0.3 -> w = 3; beta_mid = (0.04 + 0.10) / 2 = 0.07
    b = lambda s: algos.grpo_d_beta(s, 10, 0.04, 0.10)  # noqa: E731
    assert b(0) == pytest.approx(0.07)
    assert b(1) == pytest.approx(0.07 - 0.03 / 3)          # falls 0.03 over 3 steps
    assert b(3) == pytest.approx(0.04)                     # beta(w) = beta_min
    assert b(5) == pytest.approx(0.04 + 0.06 * 2 / 7)      # rises 0.06 over t - w = 7 steps
    assert b(10) == pytest.approx(0.10)                    # beta(t) = beta_max
    # continuous at w from both sides
    assert b(3 - 1e-9) == pytest.approx(0.04, abs=1e-9) and b(3 + 1e-9) == pytest.approx(0.04, abs=1e-9)


@pytest.mark.parametrize("t,w", [(2, 1), (3, 1), (5, 2), (7, 2), (10, 3), (15, 4), (100, 30)])
def test_grpo_d_w_rounding(t, w):
    # w = max(1, round(0.3 t)): 0.6 -> 1, 0.9 -> 1, 1.5 -> 2, 2.1 -> 2, 4.5 -> 4 (half to even)
    betas = [algos.grpo_d_beta(s, t, 0.0, 0.02) for s in range(t + 1)]
    assert min(range(t + 1), key=betas.__getitem__) == w
    assert betas[w] == 0.0 and betas[0] == pytest.approx(0.01) and betas[t] == pytest.approx(0.02)


@pytest.mark.parametrize("frac", [0.3, 0.9, 0.99])
def test_grpo_d_reaches_beta_max_at_t(frac):
    # w is kept below t, so beta(t) = beta_max however large explore_frac (0.99 * 10 rounds to 10)
    # and t = 1 (no room for the fall) goes beta_mid -> beta_max; it returned beta_min before.
    for t in (1, 2, 10):
        assert algos.grpo_d_beta(0, t, 0.04, 0.10, frac) == pytest.approx(0.07)
        assert algos.grpo_d_beta(t, t, 0.04, 0.10, frac) == pytest.approx(0.10)


def test_grpo_d_rejects_out_of_range():
    with pytest.raises(ConfigError, match="step 11"):
        algos.grpo_d_beta(11, 10, 0.0, 0.02)
    with pytest.raises(ConfigError, match="explore_frac"):
        algos.grpo_d_beta(0, 10, 0.0, 0.02, explore_frac=1.0)


def test_grpo_d_controller_follows_schedule_and_checkpoints():
    ctl = algos.build_kl_controller("grpo_d", beta_min=0.04, beta_max=0.10, total_steps=10,
                                    explore_frac=0.3, beta=0.5, target=1.0, horizon=3)
    # 10 rollout steps on t = 9 (w = round(2.7) = 3): step 0 uses beta_mid, step 9 beta_max
    assert ctl.value == pytest.approx(0.07)                 # beta(0) = beta_mid
    assert ctl.update(123.0, 3) == pytest.approx(0.04)      # observed KL is ignored; beta(w) = beta_min
    assert ctl.beta_at(9) == pytest.approx(0.10)
    again = algos.build_kl_controller("grpo_d", beta_min=0.04, beta_max=0.10, total_steps=10)
    again.load_state_dict(ctl.state_dict())
    assert again.value == pytest.approx(0.04)


def test_fixed_and_adaptive_controllers():
    fixed = algos.build_kl_controller("fixed", beta=0.04, target=1.0)
    assert fixed.update(10.0, 1) == 0.04
    ctl = algos.build_kl_controller("adaptive", beta=1e-3, target=5e-4, horizon=100, total_steps=9)
    # kl/target - 1 = 1 -> clipped to 0.2; n = 10: beta = 1e-3 * (1 + 0.2 * 10/100) = 1.02e-3
    assert ctl.update(1e-3, 1, n_samples=10) == pytest.approx(1.02e-3)
    # 5.5e-4 / 5e-4 - 1 = 0.1 (inside the clip): beta *= 1 + 0.1 * 10/100 = 1.01
    assert ctl.update(5.5e-4, 2, n_samples=10) == pytest.approx(1.02e-3 * 1.01)
    # 1e-4 / 5e-4 - 1 = -0.8 -> -0.2: beta *= 1 - 0.2 * 10/100 = 0.98
    assert ctl.update(1e-4, 3, n_samples=10) == pytest.approx(1.02e-3 * 1.01 * 0.98)
    fresh = algos.AdaptiveKL(init=1.0, target=5e-4, horizon=100)
    fresh.load_state_dict(ctl.state_dict())
    assert fresh.value == pytest.approx(1.02e-3 * 1.01 * 0.98)


def test_adaptive_matches_openrlhf_over_200_steps():
    """OpenRLHF's AdaptiveKLController.update(current, n_steps), written out independently:
    err = clip(current / target - 1, -0.2, 0.2); value *= 1 + err * n_steps / horizon, with
    n_steps = sequences of the step (16 in configs/vision/vlaa_grpo.yaml: 4 prompts x G 4)."""
    g = torch.Generator().manual_seed(0)
    observed = (torch.rand(200, generator=g, dtype=torch.float64) * 2e-3).tolist()
    ours, ref = algos.AdaptiveKL(init=1e-3, target=5e-4, horizon=10000), 1e-3
    for step, kl in enumerate(observed, start=1):
        ours.update(kl, step, n_samples=16)
        ref *= 1 + min(max(kl / 5e-4 - 1, -0.2), 0.2) * 16 / 10000
    assert ours.value == pytest.approx(ref, rel=1e-12)
    assert abs(ref / 1e-3 - 1) > 0.01  # 16 samples per step move it by percents, not 0.2 %


def test_build_kl_controller_errors():
    with pytest.raises(ConfigError, match="total_steps"):
        algos.build_kl_controller("grpo_d", beta_min=0.0, beta_max=0.02)
    with pytest.raises(UnknownNameError, match="did you mean 'adaptive'"):
        algos.build_kl_controller("adaptve", beta=0.1)

# ---------------------------------------------------------------- advantages (SPEC 1, 5)


def test_luffy_worked_example_without_std():
    # demo correct, 7 rollouts wrong: mean 1/8 -> A_demo = 0.875, A_rollout = -0.125
    a = algos.group_advantages(torch.tensor([[1.0] + [0.0] * 7]), std_normalize=False)
    assert a.tolist() == [[0.875] + [-0.125] * 7]


def test_std_normalised_values():
    # unbiased var = (0.875^2 + 7 * 0.125^2) / 7 = 0.125, std = 0.3535534
    a = algos.group_advantages(torch.tensor([[1.0] + [0.0] * 7]), std_normalize=True, eps=1e-6)
    std = math.sqrt(0.125)
    assert a[0, 0].item() == pytest.approx(0.875 / (std + 1e-6), rel=1e-6)
    assert a[0, 1].item() == pytest.approx(-0.125 / (std + 1e-6), rel=1e-6)
    assert torch.equal(algos.advantage("grpo")(torch.tensor([[1.0] + [0.0] * 7])), a)
    assert algos.advantage("no_std") is algos.advantage("dr_grpo")


def test_all_equal_group_is_exactly_zero():
    r = torch.tensor([[0.1, 0.1, 0.1], [1.0, 0.0, 1.0]])
    for std in (True, False):
        a = algos.group_advantages(r, std_normalize=std)
        assert a[0].tolist() == [0.0, 0.0, 0.0]
        assert a[1].abs().sum() > 0


def test_demo_excluded_from_group_stats():
    # group [demo=1, 0, 0, 1], demo excluded: mean 1/3, unbiased std sqrt(1/3) = 0.57735
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    ids = torch.zeros(4, dtype=torch.long)
    inc = torch.tensor([False, True, True, True])
    a = algos.grouped_advantages(r, ids, std_normalize=False, include_in_stats=inc)
    assert a.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 2 / 3])
    s = algos.grouped_advantages(r, ids, std_normalize=True, eps=0.0, include_in_stats=inc)
    assert s.tolist() == pytest.approx([1.1547005, -0.5773503, -0.5773503, 1.1547005], rel=1e-6)
    # rollouts all wrong, demo right: the excluded demo keeps r - mean = 1 (no 1/eps blow-up)
    flat = algos.grouped_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), ids, std_normalize=True,
                                    include_in_stats=inc)
    assert flat.tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ShapeError, match="no member"):
        algos.grouped_advantages(r, ids, std_normalize=False,
                                 include_in_stats=torch.zeros(4, dtype=torch.bool))


def test_grouped_matches_group_advantages_and_skips_ungrouped_rows():
    torch.manual_seed(0)
    r = torch.rand(3, 4)
    flat = algos.grouped_advantages(r.reshape(-1), torch.arange(3).repeat_interleave(4), std_normalize=True)
    assert torch.allclose(flat.view(3, 4), algos.group_advantages(r, True))
    # an ungrouped row (id -1) gets 0 and does not enter the stats; ids need not be contiguous
    a = algos.grouped_advantages(torch.tensor([1.0, 0.0, 5.0, 2.0, 4.0]), torch.tensor([7, 7, -1, 2, 2]),
                                 std_normalize=False)
    assert a.tolist() == [0.5, -0.5, 0.0, -1.0, 1.0]
    assert algos.frac_zero_std(torch.tensor([1.0, 1.0, 0.0, 1.0, 3.0]), torch.tensor([0, 0, 1, 1, -1])) == 0.5

# ---------------------------------------------------------------- KL estimators (SPEC 1)


def test_kl_estimator_values():
    lp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    # d = ref - logp = -ln 2: k1 = ln 2 = 0.693147; k2 = 0.5 ln^2 2 = 0.240227; k3 = e^d - d - 1 = 0.193147
    assert algos.kl_estimate(lp, ref, "k1").item() == pytest.approx(0.6931472)
    assert algos.kl_estimate(lp, ref, "k2").item() == pytest.approx(0.2402265)
    assert algos.kl_estimate(lp, ref, "k3").item() == pytest.approx(0.1931472)


def test_kl_clamp_bounds_the_estimate_and_its_gradient():
    # d = ref - logp = 3: k3 = e^3 - 3 - 1 = 16.0855; clamp 10 -> 10 with no gradient (verl's low_var_kl)
    lp = torch.tensor([[0.0, 0.0]], requires_grad=True)
    ref = torch.tensor([[3.0, -0.5]])
    kl = algos.kl_estimate(lp, ref, "k3", clamp=10.0)
    assert kl[0, 0].item() == 10.0 and kl[0, 1].item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)
    kl.sum().backward()
    # d k3 / d logp = 1 - e^d: 0 where clamped, 1 - e^-0.5 = 0.393469 where not
    assert lp.grad[0].tolist() == pytest.approx([0.0, 1 - math.exp(-0.5)])
    assert algos.kl_estimate(lp, ref, "k3")[0, 0].item() == pytest.approx(math.exp(3) - 4)
    with pytest.raises(ConfigError, match="kl clamp"):
        algos.kl_estimate(lp, ref, "k3", clamp=0.0)


def test_k3_nonnegative_and_zero_when_equal():
    torch.manual_seed(1)
    lp, ref = -torch.rand(50, 7) * 5, -torch.rand(50, 7) * 5
    assert (algos.kl_estimate(lp, ref, "k3") >= 0).all()
    assert torch.equal(algos.kl_estimate(lp, lp, "k3"), torch.zeros(50, 7))
    with pytest.raises(ShapeError, match=r"ref_logp has shape \(50, 6\); expected \(50, 7\)"):
        algos.kl_estimate(lp, ref[:, :6], "k3")

# ---------------------------------------------------------------- aggregation (SPEC 1)


def _brute(loss, mask, mode, l_max):
    n, t = loss.shape
    rows = [[float(loss[i, j]) for j in range(t) if mask[i, j]] for i in range(n)]
    total = sum(sum(r) for r in rows)
    if mode == "token_mean":
        return total / sum(len(r) for r in rows)
    if mode == "seq_mean_token_mean":
        means = [sum(r) / len(r) for r in rows if r]
        return sum(means) / len(means)
    if mode == "seq_mean_token_sum_norm":
        return total / (n * l_max)
    return total / l_max


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm",
                                  "sum_over_lmax"])
@pytest.mark.parametrize("l_max", [None, 9])
def test_aggregation_matches_brute_force(mode, l_max):
    torch.manual_seed(2)
    loss = torch.randn(4, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    loss[0, 5] = float("nan")  # padding garbage must not leak
    got = algos.aggregate(loss, mask, mode, l_max=l_max)
    assert got.item() == pytest.approx(_brute(loss, mask, mode, l_max or 6), rel=1e-6)


def test_aggregation_errors():
    with pytest.raises(UnknownNameError, match="did you mean 'token_mean'"):
        algos.aggregate(torch.zeros(2, 3), torch.ones(2, 3), "token-mean")
    with pytest.raises(ShapeError, match=r"mask has shape \(2, 4\); expected \(2, 3\)"):
        algos.aggregate(torch.zeros(2, 3), torch.ones(2, 4), "token_mean")
    with pytest.raises(ShapeError, match="0/1"):
        algos.aggregate(torch.zeros(2, 3), torch.full((2, 3), 0.5), "token_mean")
    with pytest.raises(ShapeError, match="l_max"):
        algos.aggregate(torch.zeros(2, 3), torch.ones(2, 3), "sum_over_lmax", l_max=0)

# ---------------------------------------------------------------- entropy, NLL, demo weights


def test_entropy_matches_manual_softmax():
    torch.manual_seed(3)
    logits = torch.randn(2, 3, 5, dtype=torch.float64) * 3
    h = algos.entropy_from_logits(logits)
    for i in range(2):
        for t in range(3):
            z = [math.exp(float(v)) for v in logits[i, t]]
            p = [v / sum(z) for v in z]
            assert h[i, t].item() == pytest.approx(-sum(q * math.log(q) for q in p), rel=1e-10)
    # huge logits do not overflow; a -inf logit contributes 0: H = ln 2
    big = torch.tensor([[[1e4, 1e4, -float("inf")]]])
    assert algos.entropy_from_logits(big).item() == pytest.approx(math.log(2), rel=1e-6)


def test_sft_nll_and_luffy_shaping():
    lp = torch.tensor([[-1.0, -2.0, -50.0], [-3.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert algos.sft_nll(lp, m).item() == pytest.approx((1 + 2 + 3) / 3)
    # p = 0.5: 0.5 / 0.6 = 0.8333
    assert algos.luffy_shaping(torch.tensor(math.log(0.5))).item() == pytest.approx(0.5 / 0.6)


@pytest.mark.parametrize("name,value,grad", [
    # at p = 0.5 (logp = -ln 2): J and dJ/dlogp
    ("nll", -math.log(2), 1.0),
    ("dft", -0.5 * math.log(2), 0.5),                     # sg(p) logp, weight p
    ("chord_phi", -0.25 * math.log(2), 0.25),             # sg(p(1-p)) logp, weight p(1-p)
    ("luffy", 0.5 / 0.6, 0.1 * 0.5 / 0.6 ** 2),           # p/(p+g), d/dlogp = g p / (p+g)^2
    ("trapo", 1.0, 1.0),                                  # p/sg(max(p, 0.1)) = 1, weight 1
])
def test_demo_weights(name, value, grad):
    lp = torch.tensor(math.log(0.5), requires_grad=True)
    j = algos.demo_objective(name, lp, gamma=0.1, alpha=0.1)
    j.backward()
    assert j.item() == pytest.approx(value) and lp.grad.item() == pytest.approx(grad)


def test_trapo_downweights_rare_tokens():
    # p = 0.05 < alpha = 0.1: J = 0.05 / 0.1 = 0.5 and weight 0.5
    lp = torch.tensor(math.log(0.05), requires_grad=True)
    j = algos.demo_weight("trapo")(lp, alpha=0.1)
    j.backward()
    assert j.item() == pytest.approx(0.5) and lp.grad.item() == pytest.approx(0.5)

# ---------------------------------------------------------------- mixing schedules (axis 3)


def test_mix_schedules():
    assert algos.mix_schedule("constant")(0.3) == 1.0
    assert algos.mix_schedule("constant")(5, 10, value=0.2) == 0.2
    wc = algos.mix_schedule("warmup_cosine")
    # no warm-up: peak 0.9 at 0, valley 0.05 at the end, 0.05 + 0.85 * 0.5 = 0.475 half way
    assert (wc(0.0), wc(0.5), wc(1.0)) == pytest.approx((0.9, 0.475, 0.05))
    # 20 % warm-up of 100 steps: 0.9 * 10/20 = 0.45 at step 10, peak at 20, 0.475 at 60
    kw = dict(warmup_frac=0.2)
    assert [wc(s, 100, **kw) for s in (10, 20, 60, 100)] == pytest.approx([0.45, 0.9, 0.475, 0.05])
    # decay over 40 % of the steps after the warm-up: half way at 40, valley from 60 on
    kw = dict(warmup_frac=0.2, decay_frac=0.4)
    assert [wc(s, 100, **kw) for s in (40, 60, 90)] == pytest.approx([0.475, 0.05, 0.05])
    with pytest.raises(ConfigError, match="step 11"):
        wc(11, 10)
