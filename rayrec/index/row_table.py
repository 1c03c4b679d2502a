"""A shard's item rows in snapshots: one Arrow table row per row, live and tombstoned, read back in either layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from rayrec.index.metadata import CATEGORY, rows_of
from rayrec.index.vector_codec import vectors_column, vectors_of

# Older snapshots kept each metadata field as a column named this plus the field's name.
META_PREFIX = "meta."
# Snapshots keep every row's metadata fields (category aside) in one sparse map column.
META_COLUMN = "metadata"
META_TYPE = pa.map_(pa.string(), pa.string())


@dataclass(slots=True)
class RowColumns:
    """The rows of a snapshot table, as ItemRows takes them."""

    ids: list[str]
    vectors: np.ndarray  # (n, dim) float32
    alive: np.ndarray  # (n,) bool
    categories: pa.ChunkedArray  # strings, null where a row has none
    extra: list[dict[str, str] | None]  # per row, its metadata fields (category aside)


def encode(
    ids: np.ndarray, vectors: np.ndarray, alive: np.ndarray, categories: list[str | None], extra: np.ndarray
) -> pa.Table:
    """The table of n rows: item_id, vector, alive, category and the sparse metadata map."""
    return pa.table({
        "item_id": pa.array(ids.tolist(), pa.string()),
        "vector": vectors_column(vectors),
        "alive": pa.array(alive),
        CATEGORY: pa.array(categories, pa.string()),
        META_COLUMN: pa.array([list(m.items()) if m else None for m in extra], META_TYPE),
    })


def decode(table: pa.Table, dim: int) -> RowColumns:
    """An encode() table's rows back, or an older snapshot's (one column per metadata field)."""
    n = table.num_rows
    if META_COLUMN in table.column_names:
        extra = [dict(m) if m else None for m in table.column(META_COLUMN).to_pylist()]
    else:
        old = {name[len(META_PREFIX) :]: table.column(name).to_pylist()
               for name in table.column_names if name.startswith(META_PREFIX)}
        extra = rows_of(old, n)
    return RowColumns(
        ids=table.column("item_id").to_pylist(),
        vectors=vectors_of(table.column("vector"), dim),
        alive=table.column("alive").to_numpy(zero_copy_only=False),
        categories=table.column(CATEGORY),
        extra=extra,
    )
