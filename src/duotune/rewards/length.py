"""Length-based rewards: DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13; verl's
`overlong_buffer`), read from the completion's token count (`completion_ids`, TRL's column).

Imports the rewards' base module only.
"""

from __future__ import annotations

from typing import Any

from duotune.errors import ConfigError
from duotune.rewards.base import Reward


def overlong_penalty(length: int, max_len: int, cache: int) -> float:
    """0 for length <= max_len - cache, then linear to -1 at max_len, -1 beyond (DAPO eq. 13)."""
    start = max_len - cache
    if length <= start:
        return 0.0
    if length <= max_len:
        return (start - length) / cache
    return -1.0


class OverlongPenalty(Reward):
    """DAPO's soft overlong penalty: 0 below max_len - cache tokens, linear to -1 at max_len."""

    name = "overlong"
    kind = "format"  # a length shaping, never read as solved
    requires = ("completion_ids",)

    def __init__(self, max_len: int = 256, cache: int | None = None, factor: float = 1.0):
        super().__init__()
        cache = max(1, max_len // 5) if cache is None else cache  # DAPO: L_cache 4096 of L_max 20480
        if max_len < 1 or not 1 <= cache <= max_len:
            raise ConfigError(f"overlong reward needs max_len >= 1 and 1 <= cache <= max_len (got max_len="
                              f"{max_len}, cache={cache}); set max_len to rollout.max_completion_length")
        self.max_len, self.cache, self.factor = max_len, cache, float(factor)

    def score(self, completions: list[str], columns: dict[str, Any]) -> list[float | None]:
        return [self.factor * overlong_penalty(len(ids), self.max_len, self.cache) for ids in columns["completion_ids"]]
