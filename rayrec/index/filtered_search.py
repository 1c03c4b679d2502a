"""Top-k over one shard's live rows, with per-query exclusions and category filters: through faiss or exactly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rayrec import constants as C
from rayrec.index import faiss_kinds
from rayrec.index.item_rows import ItemRows
from rayrec.index.row_index import RowIndex
from rayrec.routing.topk import MISSING_ID, MISSING_SCORE

# Per query, a list of strings (the ids it excludes, or the categories it allows) or None; None for none at all.
PerQuery = Sequence[Sequence[str] | None] | None


class FilteredSearch:
    """Searches an ItemRows through its RowIndex, letting faiss see only the eligible rows (an IDSelector).

    So deletes hold for every index kind, HNSW included. The answer is exact where faiss is not ready, where
    few rows are eligible, or for the queries an approximate index found too few eligible rows for.
    """

    def __init__(self, rows: ItemRows, index: RowIndex) -> None:
        self.rows = rows
        self.index = index

    def search(
        self, queries: np.ndarray, k: int, excludes: PerQuery = None, categories: PerQuery = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k live items per query: ItemIndex.search, whose Args and Returns hold here."""
        rows = self.rows
        nq = queries.shape[0]
        excludes = excludes or [None] * nq
        categories = categories or [None] * nq
        scores = np.full((nq, k), MISSING_SCORE, dtype=np.float32)
        ids = np.full((nq, k), MISSING_ID, dtype=object)
        if nq == 0 or not len(rows):
            return scores, ids
        # Excluded ids this shard does not hold change nothing here; the rest are (live) rows.
        excluded = [rows.live_rows_of(e or ()) for e in excludes]
        # Queries without a category filter go as one batched search over the live rows, each asking
        # for k plus the most excluded rows of any of them, then dropping their own excluded rows: no
        # per-query mask over every row. _search_mask returns min(wanted, live) rows (exactly, where an
        # approximate index found fewer), so min(k, eligible) remain once the excluded are dropped.
        overfetch = C.EXCLUDE_OVERFETCH_MAX_ROWS
        batched = [q for q in range(nq) if categories[q] is None and len(excluded[q]) <= overfetch]
        alone = [q for q in range(nq) if categories[q] is not None or len(excluded[q]) > overfetch]
        if batched:
            extra = max(len(excluded[q]) for q in batched)
            mask = None if rows.tombstones == 0 else rows.live_mask()
            s, r = self._search_mask(queries[batched], k + extra, mask, len(rows), alive_only=True)
            if extra:
                s, r = _drop_rows(s, r, [excluded[q] for q in batched], k)
            self._fill(scores, ids, batched, s, r)
        for q in alone:
            mask = rows.eligible(excluded[q], categories[q])
            s, r = self._search_mask(queries[q : q + 1], k, mask, int(mask.sum()))
            self._fill(scores, ids, [q], s, r)
        return scores, ids

    def _fill(self, scores: np.ndarray, ids: np.ndarray, at: list[int], s: np.ndarray, rows: np.ndarray) -> None:
        width = s.shape[1]
        valid = rows >= 0
        taken = np.full(rows.shape, MISSING_ID, dtype=object)
        taken[valid] = self.rows.ids_at(rows[valid])
        ids[at, :width] = taken
        scores[at, :width] = np.where(valid, s, MISSING_SCORE)

    def _search_mask(
        self, q: np.ndarray, k: int, mask: np.ndarray | None, eligible: int, alive_only: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Searches rows allowed by mask (None = all rows); eligible = how many that is.

        alive_only says the mask is exactly the live rows, whose bitmap is cached.
        """
        want = min(k, eligible)
        if want == 0:
            return np.full((q.shape[0], 0), MISSING_SCORE, np.float32), np.full((q.shape[0], 0), -1, np.int64)
        if not self.index.ready(self.rows) or (mask is not None and eligible <= C.EXACT_SUBSET_MAX_ROWS):
            return self._exact(q, want, mask)
        keep = None
        if mask is not None:
            keep = self.rows.live_bitmap() if alive_only else np.packbits(mask, bitorder="little")
        s, r = self.index.search(q, want, keep, eligible / max(self.rows.n, 1))
        short = np.flatnonzero((r >= 0).sum(axis=1) < want)
        if short.size:  # an approximate index missed eligible items: answer those exactly
            es, er = self._exact(q[short], want, mask)
            s[short], r[short] = es, er
        return s, r

    def _exact(self, q: np.ndarray, want: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero(mask if mask is not None else self.rows.live_mask())
        return faiss_kinds.exact_topk(q, self.rows.vectors, rows, want)


def _drop_rows(s: np.ndarray, r: np.ndarray, excluded: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, its results without its excluded rows, k wide (best first, missing slots -1)."""
    nq = s.shape[0]
    out_s = np.full((nq, k), MISSING_SCORE, dtype=np.float32)
    out_r = np.full((nq, k), -1, dtype=np.int64)
    for q in range(nq):
        keep = r[q] >= 0
        if excluded[q].size:  # a few dozen rows against a few dozen: a broadcast beats np.isin's set-up
            keep &= ~(r[q][:, None] == excluded[q][None, :]).any(axis=1)
        kept = np.flatnonzero(keep)[:k]
        out_s[q, : kept.size], out_r[q, : kept.size] = s[q, kept], r[q, kept]
    return out_s, out_r
