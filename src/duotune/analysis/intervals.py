"""95 % intervals for accuracies measured on a finite held-out set.

- `wilson_interval`: Wilson (1927), "Probable inference, the law of succession, and statistical
  inference", JASA 22: for k correct of n, the interval of p where |k/n - p| <= z sqrt(p(1-p)/n). Unlike
  the normal (Wald) interval it stays inside [0, 1] and is not empty at 0 or n correct. Items only.
- `bootstrap_interval` / `paired_bootstrap`: percentile bootstrap over the held-out items and the seeds
  (each replicate redraws the seeds with replacement and the items with replacement), so both sources of
  spread count. A paired difference draws the same items for both methods (their seeds independently):
  item difficulty, shared by the two, cancels, which is what makes a paired test sharper than two
  overlapping intervals. `verdict` reads a claim "A > B" off the interval, never off the point estimate.
  numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 % quantile of the standard normal


def wilson_interval(accuracy: float, n: int, *, z: float = Z95, percent: bool = False) -> tuple[float, float]:
    """(low, high) of the Wilson interval for `accuracy` = k / n; in % when `percent`.

    accuracy may be a mean over seeds or samples of the same n items: the interval then describes the
    uncertainty from the finite item set (n), which is what separates methods evaluated on it."""
    if n < 1:
        raise ValueError(f"wilson_interval needs n >= 1 items (got {n})")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1] (got {accuracy})")
    z2 = z * z
    centre = (accuracy + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n))
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (100 * lo, 100 * hi) if percent else (lo, hi)


def _matrix(per_seed_items: Sequence[Sequence[float]]) -> np.ndarray:
    x = np.asarray(per_seed_items, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"per-item scores must be seeds x items with at least one of each (got shape {x.shape})")
    return x


def _replicates(x: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of one method: items weighted by their draw counts (shared), seeds redrawn."""
    per_seed = counts @ x.T / x.shape[1]  # (reps, seeds): each seed's mean over the drawn items
    pick = rng.integers(0, x.shape[0], size=per_seed.shape)  # seeds drawn with replacement
    return np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)


def _item_counts(n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=reps).astype(np.float64)


def bootstrap_interval(per_seed_items: Sequence[Sequence[float]], *, reps: int = 4000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of a method's accuracy from its per-item scores, one row per seed (same items in
    the same order), by the percentile bootstrap over items and seeds; deterministic in `seed`."""
    x = _matrix(per_seed_items)
    rng = np.random.default_rng(seed)
    boot = _replicates(x, _item_counts(x.shape[1], reps, rng), rng)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(lo), float(hi)


def verdict(low: float, high: float) -> str:
    """The claim "A > B" from the interval of A - B: `held` when it lies above 0, `did not hold` when
    it lies below 0 (B > A), else `inconclusive`."""
    return "held" if low > 0 else "did not hold" if high < 0 else "inconclusive"


def paired_bootstrap(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *, reps: int = 4000,
                     level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """A - B on the same items: {diff, low, high, verdict} (accuracy units; claim "A > B"). `a` and `b` are
    seeds x items (their seed counts may differ, the items may not); every replicate draws one set of
    items for both and each method's seeds on its own."""
    xa, xb = _matrix(a), _matrix(b)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"paired comparison needs the same items (got {xa.shape[1]} and {xb.shape[1]})")
    rng = np.random.default_rng(seed)
    counts = _item_counts(xa.shape[1], reps, rng)
    boot = _replicates(xa, counts, rng) - _replicates(xb, counts, rng)
    lo, hi = (float(v) for v in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
    return {"diff": float(xa.mean() - xb.mean()), "low": lo, "high": hi, "verdict": verdict(lo, hi)}


def permutation_greater(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact one-sided permutation p-value of mean(a) > mean(b): the share of the C(n_a + n_b, n_a)
    relabellings of the pooled values whose first group's mean is at least the observed one (3 v 3
    seeds: 20 relabellings, so the smallest p is 1/20 = 0.05, reached when every a exceeds every b)."""
    from itertools import combinations

    if not a or not b:
        raise ValueError("permutation_greater needs at least one value on each side")
    pooled, k = [*a, *b], len(a)
    observed = sum(a) / k
    splits = list(combinations(range(len(pooled)), k))
    hits = sum(sum(pooled[i] for i in idx) / k >= observed - 1e-12 for idx in splits)
    return hits / len(splits)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as Spearman's rho needs)."""
    _, group, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of each distinct value's last copy
    return ((last - counts + 1 + last) / 2.0)[group]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's r of the tie-averaged ranks); 0 when either side is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_interval(x: Sequence[float], y: Sequence[float], *, reps: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict[str, Any]:
    """{rho, low, high, n}: Spearman's rho of paired observations and its percentile bootstrap
    interval (pairs resampled). "x does not track y" (docs/protocol.md, H7) holds when the interval
    contains 0."""
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"spearman_interval needs >= 3 paired observations (got {len(x)} and {len(y)})")
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boot = [spearman(xs[i], ys[i]) for i in rng.integers(0, len(xs), (reps, len(xs)))]
    lo, hi = (float(v) for v in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
    return {"rho": spearman(xs, ys), "low": lo, "high": hi, "n": len(xs)}
