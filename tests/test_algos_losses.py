"""duotune.algos losses: PPO clip, LUFFY mixed-policy loss, SRFT (values, gradient signs), shape errors.

Expectations are closed forms written in the comments, or a direct loop re-implementation (SRFT).
"""

from __future__ import annotations

import math

import pytest
import torch

from duotune import algos
from duotune.errors import ConfigError, ShapeError

# ---------------------------------------------------------------- PPO clip (SPEC 1)


def _ppo_case():
    # ratios rho = [1.5, 0.5, 1.0, 1.1] with A = [+1, -1, +1, -1], eps 0.2
    old = torch.full((1, 4), -1.0)
    logp = (old + torch.log(torch.tensor([[1.5, 0.5, 1.0, 1.1]]))).requires_grad_()
    return logp, old, torch.tensor([[1.0, -1.0, 1.0, -1.0]])


def test_ppo_clip_values_fractions_and_gradients():
    logp, old, adv = _ppo_case()
    loss, m = algos.ppo_clip_loss(logp, old, adv, torch.ones(1, 4))
    # -min(1.5, 1.2) = -1.2 | -min(-0.5, -0.8) = 0.8 | -1.0 | -min(-1.1, -1.1) = 1.1
    assert loss[0].tolist() == pytest.approx([-1.2, 0.8, -1.0, 1.1])
    assert m["clip_frac_high"] == 0.25 and m["clip_frac_low"] == 0.25
    assert m["approx_kl"] == pytest.approx(-(math.log(1.5) + math.log(0.5) + math.log(1.1)) / 4)
    loss.sum().backward()
    # clipped tokens get no gradient; unclipped: d(-rho*A)/dlogp = -rho*A = -1.0 and +1.1
    assert logp.grad[0].tolist() == pytest.approx([0.0, 0.0, -1.0, 1.1])


def test_ppo_clip_high_row_advantages_mask_and_dual_clip():
    logp, old, adv = _ppo_case()
    # DAPO clip-higher 0.28: token 0 becomes -min(1.5, 1.28) = -1.28; row advantages [N] broadcast
    loss, _ = algos.ppo_clip_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 4), eps_high=0.28)
    assert loss[0, 0].item() == pytest.approx(-1.28)
    # a masked token with garbage logp gives 0 loss and leaves the clip fractions to the others
    lp = logp.detach().clone()
    lp[0, 1] = 100.0
    loss, m = algos.ppo_clip_loss(lp, old, adv, torch.tensor([[1, 0, 1, 1]]))
    assert loss[0, 1].item() == 0.0 and m["clip_frac_high"] == pytest.approx(1 / 3)
    assert m["clip_frac_low"] == 0.0
    # rho = 0.5 with A = +1 is not clipped from below (min picks 0.5 * A): loss -0.5, no low clip
    loss, m = algos.ppo_clip_loss(torch.tensor([[math.log(0.5)]]), torch.zeros(1, 1), torch.tensor([1.0]),
                                  torch.ones(1, 1))
    assert loss.item() == pytest.approx(-0.5) and m["clip_frac_low"] == 0.0
    # dual clip c = 3, rho = 4, A = -1: plain loss -min(-4, -1.2) = 4, bounded by -c*A = 3
    lp4 = torch.tensor([[math.log(4.0)]])
    loss, m = algos.ppo_clip_loss(lp4, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1),
                                  dual_clip=3.0)
    assert loss.item() == pytest.approx(3.0) and m["dual_clip_frac"] == 1.0
    with pytest.raises(ConfigError, match="dual_clip"):
        algos.ppo_clip_loss(lp4, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1), dual_clip=0.5)


def test_ppo_log_ratio_clamp():
    # logp - old = 30 would give rho = e^30; clamp 20 (verl) gives rho = e^20, and the unclipped loss
    # (eps inf) is -e^20 * A with A = 1; a log-ratio inside the bound is untouched
    lp = torch.tensor([[30.0, 0.5]])
    inf = float("inf")
    loss, m = algos.ppo_clip_loss(lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2),
                                  eps_low=inf, eps_high=inf, log_ratio_clamp=20.0)
    assert loss[0, 0].item() == pytest.approx(-math.exp(20), rel=1e-6)
    assert loss[0, 1].item() == pytest.approx(-math.exp(0.5), rel=1e-6)
    assert m["approx_kl"] == pytest.approx(-(20 + 0.5) / 2)
    with pytest.raises(ConfigError, match="log_ratio_clamp"):
        algos.ppo_clip_loss(lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), log_ratio_clamp=-1.0)

# ---------------------------------------------------------------- LUFFY mixed policy (SPEC 5)


