"""The held-out next-item hit rate of a space's pooled users, its events prepared once for every epoch's check."""

from __future__ import annotations

import numpy as np

from rayrec.evaluation.data import Event
from rayrec.learning.examples import positives_by_user

HIT_RATE_CHUNK = 2048  # scored events per (events x items) block of scores


class HeldOut:
    """The scored events of `after` (positives of users with an earlier positive, given everything before),
    each as the rows and recency weights its pooled user sums, its target and the items it excludes (all the
    user interacted with before). hit_rate(vectors) then costs a few array operations per block of events."""

    def __init__(self, before: list[Event], after: list[Event], index: dict[str, int], recency: float,
                 length: int) -> None:
        positives = positives_by_user(before, index)
        seen: dict[str, set[int]] = {}
        for e in before:
            seen.setdefault(e.user, set()).add(index[e.item])
        contexts: list[list[int]] = []
        targets: list[int] = []
        excluded: list[list[int]] = []
        for e in after:
            mine = seen.setdefault(e.user, set())
            row = index[e.item]
            if e.positive:
                history = positives.get(e.user)
                if history:
                    contexts.append(history[-length:])
                    targets.append(row)
                    excluded.append(sorted(mine))
                positives.setdefault(e.user, []).append(row)
            mine.add(row)
        n = len(targets)
        # Right-aligned: the newest positive in the last slot weighs 1, the one before `recency`, ...
        self.rows = np.zeros((n, length), np.int64)
        self.weights = np.zeros((n, length), np.float64)
        ages = recency ** np.arange(length - 1, -1, -1, dtype=np.float64)
        for m, context in enumerate(contexts):
            self.rows[m, length - len(context) :] = context
            self.weights[m, length - len(context) :] = ages[length - len(context) :]
        self.targets = np.asarray(targets, np.int64)
        self.excluded_event = np.repeat(np.arange(n), [len(x) for x in excluded])
        self.excluded_item = np.concatenate([np.asarray(x, np.int64) for x in excluded]) if n else np.zeros(0, int)

    def __len__(self) -> int:
        return len(self.targets)

    def hit_rate(self, vectors: np.ndarray, k: int = 10) -> dict[str, float | int]:
        """{"hr@k": share of scored events whose target ranks in the top k, "events": how many were scored}."""
        n = len(self.targets)
        if not n:
            return {f"hr@{k}": 0.0, "events": 0}
        table = vectors.astype(np.float64)
        lower_than = np.arange(vectors.shape[0])[None, :]
        hits = 0
        for start in range(0, n, HIT_RATE_CHUNK):  # in blocks: (events x items) scores at once get large
            end = min(start + HIT_RATE_CHUNK, n)
            users = np.einsum("el,eld->ed", self.weights[start:end], table[self.rows[start:end]])
            users /= np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-12)
            scores = users @ table.T
            lo, hi = np.searchsorted(self.excluded_event, [start, end])
            scores[self.excluded_event[lo:hi] - start, self.excluded_item[lo:hi]] = -np.inf
            target = self.targets[start:end]
            mine = scores[np.arange(end - start), target][:, None]
            ahead = (scores > mine) | ((scores == mine) & (lower_than < target[:, None]))
            hits += int((np.isfinite(mine[:, 0]) & (ahead.sum(axis=1) < k)).sum())
        return {f"hr@{k}": hits / n, "events": n}
