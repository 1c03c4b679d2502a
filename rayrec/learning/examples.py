"""Training examples from interactions, and the next-item hit rate used to compare spaces while training."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from rayrec import constants as C
from rayrec.evaluation.data import Event
from rayrec.exceptions import InvalidInputError
from rayrec.learning.model import PAD


@dataclass(frozen=True, slots=True)
class Examples:
    """(context, target) pairs: a user's interactions before a positive one (oldest first, left-padded), and it.

    sign: each context slot's weight, the feedback rule's rate of its event relative to `like`'s
        (like 1, click 0.4, dislike -1 with rayrec's default rates; 0 for padding), so the user tower
        pools a user the way feedback moves them.
    counts: how often each item is a target (the in-batch sampling frequency the loss corrects for).
    has_history: items with at least one interaction (those get an id embedding).
    """

    context: np.ndarray  # (n, length) int64, PAD-padded on the left
    sign: np.ndarray  # (n, length) float32
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


def relative_rates() -> dict[str, float]:
    """The default feedback rule's rate of each event type, relative to `like`'s."""
    return {event: rate / C.DEFAULT_LEARNING_RATES["like"] for event, rate in C.DEFAULT_LEARNING_RATES.items()}


def make_examples(events: list[Event], index: dict[str, int], length: int) -> Examples:
    """One example per positive event after at least one earlier interaction of the same user."""
    rates = relative_rates()
    by_user: dict[str, list[tuple[int, float, bool]]] = {}
    for e in events:
        by_user.setdefault(e.user, []).append((index[e.item], rates[e.feedback], e.positive))
    context: list[list[int]] = []
    sign: list[list[float]] = []
    target: list[int] = []
    for seq in by_user.values():
        for t in range(1, len(seq)):
            if not seq[t][2]:
                continue
            before = seq[max(0, t - length) : t]
            context.append([PAD] * (length - len(before)) + [row for row, _, _ in before])
            sign.append([0.0] * (length - len(before)) + [rate for _, rate, _ in before])
            target.append(seq[t][0])
    if len(target) < 2:
        raise InvalidInputError(
            f"only {len(target)} training examples (a positive interaction after another one of the same user): "
            "rayrec train needs users with at least two interactions, the later one positive"
        )
    target_arr = np.asarray(target, dtype=np.int64)
    has = np.zeros(len(index), dtype=bool)
    has[[index[e.item] for e in events]] = True
    return Examples(np.asarray(context, dtype=np.int64), np.asarray(sign, dtype=np.float32), target_arr,
                    np.bincount(target_arr, minlength=len(index)).astype(np.float64), has)


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

    Events of users without an earlier positive are not scored (no vector to score with). Ties rank
    the lower item row first, as the evaluation's top_k does. Validating every epoch: prepare a HeldOut once.
    """
    from rayrec.learning.held_out import HeldOut

    return HeldOut(before, after, index, recency, length).hit_rate(vectors, k)
