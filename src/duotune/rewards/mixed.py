"""`mixed`: the VLAA-Thinking mixed reward (SPEC 3), routing each sample by its `reward_type` column.

Exactly one reward scores a sample (no sum); the answer is read from `<answer>...</answer>` and a
completion without one scores 0 (the implicit format reward). Imports the rewards' own modules only.
"""

from __future__ import annotations

from typing import Any

from duotune.errors import ConfigError, DataError
from duotune.rewards.base import PooledReward, Reward, RewardError
from duotune.rewards.extract import answer_tag
from duotune.rewards.functions import DigitReward, IouReward, MathReward, McqReward
from duotune.rewards.open_rm import OpenRM

ROUTES = ("digit", "mcq", "math", "iou", "open")


class MixedReward(Reward):
    """Routes each sample by `reward_type` to digit / mcq / math / iou / open; no `<answer>` -> 0.

    iou_frame: coordinate frame of the iou route ("normalized" or "pixel", see `iou`).
    open_scorer / open_tokenizer / open_beta_s: the `open_rm` scorer for the open route (needed only
    when an `open` sample appears). A sample whose reward_type is None scores None (not applicable).
    After a call, `stats["by_type"]` holds the mean reward per type (logged as reward/mixed/<type>).
    """

    name = "mixed"
    requires = ("answer", "reward_type")

    def __init__(self, iou_frame: str = "normalized", open_scorer: Any = None, open_tokenizer: Any = None,
                 open_beta_s: float = 0.2, pool: Any = None):
        super().__init__()
        self.pool = pool
        self.routes: dict[str, Reward | None] = {
            "digit": DigitReward(), "mcq": McqReward(), "math": MathReward(pool=pool),
            "iou": IouReward(frame=iou_frame),
            "open": OpenRM(open_scorer, open_tokenizer, open_beta_s) if open_scorer is not None else None,
        }

    def _route(self, rtype: str, index: int) -> Reward:
        if rtype not in self.routes:
            raise DataError(f"reward 'mixed': unknown reward_type {rtype!r}; valid: {', '.join(ROUTES)}",
                            row=index, field="reward_type")
        route = self.routes[rtype]
        if route is None:
            raise ConfigError(f"reward 'mixed' got reward_type 'open' (sample {index}) but has no "
                              "scorer; pass open_scorer=<callable or reward-model path>")
        if isinstance(route, PooledReward) and route.pool is None:
            route.pool = self.pool  # a pool set on the mixed reward after building reaches its routes
        return route

    def score(self, completions: list[str], columns: dict[str, Any]) -> list[float | None]:
        types = [None if t is None else str(t) for t in columns["reward_type"]]
        out: list[float | None] = [None if t is None else 0.0 for t in types]
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(types):
            if t is not None:
                self._route(t, i)
                groups.setdefault(t, [])
                if answer_tag(completions[i]) is not None:
                    groups[t].append(i)
        for rtype, ids in groups.items():
            if ids:
                self._score_route(rtype, ids, completions, columns, out)
        self.stats["by_type"] = {t: _mean([out[i] for i, ti in enumerate(types) if ti == t])
                                 for t in groups}
        return out

    def _score_route(self, rtype: str, ids: list[int], completions: list[str],
                     columns: dict[str, Any], out: list[float | None]) -> None:
        """Score the samples `ids` with their route; errors name the sample's index in the batch."""
        route = self._route(rtype, ids[0])
        sub_cols = {k: [v[i] for i in ids] if isinstance(v, (list, tuple)) else v for k, v in columns.items()}
        try:
            values = route([completions[i] for i in ids], **sub_cols)
        except RewardError as exc:
            index = None if exc.index is None else ids[exc.index]
            raise RewardError(self.name, f"route {rtype!r}: {exc}", index=index) from exc
        except DataError as exc:
            if exc.row is None:
                raise
            raise DataError(str(exc).split(": ", 1)[-1], row=ids[exc.row], field=exc.field) from exc
        for i, v in zip(ids, values):
            out[i] = v
        self.stats["timeouts"] += route.stats.get("timeouts", 0)


def _mean(values: list[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else 0.0
