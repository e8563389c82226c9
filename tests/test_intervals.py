"""The bootstrap intervals of `analysis.intervals` against closed forms: a constant score has a
zero-width interval, one seed of binary items matches the binomial standard error, a paired difference
of identical methods is exactly 0, pairing cancels item difficulty that two separate intervals keep,
seeds' spread widens the interval, and the verdict is read off the interval only."""

import math

import numpy as np
import pytest

from duotune.analysis.intervals import bootstrap_interval, paired_bootstrap, verdict, wilson_interval


def test_constant_scores_have_a_zero_width_interval():
    assert bootstrap_interval([[1.0] * 50, [1.0] * 50]) == (1.0, 1.0, 1.0)
    assert bootstrap_interval([[0.0] * 7]) == (0.0, 0.0, 0.0)


def test_one_seed_of_binary_items_matches_the_binomial_standard_error():
    n, k = 400, 120  # p = 0.3: SE = sqrt(p (1 - p) / n) = 0.02291
    items = [[1.0] * k + [0.0] * (n - k)]
    mean, lo, hi = bootstrap_interval(items, reps=20000)
    se = math.sqrt(0.3 * 0.7 / n)
    assert mean == 0.3
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.05)
    w_lo, w_hi = wilson_interval(0.3, n)
    assert lo == pytest.approx(w_lo, abs=0.01) and hi == pytest.approx(w_hi, abs=0.01)


def test_spread_between_seeds_widens_the_interval():
    one = [[1.0] * 30 + [0.0] * 70] * 2  # two seeds, same items right
    two = [[1.0] * 10 + [0.0] * 90, [1.0] * 50 + [0.0] * 50]  # same mean 0.3, seeds disagree
    _, lo1, hi1 = bootstrap_interval(one)
    _, lo2, hi2 = bootstrap_interval(two)
    assert hi2 - lo2 > 1.5 * (hi1 - lo1)


def test_paired_difference_of_identical_methods_is_exactly_zero():
    rng = np.random.default_rng(1)
    x = (rng.random((1, 60)) < 0.5).astype(float).tolist()
    assert paired_bootstrap(x, x) == {"diff": 0.0, "low": 0.0, "high": 0.0, "verdict": "inconclusive"}


def test_pairing_cancels_item_difficulty():
    """A solves every item B solves plus 8 more of 100: the paired interval of A - B lies above 0
    (held), while A's and B's own intervals overlap."""
    b = [[1.0] * 40 + [0.0] * 60]
    a = [[1.0] * 48 + [0.0] * 52]
    d = paired_bootstrap(a, b, reps=10000)
    assert d["diff"] == pytest.approx(0.08)
    assert 0 < d["low"] < 0.08 < d["high"] and d["verdict"] == "held"
    _, a_lo, _ = bootstrap_interval(a)
    _, _, b_hi = bootstrap_interval(b)
    assert a_lo < b_hi  # unpaired, the two intervals overlap
    assert paired_bootstrap(b, a, reps=10000)["verdict"] == "did not hold"


def test_paired_needs_the_same_items_and_is_deterministic():
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap([[1.0, 0.0]], [[1.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="seeds x items"):
        bootstrap_interval([])
    a, b = [[1, 0, 1, 1, 0, 1]], [[0, 0, 1, 0, 0, 1], [1, 0, 0, 0, 0, 1]]
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)


def test_verdict_reads_the_interval_not_the_point():
    assert verdict(0.01, 0.2) == "held"
    assert verdict(-0.2, -0.001) == "did not hold"
    assert verdict(-0.01, 0.3) == "inconclusive" and verdict(0.0, 0.3) == "inconclusive"


def test_permutation_test_exact_p_values():
    from duotune.analysis.intervals import permutation_greater

    assert permutation_greater([3, 4, 5], [0, 1, 2]) == pytest.approx(1 / 20)  # the smallest 3 v 3 p
    assert permutation_greater([0, 1, 2], [3, 4, 5]) == 1.0
    # 2 v 1: relabellings {a,b}: (5,1)=3 >= 3, (5,0)=2.5, (1,0)=0.5 -> 1 of 3
    assert permutation_greater([5, 1], [0]) == pytest.approx(1 / 3)


def test_spearman_closed_forms_and_interval():
    from duotune.analysis.intervals import spearman, spearman_interval

    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties take their average rank: x ranks (1.5, 1.5, 3, 4), y ranks (1, 2, 3, 4): r = 0.9487
    assert spearman([5, 5, 6, 7], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
    rng = np.random.default_rng(0)
    x = rng.random(200)
    r = spearman_interval(x, x + 0.01 * rng.random(200))
    assert r["rho"] > 0.99 and r["low"] > 0.98 and r["n"] == 200
    r = spearman_interval(x, rng.random(200))
    assert r["low"] < 0 < r["high"]  # independent: the interval contains 0
    with pytest.raises(ValueError, match=">= 3 paired"):
        spearman_interval([1, 2], [1, 2])