def test_mixed_policy_loss_demo_shaped_rollout_unclipped():
    # row 0 = demo (p = 0.5, A = 0.875), row 1 = rollout with rho = 1.5, A = -0.125
    logp = torch.tensor([[math.log(0.5), math.log(0.5)], [math.log(0.3), 0.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0], [math.log(0.2), 0.0]])
    adv, mask = torch.tensor([0.875, -0.125]), torch.tensor([[1, 1], [1, 0]])
    loss, m = algos.mixed_policy_loss(logp, old, adv, mask, torch.tensor([True, False]))
    # demo: -0.875 * 0.5/0.6 = -0.729167; rollout (no clip): -1.5 * -0.125 = 0.1875
    assert loss.flatten().tolist() == pytest.approx([-0.875 / 1.2, -0.875 / 1.2, 0.1875, 0.0])
    assert m["demo_p_mean"] == pytest.approx(0.5) and m["demo_token_frac"] == pytest.approx(2 / 3)
    loss.sum().backward()
    # d/dlogp of -A p/(p+g) = -A g p/(p+g)^2 = -0.875 * 0.05/0.36; rollout: -rho*A = 0.1875
    assert logp.grad.flatten().tolist() == pytest.approx([-0.875 * 0.05 / 0.36] * 2 + [0.1875, 0.0])
    # clip on: rho = 1.5 with A < 0 is not clipped from above (min picks -1.5*A) -> unchanged
    clipped, mc = algos.mixed_policy_loss(logp, old, adv, mask, torch.tensor([True, False]), clip=True)
    assert clipped[1, 0].item() == pytest.approx(0.1875)
    assert mc["clip_frac_high"] == 0.0 and mc["clip_frac_low"] == 0.0  # rho > 1.2 but A < 0
    # a per-token demo mask equal to the row flags gives the same loss; demo_weight=nll gives -A*logp
    tok, _ = algos.policy_loss("luffy")(logp, old, adv, mask, torch.tensor([[1, 1], [0, 0]]))
    assert torch.equal(tok, loss)
    nll, _ = algos.mixed_policy_loss(logp, old, adv, mask, torch.tensor([True, False]), demo_weight="nll")
    assert nll[0, 0].item() == pytest.approx(-0.875 * math.log(0.5))  # = +0.6065


def test_mixed_policy_loss_clip_applies_to_rollouts_only():
    logp = torch.log(torch.tensor([[0.9], [0.9]]))
    old = torch.log(torch.tensor([[0.5], [0.5]]))  # rho = 1.8 on both rows
    loss, m = algos.mixed_policy_loss(logp, old, torch.tensor([1.0, 1.0]), torch.ones(2, 1),
                                      torch.tensor([True, False]), clip=True)
    # demo: -0.9/1.0 (no clip even though "rho" would be 1.8); rollout: -min(1.8, 1.2) = -1.2
    assert loss[:, 0].tolist() == pytest.approx([-0.9, -1.2])
    assert m["clip_frac_high"] == 1.0

# ---------------------------------------------------------------- SRFT (SPEC 6)


def _srft_case():
    torch.manual_seed(4)
    logp = (-torch.rand(4, 3, dtype=torch.float64) * 3).requires_grad_()
    ent = (torch.rand(4, 3, dtype=torch.float64) * 2).requires_grad_()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    return dict(logp=logp, token_entropy=ent, mask=mask, is_demo=torch.tensor([True, False, False, False]),
                rewards=torch.tensor([1.0, 1.0, 0.0, 1.0]), advantages=torch.tensor([0.5, 0.5, -0.5, 0.5]),
                l_max=5)


def _srft_direct(logp, token_entropy, mask, is_demo, rewards, advantages, l_max, sign, granularity,
                 sft_coef=0.5, rl_coef=0.1, gamma=0.1, ent_coef=0.001):
    """SPEC 6 written out with Python loops over tokens."""
    lp, h = logp.tolist(), token_entropy.tolist()
    toks = {i: [t for t in range(len(lp[i])) if mask[i][t]] for i in range(len(lp))}
    demo = [(i, t) for i in toks if is_demo[i] for t in toks[i]]
    hbar = {i: sum(h[i][t] for t in toks[i]) / len(toks[i]) for i in toks}
    h_batch = sum(h[i][t] for i, t in demo) / len(demo)
    w = {"sequence": lambda i, t: hbar[i], "token": lambda i, t: h[i][t], "batch": lambda i, t: h_batch}
    l_sft = sum(sft_coef * math.exp(sign * w[granularity](i, t)) * -lp[i][t] for i, t in demo) / len(demo)
    terms = 0.0
    for i in toks:
        for t in toks[i]:
            p = math.exp(lp[i][t])
            if is_demo[i]:
                terms += -float(advantages[i]) * p / (p + gamma)
            elif rewards[i] == 1:
                terms += -rl_coef * math.exp(hbar[i]) * lp[i][t]
            else:
                terms += lp[i][t]
    all_h = [h[i][t] for i in toks for t in toks[i]]
    return l_sft + terms / l_max - ent_coef * sum(all_h) / len(all_h)


