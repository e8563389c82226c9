"""95 % intervals for accuracies measured on a finite held-out set: the Wilson score interval.

Wilson (1927), "Probable inference, the law of succession, and statistical inference", JASA 22: for k
correct of n, the interval of p where |k/n - p| <= z sqrt(p(1-p)/n). Unlike the normal (Wald) interval
it stays inside [0, 1] and is not empty at 0 or n correct. Pure Python; imports nothing.
"""

from __future__ import annotations

import math

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
