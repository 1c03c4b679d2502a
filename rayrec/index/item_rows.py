"""One shard's item rows: the id <-> row map, each row's vector, category and metadata, and tombstones."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayrec import constants as C
from rayrec.catalogs.catalog import ItemBatch
from rayrec.exceptions import InvalidInputError
from rayrec.index import row_table
from rayrec.index.metadata import CATEGORY, columns_of, rows_of
from rayrec.routing.topk import MISSING_ID

_NO_CATEGORY = -1


class ItemRows:
    """Items in rows, in the order they were written; replacing or deleting an item tombstones its row.

    Row r holds the r-th item written since the last compact(); rows 0..n-1 are used (live and
    tombstoned). The faiss index and the search read `vectors[:n]`; only this class writes rows.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0  # rows used (live + tombstoned)
        self.vectors = np.empty((0, dim), dtype=np.float32)
        self._cap = 0
        self._alive = np.empty(0, dtype=bool)
        self._category = np.empty(0, dtype=np.int32)
        self._ids = np.empty(0, dtype=object)
        self._row: dict[str, int] = {}
        self._cat_code: dict[str, int] = {}
        # Per row, the item's own metadata fields (category aside), None when it has none: sparse, so
        # a field only some items have costs nothing on the others.
        self._extra = np.empty(0, dtype=object)
        self._fields: Counter[str] = Counter()  # live rows holding each field name
        self._sum = np.zeros(dim, dtype=np.float64)
        self._alive_bitmap: np.ndarray | None = None

    # ----- writes ---------------------------------------------------------
    def _reserve(self, extra: int) -> None:
        """Makes room for extra more rows (growing by doubling, at least C.SHARD_INITIAL_ROWS)."""
        need = self.n + extra
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap, C.SHARD_INITIAL_ROWS)
        vectors = np.empty((cap, self.dim), dtype=np.float32)
        vectors[: self.n] = self.vectors[: self.n]
        self.vectors = vectors
        for name, fill, dtype in (
            ("_alive", False, bool), ("_category", _NO_CATEGORY, np.int32), ("_ids", MISSING_ID, object),
            ("_extra", None, object),
        ):
            grown = np.full(cap, fill, dtype=dtype)
            grown[: self.n] = getattr(self, name)[: self.n]
            setattr(self, name, grown)
        self._cap = cap

    def write(self, ids: list[str], vectors: np.ndarray, metadata: Mapping[str, list[str | None]]) -> None:
        """Appends a row per item, tombstoning the rows these ids held before.

        Args:
            ids: distinct item ids, checked.
            vectors: (len(ids), dim) float32, checked and normalised.
            metadata: checked columns of len(ids) values each (category among them or not).
        """
        n = len(ids)
        self._reserve(n)
        for item in ids:
            old = self._row.get(item)
            if old is not None:
                self._kill(old)
        start = self.n
        self.vectors[start : start + n] = vectors
        self._alive[start : start + n] = True
        self._ids[start : start + n] = ids
        self._category[start : start + n] = [self._code(c) for c in metadata.get(CATEGORY, [None] * n)]
        extra = rows_of({name: col for name, col in metadata.items() if name != CATEGORY}, n)
        self._extra[start : start + n] = extra
        for row in extra:
            if row:
                self._fields.update(row.keys())
        self._row.update(zip(ids, range(start, start + n)))
        self._sum += vectors.sum(axis=0, dtype=np.float64)
        self.n += n
        self._alive_bitmap = None

    def delete(self, ids: Sequence[str]) -> int:
        """Tombstones the rows of these (checked) ids; unknown ids are ignored. Returns how many were live."""
        deleted = 0
        for item in ids:
            row = self._row.pop(item, None)
            if row is not None:
                self._kill(row)
                deleted += 1
        return deleted

    def _kill(self, row: int) -> None:
        self._alive[row] = False
        extra = self._extra[row]
        if extra:
            self._fields.subtract(extra.keys())
            self._fields += Counter()  # drops the names no live row holds any more
        self._sum -= self.vectors[row]
        self._alive_bitmap = None

    def compact(self) -> None:
        """Drops tombstoned rows: the live ones keep their order, renumbered from 0."""
        live = self.live()
        self.vectors = np.ascontiguousarray(self.vectors[live])
        self._alive = np.ones(live.size, dtype=bool)
        self._category = self._category[live].copy()
        self._ids = self._ids[live].copy()
        self._extra = self._extra[live].copy()
        self._row = {item: r for r, item in enumerate(self._ids)}
        self._sum = self.vectors.sum(axis=0, dtype=np.float64)
        self.n = self._cap = live.size
        self._alive_bitmap = None

    def _code(self, category: str | None) -> int:
        if category is None:
            return _NO_CATEGORY
        return self._cat_code.setdefault(category, len(self._cat_code))

    def _names(self) -> dict[int, str]:
        return {code: name for name, code in self._cat_code.items()}

    # ----- metadata field names -------------------------------------------
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

    # ----- reads ----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, item: str) -> bool:
        return item in self._row

    @property
    def tombstones(self) -> int:
        """Rows used by items since replaced or deleted."""
        return self.n - len(self._row)

    def live(self) -> np.ndarray:
        """The live row numbers, in order."""
        return np.flatnonzero(self._alive[: self.n])

    def live_mask(self) -> np.ndarray:
        """Per used row, whether it is live (a view: do not write to it)."""
        return self._alive[: self.n]

    def live_bitmap(self) -> np.ndarray:
        """live_mask() packed little-endian for faiss.IDSelectorBitmap, kept until a row changes."""
        if self._alive_bitmap is None:
            self._alive_bitmap = np.packbits(self.live_mask(), bitorder="little")
        return self._alive_bitmap

    def eligible(self, excluded_rows: np.ndarray, categories: Sequence[str] | None) -> np.ndarray:
        """Per used row, whether it is live, in one of the categories (None: any) and not excluded."""
        mask = self.live_mask().copy()
        if categories is not None:
            codes = [self._cat_code[c] for c in categories if c in self._cat_code]
            mask &= np.isin(self._category[: self.n], codes)
        mask[excluded_rows] = False
        return mask

    def live_rows_of(self, ids: Collection[str]) -> np.ndarray:
        """The distinct live rows of these ids, sorted (ids not held here are left out)."""
        return np.unique(np.array([self._row[i] for i in ids if i in self._row], dtype=np.int64))

    def ids_at(self, rows: np.ndarray) -> np.ndarray:
        """The item id of each of these rows (object array shaped like rows)."""
        return self._ids[rows]

    def vector_sum(self) -> tuple[np.ndarray, int]:
        """Sum of the live (normalised) vectors and their count."""
        return self._sum.copy(), len(self._row)

    def category_counts(self) -> dict[str, int]:
        """Live items per category (items without one are not counted)."""
        codes = self._category[: self.n][self.live_mask()]
        counts = np.bincount(codes[codes != _NO_CATEGORY], minlength=len(self._cat_code))
        return {name: int(counts[code]) for name, code in self._cat_code.items() if counts[code]}

    def fetch(self, ids: list[str]) -> list[dict[str, Any] | None]:
        """Per (checked) id, a dict of item_id, vector (float32) and metadata; None when absent."""
        meta = self.metadata_of(np.array(ids, dtype=object))
        return [None if record is None else {"item_id": item, "vector": self.vectors[self._row[item]].copy(), **record}
                for item, record in zip(ids, meta)]

    def live_items(self) -> ItemBatch:
        """Every live item (id, vector, metadata including category), in row order."""
        live = self.live()
        names = self._names()
        metadata = {CATEGORY: [names.get(int(c)) for c in self._category[live]]}
        metadata.update(columns_of(self._extra[live].tolist()))
        return ItemBatch(self._ids[live].tolist(), self.vectors[live].copy(), metadata)

    def metadata_of(self, ids: np.ndarray, leave_out: Collection[str] = ()) -> np.ndarray:
        """Object array shaped like ids: the metadata dict of each id (None for ""): its category and the
        fields it was written with, without the leave_out fields."""
        names = self._names()
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
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        found = []
        for pos, item in enumerate(ids):
            row = self._row.get(item)
            found.append(row is not None)
            if row is not None:
                out[pos] = self.vectors[row]
        return out, found

    # ----- snapshots --------------------------------------------------------
    def to_table(self) -> pa.Table:
        """Every used row, live and tombstoned, in row order (rayrec.index.row_table's layout)."""
        n, names = self.n, self._names()
        categories = [names.get(int(c)) for c in self._category[:n]]
        return row_table.encode(self._ids[:n], self.vectors[:n], self._alive[:n], categories, self._extra[:n])

    def load(self, table: pa.Table, vector_sum: Sequence[float] | None) -> None:
        """Takes a to_table() table's rows as these (empty) rows.

        vector_sum: the live vectors' sum as recorded with the table (None: summed again here).
        """
        assert self.n == 0, "rows are loaded into empty rows only"
        rows = row_table.decode(table, self.dim)
        n = len(rows.ids)
        self._reserve(n + max(C.SHARD_INITIAL_ROWS, n // 8))  # room for the log tail without doubling
        self.vectors[:n] = rows.vectors
        self._alive[:n] = rows.alive
        self._ids[:n] = rows.ids
        categories = pc.dictionary_encode(rows.categories).combine_chunks()
        self._cat_code = {name: code for code, name in enumerate(categories.dictionary.to_pylist())}
        self._category[:n] = categories.indices.fill_null(_NO_CATEGORY).to_numpy(zero_copy_only=False)
        self._extra[:n] = rows.extra
        live = np.flatnonzero(self._alive[:n])
        self._fields = Counter(name for r in live if self._extra[r] for name in self._extra[r])
        self._row = {self._ids[r]: int(r) for r in live}
        if vector_sum is not None:
            self._sum = np.asarray(vector_sum, dtype=np.float64)
        else:
            self._sum = self.vectors[live].sum(axis=0, dtype=np.float64)
        self.n = n
        self._alive_bitmap = None
