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


def test_fraction_targets_lie_between_base_and_the_reference():
    from duotune.analysis.time_to_accuracy import fraction_target

    assert fraction_target(0.40, 0.80, 0.5) == pytest.approx(0.60)
    assert fraction_target(0.40, 0.80, 0.9) == pytest.approx(0.76)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        fraction_target(0.4, 0.8, 0.0)


def test_seed_times_and_their_ratio_interval():
    from duotune.analysis.time_to_accuracy import SeedTime, ratio_interval, seed_time

    assert seed_time(CURVES["srft"], 0.60) == SeedTime(120.0, True)
    assert seed_time(CURVES["grpo"], 0.60) == SeedTime(200.0, False)  # censored at its last point
    # identical seeds on each side: the interval collapses onto the ratio of means, 300 / 120
    r = ratio_interval([SeedTime(300.0, True)] * 3, [SeedTime(120.0, True)] * 2)
    assert r == {"ratio": pytest.approx(2.5), "low": pytest.approx(2.5), "high": pytest.approx(2.5), "censored": []}
    # two seeds a side: the bootstrap ratios are (mean of a draw) / (mean of a draw); the extremes are
    # 200/150 and 400/100, the middle draws give 300 / 125 = 2.4
    r = ratio_interval([SeedTime(200.0, True), SeedTime(400.0, False)], [SeedTime(100.0, True), SeedTime(150.0, True)],
                       reps=20000)
    assert r["ratio"] == pytest.approx(2.4) and r["censored"] == ["numerator"]
    assert r["low"] == pytest.approx(200 / 150) and r["high"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="0 training seconds"):
        ratio_interval([SeedTime(1.0, True)], [SeedTime(0.0, True)])


def test_report_seed_targets_by_hand():
    """base 0.40 -> sft_then_grpo's final mean 0.80 (seeds 0.78, 0.82): targets 0.60 and 0.76; SRFT's two
    seeds reach 0.60 at 50 s and 70 s and 0.76 once (100 s; the other seed is censored at 120 s)."""
    from duotune.analysis.compare_config import CompareConfig
    from duotune.analysis.report import seed_targets

    def run(method, seed, pts):
        return {"method": method, "seed": seed, "status": "done",
                "curve": [{"step": s, "wall_s": w, "evals": {"a": {"accuracy": acc}}} for s, w, acc in pts]}

    results = [run("base", s, [(0, 0.0, 0.40)]) for s in (0, 1)] + [
        run("sft_then_grpo", 0, [(0, 0.0, 0.40), (5, 100.0, 0.60), (10, 200.0, 0.78)]),
        run("sft_then_grpo", 1, [(0, 0.0, 0.40), (5, 110.0, 0.50), (10, 220.0, 0.82)]),
        run("srft", 0, [(0, 0.0, 0.40), (5, 50.0, 0.65), (10, 100.0, 0.77)]),
        run("srft", 1, [(0, 0.0, 0.40), (5, 70.0, 0.60), (10, 120.0, 0.70)])]
    cfg = CompareConfig.model_validate({
        "methods": ["base", "sft_then_grpo", "srft"], "seeds": [0, 1], "data": {"generate": {"n": 4}},
        "eval_sets": [{"name": "a", "generate": {"n": 4, "split": "test"}}],
        "budget": {"steps": 10, "prompts_per_step": 1, "samples_per_prompt": 2}, "eval": {"every": 5}})
    t50, t90 = seed_targets(results, cfg)
    assert (t50["target"], t90["target"]) == (pytest.approx(0.60), pytest.approx(0.76))
    assert t50["methods"]["srft"] == {"reached": 2, "seeds": 2, "mean_wall_s": 60.0}
    assert t50["methods"]["sft_then_grpo"] == {"reached": 2, "seeds": 2, "mean_wall_s": (100.0 + 220.0) / 2}
    assert t50["ratio"]["ratio"] == pytest.approx(160.0 / 60.0) and t50["ratio"]["censored"] == []
    # draws range from 100/70 = 1.43 to 220/50 = 4.4, each extreme with probability 1/16: 2.28 lies inside
    assert t50["ratio"]["low"] == pytest.approx(100 / 70) and t50["ratio"]["high"] == pytest.approx(4.4)
    assert t50["ratio"]["claim"] == 2.28 and t50["ratio"]["verdict"] == "inconclusive"
    assert t90["methods"]["srft"] == {"reached": 1, "seeds": 2, "mean_wall_s": 110.0}
    assert t90["ratio"]["censored"] == ["denominator"]
    # 210 s / (100 s, 120 s censored): draws range from 200/120 to 220/100 = 2.2 < 2.28; a censored
    # denominator makes the ratio an upper bound, which may refute the claim
    assert t90["ratio"]["ratio"] == pytest.approx(210.0 / 110.0) and t90["ratio"]["high"] == pytest.approx(2.2)
    assert t90["ratio"]["verdict"] == "did not hold"
    assert seed_targets([r for r in results if r["method"] != "base"], cfg) == []


