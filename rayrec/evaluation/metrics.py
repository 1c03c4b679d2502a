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


MEAN_METRICS = ("hr@10", "hr@20", "ndcg@10", "mrr@10")  # the metrics that are means over events


def _gains(ranks: np.ndarray) -> np.ndarray:
    """Per event (rows), each mean metric's value (columns, as MEAN_METRICS): a hit in the top 10 and the top
    20; 1 / log2(rank + 1) in the top 10 (NDCG, one relevant item); 1 / rank in the top 10 (MRR)."""
    top10, top20, safe = (ranks > 0) & (ranks <= 10), (ranks > 0) & (ranks <= 20), np.maximum(ranks, 1)
    return np.stack([top10, top20, np.where(top10, 1.0 / np.log2(safe + 1.0), 0.0),
                     np.where(top10, 1.0 / safe, 0.0)], axis=1).astype(np.float64)


def _point(ranks: np.ndarray, shown: np.ndarray, catalog_size: int) -> dict[str, float]:
    means = _gains(ranks).mean(axis=0) if len(ranks) else np.zeros(len(MEAN_METRICS))
    return {**{name: float(v) for name, v in zip(MEAN_METRICS, means, strict=True)},
            "coverage@10": float(shown.sum()) / catalog_size if catalog_size else 0.0}


def summarise(scored: Scored, catalog_size: int, resamples: int = 1000, seed: int = 0) -> dict[str, object]:
    """Each metric with a 95% percentile bootstrap interval over users (users resampled with replacement).

    coverage@10 is the share of the catalog that appeared in any top-10 shown. A resample's mean over its
    events is, per user, their count in it times their sum over their events, over the same for event
    counts: every resample at once as matrix products over users (equal to concatenating its events).
    """
    users = sorted(set(scored.users))
    index = {u: i for i, u in enumerate(users)}
    owner = np.array([index[u] for u in scored.users], dtype=np.int64)
    shown_by_user = np.zeros((len(users), catalog_size), dtype=bool)
    for event, top in enumerate(scored.top10):
        shown_by_user[owner[event], top] = True
    point = _point(scored.ranks, shown_by_user.any(axis=0), catalog_size)
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, len(users), len(users)) for _ in range(resamples if users else 0)]
    samples = _resampled(scored.ranks, owner, shown_by_user, picks)
    out: dict[str, object] = {"events": int(len(scored.ranks)), "users": len(users)}
    for name, value in point.items():
        low, high = (np.percentile(samples[name], [2.5, 97.5]) if len(samples[name]) else (value, value))
        out[name] = {"value": round(value, 5), "ci95": [round(float(low), 5), round(float(high), 5)]}
    return out


def _resampled(ranks: np.ndarray, owner: np.ndarray, shown_by_user: np.ndarray, picks: list[np.ndarray],
               chunk: int = 100) -> dict[str, np.ndarray]:
    """Every metric of _point on each resample of users (picks: user indices, with repeats)."""
    n_users, catalog_size = shown_by_user.shape
    sums = np.zeros((n_users, len(MEAN_METRICS)))
    np.add.at(sums, owner, _gains(ranks))
    events = np.bincount(owner, minlength=n_users).astype(np.float64)
    shown = shown_by_user.astype(np.float32)
    parts: list[np.ndarray] = []
    for start in range(0, len(picks), chunk):
        counts = np.stack([np.bincount(pick, minlength=n_users) for pick in picks[start : start + chunk]])
        means = (counts @ sums) / np.maximum(counts @ events, 1.0)[:, None]
        covered = ((counts > 0).astype(np.float32) @ shown > 0).sum(axis=1) / max(catalog_size, 1)
        parts.append(np.concatenate([means, covered[:, None]], axis=1))
    table = np.concatenate(parts) if parts else np.zeros((0, len(MEAN_METRICS) + 1))
    return {name: table[:, n] for n, name in enumerate((*MEAN_METRICS, "coverage@10"))}
