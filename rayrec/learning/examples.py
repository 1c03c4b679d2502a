"""Training examples from interactions, and the next-item hit rate used to compare spaces while training."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from rayrec.evaluation.baselines import top_k
from rayrec.evaluation.data import Event
from rayrec.exceptions import InvalidInputError
from rayrec.learning.model import PAD


@dataclass(frozen=True, slots=True)
class Examples:
    """(context, target) pairs: a user's positives before a positive (oldest first, left-padded), and that positive.

    counts: how often each item is a target (the in-batch sampling frequency the loss corrects for).
    has_history: items with at least one positive interaction (those get an id embedding).
    """

    context: np.ndarray  # (n, length) int64, PAD-padded on the left
    target: np.ndarray  # (n,) int64
    counts: np.ndarray  # (n_items,) float64
    has_history: np.ndarray  # (n_items,) bool

    def __len__(self) -> int:
        return int(self.target.shape[0])


def positives_by_user(events: Iterable[Event], index: dict[str, int]) -> dict[str, list[int]]:
    """Each user's positive items (rows of index) in time order."""
    out: dict[str, list[int]] = {}
    for e in events:
        if e.positive:
            out.setdefault(e.user, []).append(index[e.item])
    return out


def make_examples(events: list[Event], index: dict[str, int], length: int) -> Examples:
    """One example per positive event that has at least one earlier positive of the same user."""
    context: list[list[int]] = []
    target: list[int] = []
    for items in positives_by_user(events, index).values():
        for t in range(1, len(items)):
            before = items[max(0, t - length) : t]
            context.append([PAD] * (length - len(before)) + before)
            target.append(items[t])
    if len(target) < 2:
        raise InvalidInputError(
            f"only {len(target)} training examples (a positive interaction after another of the same user): "
            "rayrec train needs users with at least two positive interactions"
        )
    target_arr = np.asarray(target, dtype=np.int64)
    has = np.zeros(len(index), dtype=bool)
    has[[index[e.item] for e in events if e.positive]] = True
    return Examples(
        np.asarray(context, dtype=np.int64), target_arr, np.bincount(target_arr, minlength=len(index)).astype(np.float64), has
    )


def pooled(vectors: np.ndarray, items: list[int], recency: float, length: int) -> np.ndarray:
    """The user tower in numpy: normalise(recency-weighted sum of the last `length` item vectors)."""
    last = items[-length:]
    weights = recency ** np.arange(len(last) - 1, -1, -1, dtype=np.float64)
    v = weights @ vectors[last].astype(np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def next_item_hit_rate(
    vectors: np.ndarray, before: list[Event], after: list[Event], index: dict[str, int], recency: float, length: int,
    k: int = 10,
) -> dict[str, float | int]:
    """HR@k of the pooled user vector on each positive of `after` (given everything before it; seen items excluded).

    Events of users without an earlier positive are not scored (no vector to score with).
    """
    positives = positives_by_user(before, index)
    seen: dict[str, set[int]] = {}
    for e in before:
        seen.setdefault(e.user, set()).add(index[e.item])
    hits = scored = 0
    for e in after:
        mine = seen.setdefault(e.user, set())
        row = index[e.item]
        if e.positive:
            history = positives.get(e.user)
            if history:
                scored += 1
                hits += row in top_k(vectors @ pooled(vectors, history, recency, length), k, mine)
            positives.setdefault(e.user, []).append(row)
        mine.add(row)
    return {f"hr@{k}": hits / scored if scored else 0.0, "events": scored}