@pytest.mark.parametrize("sign", [-1, 1])
@pytest.mark.parametrize("granularity", ["sequence", "token", "batch"])
def test_srft_value_matches_direct_implementation(sign, granularity):
    case = _srft_case()
    loss, m = algos.srft_loss(**case, sft_weight_sign=sign, entropy_granularity=granularity)
    assert loss.item() == pytest.approx(_srft_direct(**case, sign=sign, granularity=granularity), rel=1e-12)
    assert m["loss"] == pytest.approx(loss.item())
    # the same batch with a per-token demo mask gives the same loss
    tok = dict(case, is_demo=case["is_demo"][:, None].expand(4, 3))
    loss_tok, _ = algos.srft_loss(**tok, sft_weight_sign=sign, entropy_granularity=granularity)
    assert loss_tok.item() == pytest.approx(loss.item(), rel=1e-12)


def test_srft_gradient_signs_and_weights():
    case = _srft_case()
    loss, m = algos.srft_loss(**case)
    loss.backward()
    g, h = case["logp"].grad, case["token_entropy"].detach()
    hbar1, hbar3 = h[1, :2].mean().item(), h[3, 0].item()
    # correct rollout (r = 1): d/dlogp = -0.1 exp(H_bar)/l_max < 0, so descent pushes logp up
    assert g[1, :2].tolist() == pytest.approx([-0.1 * math.exp(hbar1) / 5] * 2)
    assert g[3, 0].item() == pytest.approx(-0.1 * math.exp(hbar3) / 5)
    # incorrect rollout (r = 0): +1/l_max, pushed down
    assert g[2].tolist() == pytest.approx([1 / 5] * 3)
    # demo tokens: -w_sft/3 - A g p/(p+g)^2 / l_max, with w_sft = 0.5 exp(-H_bar_demo); pushed up
    w_sft = 0.5 * math.exp(-h[0].mean().item())
    p = case["logp"].detach()[0].exp()
    want = -w_sft / 3 - 0.5 * 0.1 * p / (p + 0.1) ** 2 / 5
    assert g[0].tolist() == pytest.approx(want.tolist()) and (g[0] < 0).all()
    # padding gets no gradient; the entropy bonus adds -0.001 / 9 valid tokens to each H
    assert g[1, 2].item() == 0.0 and g[3, 1:].tolist() == [0.0, 0.0]
    assert case["token_entropy"].grad[0, 0].item() == pytest.approx(-0.001 / 9)
    assert m["w_sft"] == pytest.approx(w_sft)
    assert m["w_rl"] == pytest.approx((0.1 * math.exp(hbar1) + 0.1 * math.exp(hbar3)) / 2)
    assert m["entropy_on_policy"] == pytest.approx((h[1, :2].sum() + h[2].sum() + h[3, 0]).item() / 6)


def test_srft_bad_input():
    case = _srft_case()
    with pytest.raises(ConfigError, match=r"rewards\[2\] = 0.5"):
        algos.srft_loss(**dict(case, rewards=torch.tensor([1.0, 1.0, 0.5, 1.0])))
    with pytest.raises(ShapeError, match=r"is_demo has shape \(3,\); expected \(4,\) \[N\] or \(4, 3\)"):
        algos.srft_loss(**dict(case, is_demo=torch.tensor([True, False, False])))
    with pytest.raises(ConfigError, match="entropy_granularity 'seq'"):
        algos.srft_loss(**case, entropy_granularity="seq")
    with pytest.raises(ConfigError, match="sft_weight_sign"):
        algos.srft_loss(**case, sft_weight_sign=0)
    # demo rewards are not checked (only the advantage enters the demo terms)
    algos.srft_loss(**dict(case, rewards=torch.tensor([0.7, 1.0, 0.0, 1.0])))

# ---------------------------------------------------------------- shape errors


def test_shape_errors_name_the_argument_and_expected_shape():
    lp = torch.zeros(2, 3)
    with pytest.raises(ShapeError, match=r"advantages has shape \(3,\); expected \(2,\) \[N\] or \(2, 3\)"):
        algos.ppo_clip_loss(lp, lp, torch.zeros(3), torch.ones(2, 3))
    with pytest.raises(ShapeError, match=r"old_logp has shape \(2, 4\); expected \(2, 3\)"):
        algos.ppo_clip_loss(lp, torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ShapeError, match=r"mask has shape \(3, 2\); expected \(2, 3\)"):
        algos.sft_nll(lp, torch.ones(3, 2))
    with pytest.raises(ShapeError, match=r"logp has shape \(6,\); expected 2 dimensions \[N, T\]"):
        algos.sft_nll(torch.zeros(6), torch.ones(6))
    with pytest.raises(ShapeError, match=r"rewards has shape \(8,\); expected 2 dimensions \[B, G\]"):
        algos.group_advantages(torch.zeros(8), True)
    with pytest.raises(ShapeError, match=r"group_ids has shape \(3,\); expected \(4,\)"):
        algos.grouped_advantages(torch.zeros(4), torch.zeros(3), std_normalize=False)
    with pytest.raises(ShapeError, match=r"token_entropy has shape \(2, 2\); expected \(2, 3\)"):
        algos.srft_loss(lp, torch.zeros(2, 2), torch.ones(2, 3), torch.tensor([True, False]),
                        torch.zeros(2), torch.zeros(2), 3)
