"""Sample-level metrics: unbiased pass@k, maj@k, avg@k, and the per-benchmark summary of graded samples.

Pure Python over plain records (dicts); imports nothing from duotune but `duotune.errors`, no torch.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, "Codex", eq. 1):
    1 - C(n-c, k) / C(n, k), computed as a product so it never overflows."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def maj_at_k(answers: Sequence[str | None], scores: Sequence[float], k: int) -> float:
    """Majority vote over the first k samples: the most frequent extracted answer (ties go to the one
    seen first; samples with no answer do not vote) is scored as that answer's samples were; 0 if none."""
    if not 1 <= k <= len(answers) or len(answers) != len(scores):
        raise ValueError(f"maj@k needs 1 <= k <= len(answers) == len(scores) "
                         f"(got k={k}, {len(answers)} answers, {len(scores)} scores)")
    votes: Counter[str] = Counter()
    first_score: dict[str, float] = {}
    for answer, score in zip(answers[:k], scores[:k]):
        key = _vote_key(answer)
        if key is None:
            continue
        votes[key] += 1
        first_score.setdefault(key, score)
    if not votes:
        return 0.0
    best = max(votes.values())
    winner = next(a for a in first_score if votes[a] == best)  # dicts keep first-seen order
    return float(first_score[winner])


def is_correct(score: float) -> bool:
    """Graders give 1.0 (right) or 0.0 (wrong); anything above one half counts as right."""
    return score > 0.5


def summarize(records: Iterable[Mapping[str, Any]], item_meta: Mapping[str, Mapping[str, Any]],
              breakdown: Sequence[str] = ()) -> dict[str, Any]:
    """Summary of graded samples of one benchmark.

    records: dicts with item_id, sample_index, score, extracted, length, truncated (, gradable).
    item_meta: per item id the meta fields named in `breakdown` (e.g. subject, level).
    Returns accuracy (= avg@n: mean over items of the mean score over samples), avg@n, pass@k and
    maj@k for k = 1..n (n = the fewest samples any item has), mean length, truncated fraction, the
    extraction rate (fraction of samples with an extracted answer; also under its older name
    answered_fraction, which the trainer logs), the items whose gold the reward could not grade
    (records with gradable False; scored 0), and per breakdown field {value: {items, accuracy}}.
    """
    by_item: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        by_item[str(r["item_id"])].append(r)
    samples = [r for rs in by_item.values() for r in rs]
    if not samples:
        return {"items": 0, "samples": 0, "n": 0, "accuracy": 0.0, "pass@k": {}, "maj@k": {},
                "mean_length": 0.0, "truncated_fraction": 0.0, "answered_fraction": 0.0,
                "extraction_rate": 0.0, "ungradable_items": 0, "breakdown": {}}
    for rs in by_item.values():
        rs.sort(key=lambda r: r["sample_index"])
    n = min(len(rs) for rs in by_item.values())
    item_acc = {i: sum(r["score"] for r in rs) / len(rs) for i, rs in by_item.items()}
    accuracy = sum(item_acc.values()) / len(item_acc)
    extracted = _mean(float(_vote_key(r.get("extracted")) is not None) for r in samples)
    pass_k, maj_k = {}, {}
    for k in range(1, n + 1):
        pass_k[str(k)] = _mean(pass_at_k(len(rs), sum(is_correct(r["score"]) for r in rs), k)
                               for rs in by_item.values())
        maj_k[str(k)] = _mean(maj_at_k([r.get("extracted") for r in rs], [r["score"] for r in rs], k)
                              for rs in by_item.values())
    return {
        "items": len(by_item), "samples": len(samples), "n": n, "accuracy": accuracy,
        f"avg@{n}": accuracy, "pass@k": pass_k, "maj@k": maj_k,
        "mean_length": _mean(r["length"] for r in samples),
        "truncated_fraction": _mean(float(bool(r["truncated"])) for r in samples),
        "answered_fraction": extracted, "extraction_rate": extracted,
        "ungradable_items": sum(not all(r.get("gradable", True) for r in rs) for rs in by_item.values()),
        "breakdown": _breakdown(item_acc, item_meta, breakdown),
    }


def _breakdown(item_acc: Mapping[str, float], item_meta: Mapping[str, Mapping[str, Any]],
               fields: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for field in fields:
        groups: dict[str, list[float]] = defaultdict(list)
        for item, acc in item_acc.items():
            value = item_meta.get(item, {}).get(field)
            if value is not None:
                groups[str(value)].append(acc)
        if groups:
            out[field] = {v: {"items": len(accs), "accuracy": _mean(accs)}
                          for v, accs in sorted(groups.items())}
    return out


def _vote_key(answer: str | None) -> str | None:
    """Answers vote by their whitespace-free text; an empty or missing answer does not vote."""
    if answer is None:
        return None
    key = "".join(str(answer).split())
    return key or None


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0
