"""Reading item catalogs (Parquet files or Arrow tables with an `embedding` column)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayrec.exceptions import InvalidInputError
from rayrec.index.metadata import check_metadata
from rayrec.validation import check_id, check_vectors

ID_COLUMN = "item_id"
EMBEDDING_COLUMN = "embedding"
READ_BATCH_ROWS = 65_536


@dataclass(slots=True)
class ItemBatch:
    """Items ready for ItemIndex.upsert: ids, normalised vectors, string metadata columns."""

    ids: list[str]
    vectors: np.ndarray
    metadata: dict[str, list[str | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)



def _is_stringish(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_stringish(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def check_schema(schema: pa.Schema, dim: int, where: str) -> list[str]:
    """Checks a catalog schema; returns the metadata (string) column names."""
    names = schema.names
    if ID_COLUMN not in names:
        raise InvalidInputError(f"{where}: no '{ID_COLUMN}' column (columns: {names})")
    if EMBEDDING_COLUMN not in names:
        raise InvalidInputError(
            f"{where}: no '{EMBEDDING_COLUMN}' column; a catalog needs item vectors as a "
            f"fixed-size list of {dim} float32 (columns: {names})"
        )
    id_type = schema.field(ID_COLUMN).type
    if not (_is_stringish(id_type) or pa.types.is_integer(id_type)):
        raise InvalidInputError(f"{where}: '{ID_COLUMN}' must be strings or integers, got {id_type}")
    emb = schema.field(EMBEDDING_COLUMN).type
    if not (pa.types.is_fixed_size_list(emb) or pa.types.is_list(emb) or pa.types.is_large_list(emb)):
        raise InvalidInputError(f"{where}: '{EMBEDDING_COLUMN}' must be a list of floats, got {emb}")
    if not pa.types.is_floating(emb.value_type):
        raise InvalidInputError(f"{where}: '{EMBEDDING_COLUMN}' values must be floats, got {emb.value_type}")
    if pa.types.is_fixed_size_list(emb) and emb.list_size != dim:
        raise InvalidInputError(
            f"{where}: '{EMBEDDING_COLUMN}' holds {emb.list_size}-d vectors, but the index holds {dim}-d vectors"
        )
    for reserved in ("score", "vector"):
        if reserved in names and _is_stringish(schema.field(reserved).type):
            raise InvalidInputError(f"{where}: a metadata column may not be named {reserved!r}; rename it")
    if "category" in names and not _is_stringish(schema.field("category").type):
        raise InvalidInputError(f"{where}: 'category' must be strings, got {schema.field('category').type}")
    return [n for n in names if n not in (ID_COLUMN, EMBEDDING_COLUMN) and _is_stringish(schema.field(n).type)]


def batch_to_items(
    batch: pa.RecordBatch | pa.Table,
    dim: int,
    meta_columns: list[str],
    where: str,
    first_row: int = 0,
    keep: Callable[[list[str]], np.ndarray] | None = None,
) -> ItemBatch:
    """Converts rows of a checked catalog to an ItemBatch, naming the first bad row.

    keep, given the batch's ids, selects the rows to convert (a shard keeps its
    own); only those rows' vectors are read and checked.
    """
    ids_col = batch.column(ID_COLUMN)
    if ids_col.null_count:
        row = first_row + int(pc.index(pc.is_null(ids_col), True).as_py())
        raise InvalidInputError(f"{where}: row {row} has no '{ID_COLUMN}'")
    ids = [str(v) for v in ids_col.to_pylist()]
    for p, v in enumerate(ids):
        if not v.strip():
            raise InvalidInputError(f"{where}: row {first_row + p} has an empty '{ID_COLUMN}'")
        try:
            check_id(v)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: row {first_row + p} has a bad '{ID_COLUMN}': {exc}") from None
    rows = np.arange(len(ids))
    if keep is not None:
        rows = np.flatnonzero(keep(ids))
        batch = batch.take(pa.array(rows))
        ids = [ids[p] for p in rows]
    emb = batch.column(EMBEDDING_COLUMN)
    if isinstance(emb, pa.ChunkedArray):
        emb = emb.combine_chunks()
    if emb.null_count:
        p = int(pc.index(pc.is_null(emb), True).as_py())
        raise InvalidInputError(f"{where}: row {first_row + rows[p]} (item {ids[p]!r}) has no '{EMBEDDING_COLUMN}'")
    lengths = pc.list_value_length(emb).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != dim)
    if bad.size:
        p = int(bad[0])
        raise InvalidInputError(
            f"{where}: row {first_row + rows[p]} (item {ids[p]!r}) has a {lengths[p]}-d embedding, "
            f"but the index holds {dim}-d vectors"
        )
    flat = emb.flatten()
    if flat.null_count:
        raise InvalidInputError(f"{where}: '{EMBEDDING_COLUMN}' contains null values")
    values = flat.to_numpy(zero_copy_only=False).reshape(len(ids), dim)
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        p = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(
            f"{where}: row {first_row + rows[p]} (item {ids[p]!r}) has NaN or infinite values in '{EMBEDDING_COLUMN}'"
        )
    zero = ~values.any(axis=1)
    if zero.any():
        p = int(np.flatnonzero(zero)[0])
        raise InvalidInputError(f"{where}: row {first_row + rows[p]} (item {ids[p]!r}) has an all-zero embedding")
    try:
        vectors = check_vectors(values, dim, what="embedding")
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc} (counting the rows this shard reads)") from None
    metadata = {name: batch.column(name).cast(pa.string()).to_pylist() for name in meta_columns}
    try:
        metadata = check_metadata(metadata, len(ids))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc} (counting the rows this shard reads)") from None
    return ItemBatch(ids, vectors, metadata)


def _open_parquet(path: str) -> pq.ParquetFile:
    try:
        if "://" in path:
            fs, inner = pafs.FileSystem.from_uri(path)
            return pq.ParquetFile(fs.open_input_file(inner))
        return pq.ParquetFile(path)
    except FileNotFoundError:
        raise InvalidInputError(f"catalog file {path!r} does not exist") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"catalog file {path!r} is not a readable Parquet file: {exc}") from None


def iter_items(
    source: str | pa.Table, dim: int, keep: Callable[[list[str]], np.ndarray] | None = None
) -> Iterator[ItemBatch]:
    """Yields checked ItemBatches from a Parquet path/URI or an Arrow table.

    Args:
        source: a local path, a URI pyarrow.fs resolves (s3://, gs://, file://), or a table.
        dim: the index dimension.
        keep: optional; given a batch's ids, a boolean mask of the rows to keep
            (a shard keeps the ids that hash to it).
    """
    if isinstance(source, pa.Table):
        where = "catalog table"
        meta = check_schema(source.schema, dim, where)
        batches: Iterator[pa.RecordBatch] = iter(source.to_batches(max_chunksize=READ_BATCH_ROWS))
    elif isinstance(source, str):
        where = f"catalog {source!r}"
        handle = _open_parquet(source)
        meta = check_schema(handle.schema_arrow, dim, where)
        batches = handle.iter_batches(batch_size=READ_BATCH_ROWS)
    else:
        raise InvalidInputError(f"a catalog is a Parquet path or a pyarrow Table, got {type(source).__name__}")
    row = 0
    for batch in batches:
        items = batch_to_items(batch, dim, meta, where, first_row=row, keep=keep)
        row += batch.num_rows
        if len(items):
            yield items


def items_table(ids: list[str], vectors: np.ndarray, metadata: dict[str, list[str | None]] | None = None) -> pa.Table:
    """An Arrow catalog table (item_id, embedding as fixed-size list of float32, metadata)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    columns = {ID_COLUMN: pa.array(ids, pa.string()), EMBEDDING_COLUMN: emb}
    for name, col in (metadata or {}).items():
        columns[name] = pa.array(col, pa.string())
    return pa.table(columns)
