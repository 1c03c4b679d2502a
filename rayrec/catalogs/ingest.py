"""Catalog ingestion: items without embeddings are encoded in batches, then bulk-loaded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import numpy as np
import pyarrow as pa

from rayrec.catalogs.catalog import EMBEDDING_COLUMN, ID_COLUMN, items_table
from rayrec.exceptions import InvalidInputError

TEXT_COLUMN = "text"


def texts_of(table: pa.Table, text_columns: Sequence[str] | None = None) -> list[str]:
    """Each row's text: the `text` column, or the given columns joined with ". "."""
    columns = list(text_columns) if text_columns else [TEXT_COLUMN]
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InvalidInputError(
            f"catalog has no {missing} column(s) to build item text from; give a 'text' column, "
            f"text_columns=[...] naming existing columns, or an 'embedding' column (columns: {table.column_names})"
        )
    values = [table[c].cast(pa.string()).to_pylist() for c in columns]
    texts = []
    for row, parts in enumerate(zip(*values)):
        text = ". ".join(p for p in parts if p)
        if not text.strip():
            raise InvalidInputError(f"catalog row {row} has no text in {columns}")
        texts.append(text)
    return texts


async def ingest(
    table: pa.Table,
    encode: Callable[[list[str], list[str]], Awaitable[np.ndarray]],
    load: Callable[[pa.Table], Awaitable[int]],
    text_columns: Sequence[str] | None = None,
    batch_texts: int = 512,
    progress: bool = True,
) -> int:
    """Loads a catalog table, encoding the items' text first when it has no embeddings.

    Args:
        table: item_id, and either embedding or text (or text_columns); other string
            columns become metadata, and so does the text the vectors came from (`text`).
        encode: (item ids, texts) -> (n, dim) vectors: the encoder, or a learned space's vectors
            (its own for the items it learned, the text path's for the others).
        load: an Arrow catalog with embeddings -> rows applied (Router.load).
        batch_texts: texts per encode call.
        progress: show a progress bar while encoding.

    Returns:
        The number of items loaded (re-ingesting the same catalog upserts them).
    """
    if ID_COLUMN not in table.column_names:
        raise InvalidInputError(f"catalog has no '{ID_COLUMN}' column (columns: {table.column_names})")
    if EMBEDDING_COLUMN in table.column_names:
        return await load(table)
    texts = texts_of(table, text_columns)
    ids = [str(i) for i in table[ID_COLUMN].to_pylist()]
    chunks = [(ids[i : i + batch_texts], texts[i : i + batch_texts]) for i in range(0, len(texts), batch_texts)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(texts), desc="encoding items", unit="item")
    parts = []
    for chunk_ids, chunk in chunks:
        parts.append(np.asarray(await encode(chunk_ids, chunk), dtype=np.float32))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    vectors = np.vstack(parts)
    skip = {ID_COLUMN, EMBEDDING_COLUMN, TEXT_COLUMN}
    metadata = {
        name: table[name].cast(pa.string()).to_pylist()
        for name in table.column_names
        if name not in skip and (pa.types.is_string(table.schema.field(name).type) or name == "category")
    }
    metadata[TEXT_COLUMN] = texts  # kept: a model swap places the items a new model lacks by their text again
    return await load(items_table(ids, vectors, metadata))
