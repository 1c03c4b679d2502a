"""User changes and user states as Arrow: the user-vector actors' log records and snapshots."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from rayrec.index.vector_codec import vectors_column, vectors_of
from rayrec.users.user_state import UserChange, UserState, UserStore

_SOURCE = pa.list_(pa.float32())  # a text embedding (any length), or null


def _sources(values: list[np.ndarray | None]) -> pa.Array:
    return pa.array([None if v is None else np.asarray(v, np.float32) for v in values], _SOURCE)


def _source(value: list[float] | None) -> np.ndarray | None:
    return None if value is None else np.asarray(value, np.float32)


def _vectors(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def log_schema(dim: int) -> pa.Schema:
    """One row per UserChange."""
    return pa.schema(
        [
            ("kind", pa.string()),
            ("user_id", pa.string()),
            ("version", pa.int64()),
            ("vector", _vectors(dim)),
            ("updated_at", pa.float64()),
            ("event_id", pa.string()),
            ("event", pa.string()),
            ("items", pa.list_(pa.string())),
            ("source", _SOURCE),
        ]
    )


def _vector_array(vectors: list[np.ndarray] | np.ndarray, dim: int) -> pa.Array:
    flat = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), dim)


def _matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def changes_to_batch(changes: list[UserChange], dim: int) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array([c.kind for c in changes], pa.string()),
            pa.array([c.user_id for c in changes], pa.string()),
            pa.array([c.version for c in changes], pa.int64()),
            _vector_array([c.vector for c in changes], dim),
            pa.array([c.updated_at for c in changes], pa.float64()),
            pa.array([c.event_id for c in changes], pa.string()),
            pa.array([c.event for c in changes], pa.string()),
            pa.array([c.items for c in changes], pa.list_(pa.string())),
            _sources([c.source for c in changes]),
        ],
        schema=log_schema(dim),
    )


def batch_to_changes(batch: pa.RecordBatch, dim: int) -> Iterator[UserChange]:
    cols = batch.to_pydict()
    vectors = _matrix(batch.column("vector"), dim)
    sources = cols.get("source") or [None] * batch.num_rows  # logs written before sources were kept
    for r in range(batch.num_rows):
        yield UserChange(
            cols["kind"][r],
            cols["user_id"][r],
            cols["version"][r],
            vectors[r],
            cols["updated_at"][r],
            cols["event_id"][r],
            cols["event"][r],
            cols["items"][r] or [],
            _source(sources[r]),
        )


_HISTORY = pa.list_(pa.struct([("item_id", pa.string()), ("event", pa.string()), ("timestamp", pa.float64())]))


def store_to_table(store: UserStore) -> pa.Table:
    """Every user's vector, version, updated_at, history and remembered event ids."""
    users = store.items()
    return pa.table(
        {
            "user_id": pa.array([u for u, _ in users], pa.string()),
            "vector": vectors_column(np.asarray([s.vector for _, s in users] or np.empty((0, store.dim)), np.float32)),
            "version": pa.array([s.version for _, s in users], pa.int64()),
            "updated_at": pa.array([s.updated_at for _, s in users], pa.float64()),
            "history": pa.array([list(s.history) for _, s in users], _HISTORY),
            "event_ids": pa.array([list(s.event_ids) for _, s in users], pa.list_(pa.string())),
            "base_source": _sources([None if s.base is None else s.base[0] for _, s in users]),
            "base_at": pa.array([None if s.base is None else s.base[1] for _, s in users], pa.float64()),
        }
    )


def _base(source: list[float] | None, at: float | None, kept: bool, cols: dict[str, list], r: int) -> Any:
    """A user's base from a snapshot. Snapshots from before bases were kept: a user with no history can
    only have been set by a vector, of unknown origin, so is taken as set by a raw one."""
    if kept:
        return None if at is None else (_source(source), at)
    return (None, cols["updated_at"][r]) if not cols["history"][r] else None


def table_to_store(table: pa.Table, store: UserStore) -> None:
    """Restores the users of a snapshot table into store."""
    vectors = vectors_of(table.column("vector"), store.dim)
    cols = {
        name: table.column(name).to_pylist() for name in ("user_id", "version", "updated_at", "history", "event_ids")
    }
    none = [None] * table.num_rows  # snapshots written before bases were kept
    base_source = table.column("base_source").to_pylist() if "base_source" in table.column_names else none
    base_at = table.column("base_at").to_pylist() if "base_at" in table.column_names else none
    for r, user_id in enumerate(cols["user_id"]):
        history: Iterable[tuple[str, str, float]] = (
            (h["item_id"], h["event"], h["timestamp"]) for h in cols["history"][r] or []
        )
        store.restore(
            user_id,
            UserState(
                vector=vectors[r].copy(),
                version=cols["version"][r],
                updated_at=cols["updated_at"][r],
                history=deque(history),
                event_ids=OrderedDict.fromkeys(cols["event_ids"][r] or []),
                base=_base(base_source[r], base_at[r], "base_at" in table.column_names, cols, r),
            ),
        )
