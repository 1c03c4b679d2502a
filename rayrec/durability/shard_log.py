"""Shard writes as Arrow log records, and their replay into an ItemIndex."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from rayrec.index.item_index import ItemIndex

UPSERT = "upsert"
DELETE = "delete"
CLEAR = "clear"
POSITION = "position"  # a sequenced write that changed nothing: only the replica's position moves
SEQ = "seq"  # the column of a record's write position (records before it had none: position 0)

_META = pa.map_(pa.string(), pa.string())


def log_schema(dim: int) -> pa.Schema:
    """One row per item written (upsert, delete) or one row per clear."""
    return pa.schema(
        [
            ("op", pa.string()),
            ("item_id", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
            ("meta", _META),
            (SEQ, pa.int64()),
        ]
    )


def _seqs(n: int, seq: int | None) -> pa.Array:
    return pa.nulls(n, pa.int64()) if seq is None else pa.array([seq] * n, pa.int64())


def upsert_batch(
    ids: list[str], vectors: np.ndarray, metadata: dict[str, list[str | None]], dim: int, seq: int | None = None
) -> pa.RecordBatch:
    """The log record of an upsert (checked ids, normalised vectors, checked metadata)."""
    n = len(ids)
    names = list(metadata)
    meta = [[(name, metadata[name][r]) for name in names] for r in range(n)]
    flat = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)
    return pa.record_batch(
        [
            pa.array([UPSERT] * n, pa.string()),
            pa.array(ids, pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(flat), dim),
            pa.array(meta, _META),
            _seqs(n, seq),
        ],
        schema=log_schema(dim),
    )


def delete_batch(ids: list[str], dim: int, seq: int | None = None) -> pa.RecordBatch:
    n = len(ids)
    return pa.record_batch(
        [
            pa.array([DELETE] * n, pa.string()),
            pa.array(ids, pa.string()),
            pa.nulls(n, pa.list_(pa.float32(), dim)),
            pa.nulls(n, _META),
            _seqs(n, seq),
        ],
        schema=log_schema(dim),
    )


def clear_batch(dim: int, seq: int | None = None, op: str = CLEAR) -> pa.RecordBatch:
    """One row: a clear, or (op=POSITION) a sequenced write that changed nothing."""
    return pa.record_batch(
        [pa.array([op]), pa.nulls(1, pa.string()), pa.nulls(1, pa.list_(pa.float32(), dim)), pa.nulls(1, _META),
         _seqs(1, seq)],
        schema=log_schema(dim),
    )


def position_of(batches: list[pa.RecordBatch], start: int = 0) -> int:
    """The write position after batches: the last sequenced record's (start if none is)."""
    position = start
    for batch in batches:
        if SEQ in batch.schema.names:
            seqs = [s for s in batch.column(SEQ).to_pylist() if s is not None]
            if seqs:
                position = max(position, max(seqs))
    return position


def replay(batches: Iterable[pa.RecordBatch], index: ItemIndex) -> int:
    """Applies logged writes to index in log order, a run of same-op rows at a time. Returns rows replayed."""
    done = 0
    for batch in batches:
        ops = batch.column("op").to_pylist()
        start = 0
        while start < len(ops):
            end = start
            while end < len(ops) and ops[end] == ops[start]:
                end += 1
            _apply(batch.slice(start, end - start), ops[start], index)
            start = end
        done += batch.num_rows
    return done


def _apply(rows: pa.RecordBatch, op: str, index: ItemIndex) -> None:
    if op == POSITION:
        return
    if op == CLEAR:
        index.clear()
        return
    ids = rows.column("item_id").to_pylist()
    if op == DELETE:
        index.delete(ids)
        return
    vectors = rows.column("vector").flatten().to_numpy(zero_copy_only=False).reshape(len(ids), index.config.dim)
    maps = rows.column("meta").to_pylist()
    names = list(dict.fromkeys(name for m in maps for name, _ in (m or [])))
    columns: dict[str, list[str | None]] = {name: [None] * len(ids) for name in names}
    for r, m in enumerate(maps):
        for name, value in m or []:
            columns[name][r] = value
    index.upsert(ids, vectors, columns or None)

