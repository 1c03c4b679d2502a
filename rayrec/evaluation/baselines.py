"""The in-process baseline policies: most popular so far, and item-kNN on history co-occurrence."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from rayrec.evaluation.data import Event


def top_k(scores: np.ndarray, k: int, seen: Iterable[int]) -> list[int]:
    """Indices of the k best scores, seen ones excluded; ties broken by the lower index."""
    scores = scores.astype(np.float64, copy=True)
    seen = list(seen)
    if seen:
        scores[seen] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return []
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th best: only those at least as good
    candidates = np.flatnonzero(scores >= kth)
    order = candidates[np.lexsort((candidates, -scores[candidates]))]  # by score, then index
    return [int(i) for i in order[:k]]


class Popularity:
    """Most-interacted items among every interaction so far (history, then each replayed one once observed)."""

    name = "popularity"

    def __init__(self, index: dict[str, int], history: list[Event]) -> None:
        self.index = index
        self.counts = np.zeros(len(index), dtype=np.float64)
        for e in history:
            self.counts[index[e.item]] += 1

    def recommend(self, user: str, k: int, seen: set[int]) -> list[int]:
        return top_k(self.counts, k, seen)

    def observe(self, event: Event) -> None:
        self.counts[self.index[event.item]] += 1


class ItemKNN:
    """Item-to-item cosine similarity of co-occurrence among the history's positive interactions.

    A user's score for an item is the sum of its similarities to the items the
    user interacted with positively so far (history, then replayed positives).
    The similarities come from the history only. A user with no positive
    interaction yet gets None (the replay answers such cold users with popularity).
    """

    name = "itemknn"

    def __init__(self, index: dict[str, int], history: list[Event]) -> None:
        self.index = index
        users = sorted({e.user for e in history})
        row = {u: r for r, u in enumerate(users)}
        matrix = np.zeros((len(users), len(index)), dtype=np.float32)
        self.profile: dict[str, set[int]] = {}
        for e in history:
            if e.positive:
                matrix[row[e.user], index[e.item]] = 1.0
                self.profile.setdefault(e.user, set()).add(index[e.item])
        co = matrix.T @ matrix
        norms = np.sqrt(np.diag(co))
        with np.errstate(divide="ignore", invalid="ignore"):
            sim = co / np.outer(norms, norms)
        sim[~np.isfinite(sim)] = 0.0
        np.fill_diagonal(sim, 0.0)
        self.sim = sim

    def recommend(self, user: str, k: int, seen: set[int]) -> list[int] | None:
        items = self.profile.get(user)
        if not items:
            return None
        return top_k(self.sim[sorted(items)].sum(axis=0), k, seen)

    def observe(self, event: Event) -> None:
        if event.positive:
            self.profile.setdefault(event.user, set()).add(self.index[event.item])
