"""Time-to-accuracy on synthetic curves equals a hand computation."""

import pytest

from duotune.analysis.time_to_accuracy import CurvePoint as P
from duotune.analysis.time_to_accuracy import default_target, time_to_accuracy_table, time_to_target

CURVES = {
    # SFT->GRPO: 10 SFT steps then GRPO; best accuracy 0.60 reached at step 30, 300 s.
    "sft_then_grpo": [P(0, 0.0, 0.20), P(10, 80.0, 0.40), P(20, 190.0, 0.55), P(30, 300.0, 0.60)],
    # SRFT reaches 0.60 first at step 15 (120 s); 0.58 at step 10 does not count.
    "srft": [P(0, 0.0, 0.20), P(10, 75.0, 0.58), P(15, 120.0, 0.61), P(20, 160.0, 0.60)],
    "grpo": [P(0, 0.0, 0.20), P(30, 200.0, 0.45)],
}


def test_default_target_is_best_of_reference():
    assert default_target(CURVES) == 0.60
    assert default_target({"a": [P(1, 1.0, 0.3)]}, reference="missing") == 0.3


def test_time_to_target_first_crossing_no_interpolation():
    assert time_to_target(CURVES["srft"], 0.60).step == 15
    assert time_to_target(CURVES["srft"], 0.60).wall_s == 120.0
    assert time_to_target(CURVES["grpo"], 0.60) is None


def test_ratio_matches_hand_computation():
    t = time_to_accuracy_table(CURVES, 0.60)
    # wall: 300 / 120 = 2.5; steps: 30 / 15 = 2.0
    assert t["ratio"]["wall_time"] == pytest.approx(2.5)
    assert t["ratio"]["steps"] == pytest.approx(2.0)
    assert t["methods"]["grpo"] is None
    assert t["methods"]["sft_then_grpo"] == {"step": 30, "wall_s": 300.0}
