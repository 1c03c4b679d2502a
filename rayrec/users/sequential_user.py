"""The model-based user: a user's vector computed from their recent events, in the serving shape.

Two or three parts, blended into one dot product over concatenated vectors:
- the sequential model (rayrec.users.sequence_model): its output for the user's
  last events, against each item's output vector;
- EASE with recency decay in low rank (B ~ context @ target^T): the decayed sum
  of the context vectors of the user's positives (and of their clicks, at weight
  `click`), against each item's target vector;
- optionally the two-tower space: the same decayed sum of the tower's item
  vectors, against the items' own (it also places items nobody interacted with
  by the tower's text path).
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

    @property
    def dim(self) -> int:
        """The item space's dimension: every part and the coordinate of equal_norms."""
        return self.sequence.dim + self.context.shape[1] + (0 if self.tower is None else self.tower.shape[1]) + 1

    def knows(self, item_id: str) -> bool:
        return item_id in self.rows

    def parts(self, events: Sequence[tuple[str, str]]) -> list[tuple[np.ndarray, np.ndarray, float]] | None:
        """Each part's user vector (float64), its items' covariance and its share, or None when the model
        knows none of the events' items. The EASE and tower parts are decayed sums over positives and clicks."""
        return self.parts_many([events])[0]

    def parts_many(
        self, histories: Sequence[Sequence[tuple[str, str]]]
    ) -> list[list[tuple[np.ndarray, np.ndarray, float]] | None]:
        """parts of each history, the sequential model run once over all of them."""
        knowns = [[(self.rows[i], EVENT_TYPES[e]) for i, e in events if i in self.rows and e in EVENT_TYPES]
                  for events in histories]
        hs = self.sequence.user_vectors(knowns)
        tables = [self.context] + ([] if self.tower is None else [self.tower])
        out: list[list[tuple[np.ndarray, np.ndarray, float]] | None] = []
        for known, h in zip(knowns, hs, strict=True):
            if h is None:
                out.append(None)
                continue
            # Each counted event (a positive, or a click at weight `click`) decays by `decay` per later one.
            counted = [(row, 1.0 if kind == POSITIVE else self.click) for row, kind in known
                       if kind == POSITIVE or (kind == CLICK and self.click > 0)]
            rows = np.asarray([row for row, _ in counted], np.int64)
            coef = np.asarray([w for _, w in counted], np.float64) * self.decay ** np.arange(len(counted) - 1, -1, -1)
            sums = [coef @ table[rows].astype(np.float64) for table in tables]
            parts = [(h.astype(np.float64), self.spread_output, self.weight),
                     (sums[0], self.spread_target, 1.0 - self.weight - self.tower_share)]
            if self.tower is not None:
                parts.append((sums[1], self.spread_tower, self.tower_share))
            out.append(parts)
        return out

    def vector(self, events: Sequence[tuple[str, str]]) -> np.ndarray | None:
        """The user's vector (dim,) float32, or None when the model knows none of the events' items."""
        return self.vectors([events])[0]

    def vectors(self, histories: Sequence[Sequence[tuple[str, str]]]) -> list[np.ndarray | None]:
        """vector of each history, in one batched pass of the sequential model."""
        out: list[np.ndarray | None] = []
        for parts in self.parts_many(histories):
            if parts is None:
                out.append(None)
                continue
            blended = []
            for part, cov, share in parts:
                sd = float(np.sqrt(max(part @ cov @ part, 0.0)))
                blended.append(share * part / sd if sd > 1e-12 else np.zeros_like(part))
            u = np.concatenate([*blended, np.zeros(1)])
            norm = float(np.linalg.norm(u))
            out.append((u / norm).astype(np.float32) if norm > 0 else None)
        return out
