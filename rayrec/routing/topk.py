"""Merge of per-shard partial top-k lists into the global top-k, and the result type."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# An empty slot (fewer than k results).
MISSING_SCORE = -np.inf
MISSING_ID = ""


def merge_topk(parts: Sequence[Sequence[np.ndarray]], k: int) -> list[np.ndarray]:
    """Merges partial top-k results of several shards.

    Args:
        parts: per shard, (scores float32 (nq, k_s), ids object (nq, k_s), *extra)
            where extra arrays (e.g. metadata) have the same shape and travel
            with their ids. Empty slots hold -inf and "".
        k: results wanted per query.

    Returns:
        [scores (nq, k), ids (nq, k), *extra], best first; ties keep shard
        order, then each shard's own order. Empty slots are -inf and "".
    """
    if not parts:
        raise ValueError("merge_topk needs at least one partial result")
    width = len(parts[0])
    nq = parts[0][0].shape[0]
    for part in parts:
        if len(part) != width or any(a.shape != part[0].shape or a.shape[0] != nq for a in part):
            raise ValueError("partial results disagree on the number of queries or their shapes")
    columns = [np.concatenate([p[j] for p in parts], axis=1) for j in range(width)]
    columns[0] = columns[0].astype(np.float32, copy=False)
    total = columns[0].shape[1]
    if total < k:  # pad so the output always has k columns
        fills = [MISSING_SCORE, MISSING_ID] + [None] * (width - 2)
        padded = []
        for column, fill in zip(columns, fills):
            out = np.full((nq, k), fill, dtype=column.dtype)
            out[:, :total] = column
            padded.append(out)
        columns = padded
    order = np.argsort(-columns[0], axis=1, kind="stable")[:, :k]
    return [np.take_along_axis(c, order, axis=1) for c in columns]


@dataclass(slots=True)
class SearchResult:
    """Top-k per query: ids and scores best first (only filled slots).

    partial is True when some shards did not answer (their items are missing);
    failed_shards names them.
    """

    ids: list[list[str]]
    scores: list[list[float]]
    metadata: list[list[dict[str, Any]]] | None = None
    partial: bool = False
    failed_shards: list[int] = field(default_factory=list)

    @classmethod
    def from_arrays(
        cls,
        scores: np.ndarray,
        ids: np.ndarray,
        metadata: np.ndarray | None = None,
        failed_shards: Sequence[int] = (),
    ) -> SearchResult:
        filled = scores != MISSING_SCORE
        return cls(
            ids=[[str(i) for i in row[f]] for row, f in zip(ids, filled)],
            scores=[[float(s) for s in row[f]] for row, f in zip(scores, filled)],
            metadata=None if metadata is None else [list(row[f]) for row, f in zip(metadata, filled)],
            partial=bool(failed_shards),
            failed_shards=list(failed_shards),
        )

    def query(self, q: int) -> list[dict[str, Any]]:
        """Query q's results as dicts: item_id, score and metadata fields."""
        out = []
        for pos, (item, score) in enumerate(zip(self.ids[q], self.scores[q])):
            row = dict(self.metadata[q][pos] or {}) if self.metadata is not None else {}
            row.update(item_id=item, score=score)
            out.append(row)
        return out
