"""One shard's items: a faiss inner-product index, the string-id map, metadata and tombstones.

faiss ids are row numbers: row r holds the r-th vector ever added since the last
compaction. Replacing or deleting an item tombstones its row; searches select
live rows only (an IDSelector), so every index kind honours deletes, including
those faiss cannot remove from (HNSW). Rows are compacted once tombstones pass
a configured share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayrec import constants as C
from rayrec.catalogs.catalog import ItemBatch
from rayrec.config import IndexConfig
from rayrec.exceptions import InvalidInputError
from rayrec.index import faiss_kinds
from rayrec.index.metadata import CATEGORY, check_metadata, columns_of, rows_of
from rayrec.index.vector_codec import vectors_column, vectors_of
from rayrec.routing.topk import MISSING_ID, MISSING_SCORE
from rayrec.validation import check_ids, check_vectors

_NO_CATEGORY = -1
# Older snapshots kept each metadata field as a column named this plus the field's name.
META_PREFIX = "meta."
# Snapshots keep every row's metadata fields (category aside) in one sparse map column.
META_COLUMN = "metadata"
META_TYPE = pa.map_(pa.string(), pa.string())


class ItemIndex:
    """The items of one shard, searchable by inner product over L2-normalised vectors."""

    def __init__(self, config: IndexConfig, build_threads: int | None = None) -> None:
        self.config = config
        self.build_threads = build_threads
        self._index = self._new_faiss_index()
        self._cap = 0
        self._n = 0  # rows used (live + tombstoned)
        self._indexed = 0  # rows already added to the faiss index
        self._vectors = np.empty((0, config.dim), dtype=np.float32)
        self._alive = np.empty(0, dtype=bool)
        self._category = np.empty(0, dtype=np.int32)
        self._ids = np.empty(0, dtype=object)
        self._row: dict[str, int] = {}
        self._cat_code: dict[str, int] = {}
        # Per row, the item's own metadata fields (category aside), None when it has none: sparse, so
        # a field only some items have costs nothing on the others.
        self._extra = np.empty(0, dtype=object)
        self._fields: Counter[str] = Counter()  # live rows holding each field name
        self._sum = np.zeros(config.dim, dtype=np.float64)
        self._alive_bitmap: np.ndarray | None = None

    # ----- faiss plumbing -------------------------------------------------
    def _new_faiss_index(self) -> faiss.Index:
        cfg = self.config
        return faiss_kinds.new_index(cfg.dim, cfg.factory, cfg.ef_search, cfg.nprobe)

    @property
    def index_ready(self) -> bool:
        """Whether searches go through faiss (an untrained IVF answers exactly instead)."""
        return bool(self._index.is_trained) and self._indexed == self._n

    def _sync_index(self) -> None:
        """Trains the index when it needs and can, then adds rows not yet indexed."""
        with faiss_kinds.omp_threads(self.build_threads):
            if not self._index.is_trained:
                live = np.flatnonzero(self._alive[: self._n])
                need, most = faiss_kinds.train_sizes(self._index)
                if live.size < need:
                    return  # too few vectors to train: searched exactly until then
                rng = np.random.default_rng(0)
                sample = rng.choice(live, size=min(live.size, most), replace=False)
                self._index.train(self._vectors[np.sort(sample)])
            if self._indexed < self._n:
                self._index.add(self._vectors[self._indexed : self._n])
                self._indexed = self._n

    # ----- storage --------------------------------------------------------
    def _reserve(self, extra: int) -> None:
        need = self._n + extra
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap, C.SHARD_INITIAL_ROWS)
        vectors = np.empty((cap, self.config.dim), dtype=np.float32)
        vectors[: self._n] = self._vectors[: self._n]
        self._vectors = vectors
        for name, fill, dtype in (
            ("_alive", False, bool), ("_category", _NO_CATEGORY, np.int32), ("_ids", MISSING_ID, object),
            ("_extra", None, object),
        ):
            grown = np.full(cap, fill, dtype=dtype)
            grown[: self._n] = getattr(self, name)[: self._n]
            setattr(self, name, grown)
        self._cap = cap

    def _kill_row(self, row: int) -> None:
        self._alive[row] = False
        extra = self._extra[row]
        if extra:
            self._fields.subtract(extra.keys())
            self._fields += Counter()  # drops the names no live row holds any more
        self._sum -= self._vectors[row]
        self._alive_bitmap = None

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
        ids = check_ids(ids)
        vecs = check_vectors(vectors, self.config.dim)
        n = len(ids)
        if vecs.shape[0] != n:
            raise InvalidInputError(f"got {n} ids but {vecs.shape[0]} vectors")
        meta = check_metadata(metadata, n)
        last = {item: pos for pos, item in enumerate(ids)}
        if len(last) != n:
            keep = sorted(last.values())
            ids = [ids[p] for p in keep]
            vecs = vecs[keep]
            meta = {name: [col[p] for p in keep] for name, col in meta.items()}
            n = len(ids)
        if n == 0:
            return 0

        self._reserve(n)
        for item in ids:
            old = self._row.get(item)
            if old is not None:
                self._kill_row(old)
        start = self._n
        rows = range(start, start + n)
        self._vectors[start : start + n] = vecs
        self._alive[start : start + n] = True
        self._ids[start : start + n] = ids
        categories = meta.pop(CATEGORY, [None] * n)
        self._category[start : start + n] = [self._code(c) for c in categories]
        extra = rows_of(meta, n)
        self._extra[start : start + n] = extra
        for row in extra:
            if row:
                self._fields.update(row.keys())
        self._row.update(zip(ids, rows))
        self._sum += vecs.sum(axis=0, dtype=np.float64)
        self._n += n
        self._alive_bitmap = None
        self._sync_index()
        self._maybe_compact()
        return n

    def check_room(self, metadata: Mapping[str, Sequence[Any]] | None) -> None:
        """Refuses (before anything is logged or written) metadata that would bring this shard's distinct
        field names over C.MAX_METADATA_FIELDS_PER_SHARD."""
        new = [name for name, col in (metadata or {}).items()
               if name != CATEGORY and name not in self._fields and any(v is not None for v in col)]
        if new and len(self._fields) + len(new) > C.MAX_METADATA_FIELDS_PER_SHARD:
            raise InvalidInputError(
                f"metadata fields {sorted(new)[:5]} would give this shard {len(self._fields) + len(new)} distinct "
                f"field names; at most {C.MAX_METADATA_FIELDS_PER_SHARD} are accepted per shard"
            )

    def field_names(self) -> list[str]:
        """The metadata field names this shard's live items hold (category aside)."""
        return sorted(self._fields)

    def _code(self, category: str | None) -> int:
        if category is None:
            return _NO_CATEGORY
        return self._cat_code.setdefault(category, len(self._cat_code))

    def delete(self, ids: Sequence[Any]) -> int:
        """Deletes items by id; unknown ids are ignored. Returns how many were deleted."""
        deleted = 0
        for item in check_ids(ids):
            row = self._row.pop(item, None)
            if row is not None:
                self._kill_row(row)
                deleted += 1
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
        if faiss_kinds.is_hnsw(self._index):
            return
        dead = self._n - len(self._row)
        if dead >= C.COMPACT_MIN_ROWS and dead >= self.config.compact_ratio * self._n:
            self.compact()

    def compact(self) -> None:
        """Drops tombstoned rows and rebuilds the faiss index over the live ones."""
        live = np.flatnonzero(self._alive[: self._n])
        trained_ivf = self._index.is_trained and faiss_kinds.ivf_of(self._index) is not None
        if trained_ivf:  # keep the trained coarse quantizer; only the lists are rebuilt
            index = faiss.clone_index(self._index)
            index.reset()
        else:
            index = self._new_faiss_index()
        self._vectors = np.ascontiguousarray(self._vectors[live])
        self._alive = np.ones(live.size, dtype=bool)
        self._category = self._category[live].copy()
        self._ids = self._ids[live].copy()
        self._extra = self._extra[live].copy()
        self._row = {item: r for r, item in enumerate(self._ids)}
        self._sum = self._vectors.sum(axis=0, dtype=np.float64)
        self._n = self._cap = live.size
        self._index = index
        self._indexed = 0
        self._alive_bitmap = None
        self._sync_index()

    # ----- reads ----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row)

    @property
    def tombstones(self) -> int:
        """Rows that are dead but still in the faiss index."""
        return self._n - len(self._row)

    def __contains__(self, item: str) -> bool:
        """Whether a live item has this id."""
        return item in self._row

    def vector_sum(self) -> tuple[np.ndarray, int]:
        """Sum of the live (normalised) vectors and their count."""
        return self._sum.copy(), len(self._row)

    def category_counts(self) -> dict[str, int]:
        """Live items per category (items without one are not counted)."""
        codes = self._category[: self._n][self._alive[: self._n]]
        counts = np.bincount(codes[codes != _NO_CATEGORY], minlength=len(self._cat_code))
        return {name: int(counts[code]) for name, code in self._cat_code.items() if counts[code]}

    def fetch(self, ids: Sequence[Any]) -> list[dict[str, Any] | None]:
        """Per id, a dict of item_id, vector (float32) and metadata; None when absent."""
        ids = check_ids(ids)
        meta = self.metadata_of(np.array(ids, dtype=object))
        out: list[dict[str, Any] | None] = []
        for item, record in zip(ids, meta):
            if record is None:
                out.append(None)
            else:
                out.append({"item_id": item, "vector": self._vectors[self._row[item]].copy(), **record})
        return out

    def live_items(self) -> ItemBatch:
        """Every live item (id, vector, metadata including category), in row order: a re-shard's copy."""
        live = np.flatnonzero(self._alive[: self._n])
        names = {code: name for name, code in self._cat_code.items()}
        metadata = {CATEGORY: [names.get(int(c)) for c in self._category[live]]}
        metadata.update(columns_of(self._extra[live].tolist()))
        return ItemBatch(self._ids[live].tolist(), self._vectors[live].copy(), metadata)

    def metadata_of(self, ids: np.ndarray, leave_out: Collection[str] = ()) -> np.ndarray:
        """Object array shaped like ids: the metadata dict of each id (None for ""): its category and the
        fields it was written with, without the leave_out fields."""
        names = {code: name for name, code in self._cat_code.items()}
        out = np.full(ids.shape, None, dtype=object)
        for pos, item in np.ndenumerate(ids):
            row = self._row.get(item)
            if row is not None:
                record = {CATEGORY: names.get(int(self._category[row]))}
                extra = self._extra[row]
                if extra:
                    record.update((name, v) for name, v in extra.items() if name not in leave_out)
                out[pos] = record
        return out

    def vectors_of(self, ids: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Vectors of the given ids (zeros where absent) and which were found."""
        out = np.zeros((len(ids), self.config.dim), dtype=np.float32)
        found = []
        for pos, item in enumerate(ids):
            row = self._row.get(item)
            found.append(row is not None)
            if row is not None:
                out[pos] = self._vectors[row]
        return out, found

    # ----- search ---------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        excludes: Sequence[Sequence[str] | None] | None = None,
        categories: Sequence[Sequence[str] | None] | None = None,
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
        nq = queries.shape[0]
        excludes = excludes or [None] * nq
        categories = categories or [None] * nq
        scores = np.full((nq, k), MISSING_SCORE, dtype=np.float32)
        ids = np.full((nq, k), MISSING_ID, dtype=object)
        if nq == 0 or not self._row:
            return scores, ids
        # Excluded ids this shard does not hold change nothing here; the rest are (live) rows.
        excluded = [
            np.unique(np.array([self._row[i] for i in e or () if i in self._row], dtype=np.int64)) for e in excludes
        ]
        # Queries without a category filter go as one batched search over the live rows, each asking
        # for k plus the most excluded rows of any of them, then dropping their own excluded rows: no
        # per-query mask over every row. _search_mask returns min(wanted, live) rows (exactly, where an
        # approximate index found fewer), so min(k, eligible) remain once the excluded are dropped.
        overfetch = C.EXCLUDE_OVERFETCH_MAX_ROWS
        batched = [q for q in range(nq) if categories[q] is None and len(excluded[q]) <= overfetch]
        alone = [q for q in range(nq) if categories[q] is not None or len(excluded[q]) > overfetch]
        if batched:
            extra = max(len(excluded[q]) for q in batched)
            live = len(self._row)
            mask = None if self.tombstones == 0 else self._alive[: self._n]
            s, r = self._search_mask(queries[batched], k + extra, mask, live, alive_only=True)
            if extra:
                s, r = self._drop_rows(s, r, [excluded[q] for q in batched], k)
            self._fill(scores, ids, batched, s, r)
        for q in alone:
            mask = self._mask(excluded[q], categories[q])
            s, r = self._search_mask(queries[q : q + 1], k, mask, int(mask.sum()))
            self._fill(scores, ids, [q], s, r)
        return scores, ids

    @staticmethod
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

    def _fill(self, scores: np.ndarray, ids: np.ndarray, at: list[int], s: np.ndarray, rows: np.ndarray) -> None:
        width = s.shape[1]
        valid = rows >= 0
        taken = np.full(rows.shape, MISSING_ID, dtype=object)
        taken[valid] = self._ids[rows[valid]]
        ids[at, :width] = taken
        scores[at, :width] = np.where(valid, s, MISSING_SCORE)

    def _mask(self, excluded_rows: np.ndarray, categories: Sequence[str] | None) -> np.ndarray:
        mask = self._alive[: self._n].copy()
        if categories is not None:
            codes = [self._cat_code[c] for c in categories if c in self._cat_code]
            mask &= np.isin(self._category[: self._n], codes)
        mask[excluded_rows] = False
        return mask

    def _search_mask(
        self, q: np.ndarray, k: int, mask: np.ndarray | None, eligible: int, alive_only: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Searches rows allowed by mask (None = all rows); eligible = how many that is.

        alive_only says the mask is exactly the live rows, whose bitmap is cached.
        """
        want = min(k, eligible)
        if want == 0:
            return np.full((q.shape[0], 0), MISSING_SCORE, np.float32), np.full((q.shape[0], 0), -1, np.int64)
        if not self.index_ready or (mask is not None and eligible <= C.EXACT_SUBSET_MAX_ROWS):
            return self._exact(q, want, mask)
        selector, keep = None, None
        if mask is not None:
            if alive_only:
                if self._alive_bitmap is None:
                    self._alive_bitmap = np.packbits(mask, bitorder="little")
                keep = self._alive_bitmap
            else:
                keep = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(keep.size, faiss.swig_ptr(keep))
        cfg = self.config
        params = faiss_kinds.search_params(self._index, cfg.ef_search, cfg.nprobe, selector, eligible / max(self._n, 1))
        s, r = self._index.search(q, want, params=params)
        del keep  # the bitmap must outlive the search call above
        short = np.flatnonzero((r >= 0).sum(axis=1) < want)
        if short.size:  # an approximate index missed eligible items: answer those exactly
            es, er = self._exact(q[short], want, mask)
            s[short], r[short] = es, er
        return s, r

    def _exact(self, q: np.ndarray, want: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        rows = np.flatnonzero(mask if mask is not None else self._alive[: self._n])
        return faiss_kinds.exact_topk(q, self._vectors, rows, want)

    # ----- snapshots --------------------------------------------------------
    def export_state(self) -> tuple[pa.Table, bytes | None, dict[str, Any]]:
        """Every row (live and tombstoned, in row order), the faiss index bytes and counters.

        A flat index is left out (rebuilt from the vectors in a memcpy); others are
        kept whole, so recovery never retrains or rebuilds a graph.
        """
        n = self._n
        names = {code: name for name, code in self._cat_code.items()}
        columns: dict[str, pa.Array] = {
            "item_id": pa.array(self._ids[:n].tolist(), pa.string()),
            "vector": vectors_column(self._vectors[:n]),
            "alive": pa.array(self._alive[:n]),
            CATEGORY: pa.array([names.get(int(c)) for c in self._category[:n]], pa.string()),
        }
        columns[META_COLUMN] = pa.array([list(m.items()) if m else None for m in self._extra[:n]], META_TYPE)
        blob = None if isinstance(self._index, faiss.IndexFlat) else faiss.serialize_index(self._index).tobytes()
        info = {
            "indexed": self._indexed if blob is not None else 0,
            "dim": self.config.dim,
            "factory": self.config.factory,
            "vector_sum": self._sum.tolist(),  # summing a million vectors again is seconds
        }
        return pa.table(columns), blob, info

    def import_state(self, table: pa.Table, blob: bytes | None, info: dict[str, Any]) -> None:
        """Replaces this index's content with an exported state."""
        self.clear()
        n = table.num_rows
        self._reserve(n + max(C.SHARD_INITIAL_ROWS, n // 8))  # room for the log tail without doubling
        self._vectors[:n] = vectors_of(table.column("vector"), self.config.dim)
        self._alive[:n] = table.column("alive").to_numpy(zero_copy_only=False)
        self._ids[:n] = table.column("item_id").to_pylist()
        categories = pc.dictionary_encode(table.column(CATEGORY)).combine_chunks()
        self._cat_code = {name: code for code, name in enumerate(categories.dictionary.to_pylist())}
        self._category[:n] = categories.indices.fill_null(_NO_CATEGORY).to_numpy(zero_copy_only=False)
        if META_COLUMN in table.column_names:
            self._extra[:n] = [dict(m) if m else None for m in table.column(META_COLUMN).to_pylist()]
        else:  # an older snapshot: one column per field
            old = {name[len(META_PREFIX) :]: table.column(name).to_pylist()
                   for name in table.column_names if name.startswith(META_PREFIX)}
            self._extra[:n] = rows_of(old, n)
        live = np.flatnonzero(self._alive[:n])
        self._fields = Counter(name for r in live if self._extra[r] for name in self._extra[r])
        self._row = {self._ids[r]: int(r) for r in live}
        if "vector_sum" in info:
            self._sum = np.asarray(info["vector_sum"], dtype=np.float64)
        else:
            self._sum = self._vectors[live].sum(axis=0, dtype=np.float64)
        self._n = n
        same_kind = info.get("dim") == self.config.dim and info.get("factory") == self.config.factory
        if blob is not None and same_kind:
            index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
            faiss_kinds.set_knobs(index, self.config.ef_search, self.config.nprobe)
            self._index = index
            self._indexed = int(info["indexed"])
        self._sync_index()
