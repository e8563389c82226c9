"""duotune.algos.rollout_correction: truncated importance sampling and the mismatch metrics.

Every expectation is a closed-form value written out in the comments.
"""

from __future__ import annotations

import math

import pytest
import torch

from duotune import algos
from duotune.errors import ConfigError, ShapeError, UnknownNameError

LN2, LN3 = math.log(2.0), math.log(3.0)


def _case():
    # Row 0: ratios exp(0) = 1, exp(-ln 2) = 1/2, exp(ln 3) = 3 (clipped to C = 2), one padding slot.
    # Row 1: a demo row (mask 0 everywhere): its rollout_logp is 0, the trainer's is anything.
    train = torch.tensor([[-1.0, -2.0 - LN2, -0.5 + LN3, 7.0], [-3.0, -4.0, -5.0, -6.0]])
    rollout = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]])
    return train, rollout, mask


def test_tis_weights_are_truncated_ratios_and_one_off_the_mask():
    train, rollout, mask = _case()
    w, met = algos.rollout_correction("tis", train, rollout, mask)
    expected = torch.tensor([[1.0, 0.5, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(w, expected)
    # |diff| over the 3 masked tokens: 0, ln 2, ln 3 -> mean (ln 2 + ln 3) / 3 = ln 6 / 3, max ln 3
    assert met["logp_diff_mean"] == pytest.approx(math.log(6.0) / 3)
    assert met["logp_diff_max"] == pytest.approx(LN3)
    assert met["is_weight_mean"] == pytest.approx((1 + 0.5 + 2) / 3)
    assert met["is_clip_frac"] == pytest.approx(1 / 3)


def test_cap_is_a_parameter_and_must_be_positive():
    train, rollout, mask = _case()
    w, met = algos.truncated_is(train, rollout, mask, cap=5.0)  # 3 < 5: nothing clipped
    assert w[0, 2].item() == pytest.approx(3.0) and met["is_clip_frac"] == 0.0
    w, _ = algos.truncated_is(train, rollout, mask, cap=0.25)  # every masked ratio capped at 1/4
    torch.testing.assert_close(w[0, :3], torch.full((3,), 0.25))
    with pytest.raises(ConfigError, match="cap must be > 0"):
        algos.truncated_is(train, rollout, mask, cap=0.0)


def test_weights_are_detached_from_the_trainer_logp():
    train, rollout, mask = _case()
    train = train.clone().requires_grad_(True)
    w, _ = algos.truncated_is(train, rollout, mask)
    assert not w.requires_grad
    # Used as a weight, the gradient of sum(w * logp) is w itself (no d w / d logp term).
    (w * train).sum().backward()
    torch.testing.assert_close(train.grad, w)


def test_none_gives_unit_weights_but_still_measures():
    train, rollout, mask = _case()
    w, met = algos.rollout_correction("none", train, rollout, mask)
    assert torch.equal(w, torch.ones_like(train))
    assert met["logp_diff_max"] == pytest.approx(LN3) and met["is_clip_frac"] == 0.0
    assert met["is_weight_mean"] == 1.0


def test_padding_garbage_cannot_overflow():
    # A huge value off the mask would give exp(1000) = inf; it must never reach the weights.
    train = torch.tensor([[-1.0, 1000.0]])
    rollout = torch.tensor([[-1.5, -1000.0]])
    w, met = algos.truncated_is(train, rollout, torch.tensor([[1, 0]]))
    torch.testing.assert_close(w, torch.tensor([[math.exp(0.5), 1.0]]))
    assert met["logp_diff_max"] == pytest.approx(0.5)


def test_empty_mask_gives_zero_metrics():
    z = torch.zeros(2, 3)
    _, met = algos.truncated_is(z, z, torch.zeros(2, 3))
    assert met == {"logp_diff_mean": 0.0, "logp_diff_max": 0.0, "is_weight_mean": 0.0, "is_clip_frac": 0.0}


def test_shape_and_name_errors():
    train, rollout, mask = _case()
    with pytest.raises(ShapeError, match="rollout_logp has shape"):
        algos.truncated_is(train, rollout[:, :2], mask)
    with pytest.raises(ShapeError, match="mask must hold only 0/1"):
        algos.truncated_is(train, rollout, mask * 2)
    with pytest.raises(UnknownNameError):
        algos.rollout_correction("seq_is", train, rollout, mask)
    assert algos.ROLLOUT_CORRECTIONS.names() == ["none", "tis"]
