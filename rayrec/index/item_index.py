"""One shard's items: their rows, a faiss index over them and filtered search, composed into one index."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from rayrec import constants as C
from rayrec.catalogs.catalog import ItemBatch
from rayrec.config import IndexConfig
from rayrec.index.filtered_search import FilteredSearch, PerQuery
from rayrec.index.item_rows import ItemRows
from rayrec.index.metadata import check_items
from rayrec.index.row_index import RowIndex
from rayrec.validation import check_ids


class ItemIndex:
    """The items of one shard, searchable by inner product over L2-normalised vectors.

    Its rows (ItemRows: ids, vectors, metadata, tombstones) are indexed by faiss (RowIndex), whose ids are
    row numbers: row r holds the r-th vector added since the last compaction. Replacing or deleting an item
    tombstones its row; searches (FilteredSearch) select live rows only, so every index kind honours deletes,
    including those faiss cannot remove from (HNSW). Rows are compacted once tombstones pass a configured share.
    """

    def __init__(self, config: IndexConfig, build_threads: int | None = None) -> None:
        self.config = config
        self.build_threads = build_threads
        self._rows = ItemRows(config.dim)
        self._row_index = RowIndex(config, build_threads)
        self._filtered = FilteredSearch(self._rows, self._row_index)

    @property
    def index_ready(self) -> bool:
        """Whether searches go through faiss (an untrained IVF answers exactly instead)."""
        return self._row_index.ready(self._rows)

    # ----- writes ---------------------------------------------------------
    def upsert(
        self, ids: Sequence[Any], vectors: Any, metadata: Mapping[str, Sequence[Any]] | None = None
    ) -> int:
        """Inserts items, replacing any with the same id (the last of duplicates wins).

        Args:
            ids: item ids (non-empty strings, or integers taken as strings).
            vectors: (n, dim) array; normalised here.
            metadata: string columns of n values each (None allowed), e.g. category.

        Returns:
            The number of items written. Nothing is written if any input is bad.
        """
        ids, vecs, meta = check_items(ids, vectors, metadata, self.config.dim)
        n = len(ids)
        last = {item: pos for pos, item in enumerate(ids)}
        if len(last) != n:
            keep = sorted(last.values())
            ids = [ids[p] for p in keep]
            vecs = vecs[keep]
            meta = {name: [col[p] for p in keep] for name, col in meta.items()}
            n = len(ids)
        if n == 0:
            return 0
        self._rows.write(ids, vecs, meta)
        self._row_index.sync(self._rows)
        self._maybe_compact()
        return n

    def check_room(self, metadata: Mapping[str, Sequence[Any]] | None) -> None:
        """Refuses (before anything is logged or written) metadata that would bring this shard's distinct
        field names over C.MAX_METADATA_FIELDS_PER_SHARD."""
        self._rows.check_room(metadata)

    def field_names(self) -> list[str]:
        """The metadata field names this shard's live items hold (category aside)."""
        return self._rows.field_names()

    def delete(self, ids: Sequence[Any]) -> int:
        """Deletes items by id; unknown ids are ignored. Returns how many were deleted."""
        deleted = self._rows.delete(check_ids(ids))
        if deleted:
            self._maybe_compact()
        return deleted

    def clear(self) -> None:
        """Removes every item."""
        self.__init__(self.config, self.build_threads)  # type: ignore[misc]

    def _maybe_compact(self) -> None:
        """Compacts once tombstones pass compact_ratio, unless that means an HNSW rebuild.

        Rebuilding a graph takes minutes on a large shard, during which the shard
        answers nothing; HNSW shards compact only when asked (compact()).
        Tombstones cost nothing in correctness: searches skip them.
        """
        if self._row_index.is_hnsw:
            return
        dead = self._rows.tombstones
        if dead >= C.COMPACT_MIN_ROWS and dead >= self.config.compact_ratio * self._rows.n:
            self.compact()

    def compact(self) -> None:
        """Drops tombstoned rows and rebuilds the faiss index over the live ones."""
        self._rows.compact()
        self._row_index.rebuild(self._rows)

    # ----- reads ----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    @property
    def tombstones(self) -> int:
        """Rows that are dead but still in the faiss index."""
        return self._rows.tombstones

    def __contains__(self, item: str) -> bool:
        """Whether a live item has this id."""
        return item in self._rows

    def vector_sum(self) -> tuple[np.ndarray, int]:
        """Sum of the live (normalised) vectors and their count."""
        return self._rows.vector_sum()

    def category_counts(self) -> dict[str, int]:
        """Live items per category (items without one are not counted)."""
        return self._rows.category_counts()

    def fetch(self, ids: Sequence[Any]) -> list[dict[str, Any] | None]:
        """Per id, a dict of item_id, vector (float32) and metadata; None when absent."""
        return self._rows.fetch(check_ids(ids))

    def live_items(self) -> ItemBatch:
        """Every live item (id, vector, metadata including category), in row order: a re-shard's copy."""
        return self._rows.live_items()

    def metadata_of(self, ids: np.ndarray, leave_out: Collection[str] = ()) -> np.ndarray:
        """Object array shaped like ids: the metadata dict of each id (None for ""): its category and the
        fields it was written with, without the leave_out fields."""
        return self._rows.metadata_of(ids, leave_out)

    def vectors_of(self, ids: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Vectors of the given ids (zeros where absent) and which were found."""
        return self._rows.vectors_of(ids)

    # ----- search ---------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, excludes: PerQuery = None, categories: PerQuery = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k live items per query, honouring per-query exclusions and category filters.

        Args:
            queries: (nq, dim) float32, already checked and normalised.
            k: results per query.
            excludes: per query, item ids never to return (or None).
            categories: per query, the categories allowed (or None for all).

        Returns:
            (scores (nq, k) float32, ids (nq, k) object), best first; when fewer
            than k items are eligible the tail holds -inf and "".
        """
        return self._filtered.search(queries, k, excludes, categories)

    # ----- snapshots --------------------------------------------------------
    def export_state(self) -> tuple[pa.Table, bytes | None, dict[str, Any]]:
        """Every row (live and tombstoned, in row order), the faiss index bytes and counters.

        A flat index is left out (rebuilt from the vectors in a memcpy); others are
        kept whole, so recovery never retrains or rebuilds a graph.
        """
        blob, info = self._row_index.export_state()
        info["vector_sum"] = self._rows.vector_sum()[0].tolist()  # summing a million vectors again is seconds
        return self._rows.to_table(), blob, info

    def import_state(self, table: pa.Table, blob: bytes | None, info: dict[str, Any]) -> None:
        """Replaces this index's content with an exported state."""
        self.clear()
        self._rows.load(table, info.get("vector_sum"))
        self._row_index.restore(blob, info)
        self._row_index.sync(self._rows)