def test_claim_verdict_respects_censoring():
    """Ratio interval [3, 4] against a claim of 2.28: held when uncensored or when only the numerator is
    censored (the true ratio is even larger); inconclusive when the denominator is (it may be smaller)
    or both are. [1, 2]: did not hold unless the numerator is censored (it may be larger)."""
    from duotune.analysis.report import claim_verdict

    assert claim_verdict(3.0, 4.0, [], 2.28) == "held"
    assert claim_verdict(3.0, 4.0, ["numerator"], 2.28) == "held"
    assert claim_verdict(3.0, 4.0, ["denominator"], 2.28) == "inconclusive"
    assert claim_verdict(3.0, 4.0, ["numerator", "denominator"], 2.28) == "inconclusive"
    assert claim_verdict(1.0, 2.0, [], 2.28) == "did not hold"
    assert claim_verdict(1.0, 2.0, ["denominator"], 2.28) == "did not hold"
    assert claim_verdict(1.0, 2.0, ["numerator"], 2.28) == "inconclusive"
    assert claim_verdict(2.0, 3.0, [], 2.28) == "inconclusive"


def test_report_says_why_a_ratio_is_missing():
    """Regime (a)'s report printed "wall time n/a, steps n/a" for one target SRFT never reached: the
    line now names the method that did not reach it and points at the seed-by-seed sections."""
    from duotune.analysis.compare_config import CompareConfig
    from duotune.analysis.report import markdown

    cfg = CompareConfig.model_validate({
        "methods": ["sft_then_grpo", "srft"], "seeds": [0], "data": {"generate": {"n": 4}},
        "eval_sets": [{"name": "a", "generate": {"n": 4, "split": "test"}}],
        "budget": {"steps": 10, "prompts_per_step": 1, "samples_per_prompt": 2}, "eval": {"every": 5}})
    tta = {"eval_set": "a", "target": 0.768, "methods": {"sft_then_grpo": {"step": 5, "wall_s": 100.0}, "srft": None},
           "ratio": {"numerator": "sft_then_grpo", "denominator": "srft", "wall_time": None, "steps": None}}
    md = markdown({"methods": {}, "time_to_accuracy": tta, "plots": []}, cfg)
    assert ("Ratio sft_then_grpo / srft: none, since srft did not reach 76.8 % (SRFT paper: 2.28); the "
            "seed-by-seed sections below bound it." in md) and "n/a" not in md
    tta["methods"]["srft"] = {"step": 10, "wall_s": 50.0}
    tta["ratio"].update(wall_time=2.0, steps=0.5)
    md = markdown({"methods": {}, "time_to_accuracy": tta, "plots": []}, cfg)
    assert "Ratio sft_then_grpo / srft: wall time 2.00, steps 0.50 (SRFT paper: 2.28)." in md
