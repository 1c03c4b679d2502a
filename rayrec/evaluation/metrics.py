"""Ranking metrics of a replay, with 95% bootstrap confidence intervals over users."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MISS = 0  # rank of a target not in the list


@dataclass(slots=True)
class Scored:
    """One policy's answers to the scored events: per event its user, the target's rank (1-based, 0 = miss)
    and the top-10 it showed (item indices into the catalog)."""

    users: list[str]
    ranks: np.ndarray
    top10: list[list[int]]

    def subset(self, mask: np.ndarray) -> Scored:
        """The answers to the events where mask (bool, one per event) is set."""
        return Scored(
            [u for u, m in zip(self.users, mask) if m], self.ranks[mask], [t for t, m in zip(self.top10, mask) if m]
        )


def hit_rate(ranks: np.ndarray, k: int) -> float:
    return float(np.mean((ranks > 0) & (ranks <= k))) if len(ranks) else 0.0


def ndcg(ranks: np.ndarray, k: int) -> float:
    """One relevant item per event: 1 / log2(rank + 1) when it is in the top k."""
    if not len(ranks):
        return 0.0
    gain = np.where((ranks > 0) & (ranks <= k), 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)
    return float(np.mean(gain))


def mrr(ranks: np.ndarray, k: int) -> float:
    if not len(ranks):
        return 0.0
    return float(np.mean(np.where((ranks > 0) & (ranks <= k), 1.0 / np.maximum(ranks, 1), 0.0)))


def _point(ranks: np.ndarray, shown: np.ndarray, catalog_size: int) -> dict[str, float]:
    return {
        "hr@10": hit_rate(ranks, 10),
        "hr@20": hit_rate(ranks, 20),
        "ndcg@10": ndcg(ranks, 10),
        "mrr@10": mrr(ranks, 10),
        "coverage@10": float(shown.sum()) / catalog_size if catalog_size else 0.0,
    }


def summarise(scored: Scored, catalog_size: int, resamples: int = 1000, seed: int = 0) -> dict[str, object]:
    """Each metric with a 95% percentile bootstrap interval over users (users resampled with replacement).

    coverage@10 is the share of the catalog that appeared in any top-10 shown.
    """
    users = sorted(set(scored.users))
    index = {u: i for i, u in enumerate(users)}
    owner = np.array([index[u] for u in scored.users], dtype=np.int64)
    by_user = [np.flatnonzero(owner == i) for i in range(len(users))]
    shown_by_user = np.zeros((len(users), catalog_size), dtype=bool)
    for event, top in enumerate(scored.top10):
        shown_by_user[owner[event], top] = True
    point = _point(scored.ranks, shown_by_user.any(axis=0), catalog_size)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in point}
    for _ in range(resamples if users else 0):
        pick = rng.integers(0, len(users), len(users))
        events = np.concatenate([by_user[u] for u in pick])
        for name, value in _point(scored.ranks[events], shown_by_user[pick].any(axis=0), catalog_size).items():
            samples[name].append(value)
    out: dict[str, object] = {"events": int(len(scored.ranks)), "users": len(users)}
    for name, value in point.items():
        low, high = (np.percentile(samples[name], [2.5, 97.5]) if samples[name] else (value, value))
        out[name] = {"value": round(value, 5), "ci95": [round(float(low), 5), round(float(high), 5)]}
    return out
