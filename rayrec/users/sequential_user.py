"""The model-based user: a user's vector computed from their recent events, in the serving shape.

Two or three parts, blended into one dot product over concatenated vectors:
- the sequential model (rayrec.users.sequence_model): its output for the user's
  last events, against each item's output vector;
- EASE with recency decay in low rank (B ~ context @ target^T): the decayed sum
  of the context vectors of the user's positives (and of their clicks, at weight
  `click`), against each item's target vector;
- optionally the two-tower space: a decayed sum of the tower's item vectors
  (at its own decay, `tower_decay`: the recent events weigh more there than in
  EASE's part), against the items' own (it also places items nobody interacted
  with by the tower's text path).
Each part's scores are z-scored over the catalog before they are mixed
(weight, 1 - weight - tower_share, tower_share). A per-user mean shifts every
item alike, so only the per-user spread matters, and it is a quadratic form of
the user's part: std_j(u . v_j) = sqrt(u^T cov(v) u). So the user vector is
[weight * h / sd_h, (1 - weight - tower_share) * c / sd_c, tower_share * g / sd_g]
and an item's is [output_j, target_j, tower_j], and ranking by their dot product
is ranking by the blended z-scores. The index
compares L2-normalised item vectors, so each item gets one more coordinate,
sqrt(M^2 - |v_j|^2) with M the largest norm, and users a 0 there: every item then
has norm M, and normalising divides every score by the same M (the reduction of
inner-product search to cosine of Bachrach et al. 2014).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rayrec.users.sequence_model import CLICK, EVENT_TYPES, POSITIVE, SequenceModel


def spread(vectors: np.ndarray) -> np.ndarray:
    """The covariance of item vectors (rows), float64: std over items of u . v_j = sqrt(u^T cov u)."""
    v = np.asarray(vectors, np.float64)
    centred = v - v.mean(axis=0)
    return centred.T @ centred / max(1, len(v))


def equal_norms(vectors: np.ndarray) -> np.ndarray:
    """Item vectors (n, k) with one more coordinate that brings every row to the largest row norm."""
    v = np.asarray(vectors, np.float64)
    sq = (v**2).sum(axis=1)
    return np.concatenate([v, np.sqrt(np.maximum(sq.max() - sq, 0.0))[:, None]], axis=1).astype(np.float32)


@dataclass
class SequentialUser:
    """Computes user vectors from (item id, event) histories, oldest first."""

    sequence: SequenceModel
    rows: dict[str, int]  # item id -> row of the model's tables
    context: np.ndarray  # (n_items, r) EASE context vectors
    decay: float  # EASE recency decay per positive
    weight: float  # the sequential part's share of the blend
    spread_output: np.ndarray  # (d, d) covariance of the output vectors
    spread_target: np.ndarray  # (r, r) covariance of the target vectors
    click: float = 0.0  # a click's weight in the EASE part (a positive's is 1; what pushes away is left out)
    tower: np.ndarray | None = None  # (n_items, t) two-tower item vectors: a third part, like EASE's (or none)
    spread_tower: np.ndarray | None = None  # (t, t) covariance of the tower vectors
    tower_share: float = 0.0  # the tower part's share (EASE's is 1 - weight - tower_share)
    tower_decay: float | None = None  # the tower part's recency decay per counted event (None: EASE's `decay`)

    @property
    def dim(self) -> int:
        """The item space's dimension: every part and the coordinate of equal_norms."""
        return self.sequence.dim + self.context.shape[1] + (0 if self.tower is None else self.tower.shape[1]) + 1

    def knows(self, item_id: str) -> bool:
        return item_id in self.rows

    def encode(self, events: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        """(item rows, event types) of (item id, event) events as int64 arrays; -1 where the model does not
        know the item or the event type."""
        rows = np.fromiter((self.rows.get(i, -1) if e in EVENT_TYPES else -1 for i, e in events), np.int64,
                           len(events))
        types = np.fromiter((EVENT_TYPES.get(e, 0) for _, e in events), np.int64, len(events))
        return rows, types

    def parts_of(self, rows: np.ndarray, types: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray, float]],
                                                                     np.ndarray]:
        """Each part's user vectors (B, k_p) float64, its items' covariance and its share, for rows of encoded
        events (B, w), oldest first, -1 for none; and (B,) whether the model knows any of a row's events. The
        EASE and tower parts are decayed sums over positives and clicks (decayed_sum), each counted event decaying
        by `decay` (the tower's: tower_decay) per later one."""
        rows, types = np.atleast_2d(rows), np.atleast_2d(types)
        h, live = self.sequence.outputs(rows, types)
        parts = [(h.astype(np.float64), self.spread_output, self.weight),
                 (self.decayed_sum(rows, types, self.context, self.decay), self.spread_target,
                  1.0 - self.weight - self.tower_share)]
        if self.tower is not None:
            parts.append((self.tower_part(rows, types), self.spread_tower, self.tower_share))
        return parts, live

    def tower_part(self, rows: np.ndarray, types: np.ndarray, decay: float | None = None) -> np.ndarray:
        """The tower part's user vectors (B, t) float64 of encoded events, at `decay` (None: tower_decay)."""
        assert self.tower is not None
        decay = decay if decay is not None else self.tower_decay if self.tower_decay is not None else self.decay
        return self.decayed_sum(np.atleast_2d(rows), np.atleast_2d(types), self.tower, decay)

    def decayed_sum(self, rows: np.ndarray, types: np.ndarray, table: np.ndarray, decay: float) -> np.ndarray:
        """(B, k) float64: per row of encoded events, the sum of table's rows of its positives (weight 1) and
        clicks (weight `click`), each multiplied by decay once per counted event after it."""
        known = rows >= 0
        weights = np.where(known & (types == POSITIVE), 1.0, np.where(known & (types == CLICK), self.click, 0.0))
        counted = weights > 0
        later = counted.sum(axis=1, keepdims=True) - np.cumsum(counted, axis=1)  # counted events after each
        coef = np.where(counted, weights * decay ** later, 0.0)
        return np.einsum("bw,bwr->br", coef, table[np.where(counted, rows, 0)], dtype=np.float64)

    def vectors_of(self, rows: np.ndarray, types: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """The user vectors (B, dim) float32 of rows of encoded events (see parts_of), `chunk` rows a pass,
        and (B,) whether each has one (the model knows one of its events; zeros where not)."""
        rows, types = np.atleast_2d(rows), np.atleast_2d(types)
        out = np.zeros((len(rows), self.dim), np.float32)
        live = np.zeros(len(rows), bool)
        for start in range(0, len(rows), chunk):
            parts, ok = self.parts_of(rows[start : start + chunk], types[start : start + chunk])
            blended = []
            for part, cov, share in parts:
                sd = np.sqrt(np.maximum(np.einsum("bi,ij,bj->b", part, cov, part), 0.0))[:, None]
                blended.append(np.where(sd > 1e-12, share * part / np.where(sd > 1e-12, sd, 1.0), 0.0))
            u = np.concatenate([*blended, np.zeros((len(part), 1))], axis=1)
            norm = np.linalg.norm(u, axis=1, keepdims=True)
            ok &= norm[:, 0] > 0
            out[start : start + chunk] = np.where(ok[:, None], u / np.where(norm > 0, norm, 1.0), 0.0)
            live[start : start + chunk] = ok
        return out, live

    def parts(self, events: Sequence[tuple[str, str]]) -> list[tuple[np.ndarray, np.ndarray, float]] | None:
        """parts_of one history ((item id, event) pairs, oldest first), one vector a part; None when the
        model knows none of its events."""
        parts, live = self.parts_of(*self.encode(events))
        return [(part[0], cov, share) for part, cov, share in parts] if live[0] else None

    def vector(self, events: Sequence[tuple[str, str]]) -> np.ndarray | None:
        """The user's vector (dim,) float32, or None when the model knows none of the events' items."""
        return self.vectors([events])[0]

    def vectors(self, histories: Sequence[Sequence[tuple[str, str]]]) -> list[np.ndarray | None]:
        """vector of each history, in one batched pass (histories right-aligned, -1 before the shorter)."""
        width = max([len(h) for h in histories] + [1])
        rows = np.full((len(histories), width), -1, np.int64)
        types = np.zeros((len(histories), width), np.int64)
        for b, events in enumerate(histories):
            if events:
                rows[b, width - len(events) :], types[b, width - len(events) :] = self.encode(events)
        out, live = self.vectors_of(rows, types)
        return [out[b] if live[b] else None for b in range(len(histories))]
