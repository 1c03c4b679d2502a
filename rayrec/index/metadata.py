"""Item metadata: string fields checked once against their limits, kept sparsely per row, sliced per shard."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rayrec import constants as C
from rayrec.exceptions import InvalidInputError
from rayrec.validation import check_ids, check_text, check_vectors

CATEGORY = "category"
# The item text kept for model swaps (rayrec.catalogs.ingest.TEXT_COLUMN): limited as a text, not as metadata,
# and never returned with search results.
TEXT_FIELD = "text"
# Names that would collide with the fields of a result or record.
RESERVED_NAMES = ("item_id", "score", "embedding", "vector")
_BAD_NAME_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_name(name: Any) -> str:
    """A metadata field name: a non-empty string of at most C.MAX_METADATA_NAME_CHARS, not reserved."""
    if not isinstance(name, str) or not name.strip() or name in RESERVED_NAMES:
        raise InvalidInputError(
            f"metadata field name {name!r} is reserved, empty or not a string "
            f"(reserved: {', '.join(RESERVED_NAMES)}); rename it"
        )
    if len(name) > C.MAX_METADATA_NAME_CHARS:
        raise InvalidInputError(
            f"metadata field name {name[:40]!r}... is {len(name)} characters long; "
            f"at most {C.MAX_METADATA_NAME_CHARS} are accepted"
        )
    bad = _BAD_NAME_CHAR.search(name)
    if bad is not None:
        raise InvalidInputError(
            f"metadata field name {name!r} holds {bad.group()!r}: no control characters or lone surrogates"
        )
    return name


def _check_values(name: str, col: Sequence[Any]) -> None:
    most = C.MAX_TEXT_CHARS if name == TEXT_FIELD else C.MAX_METADATA_VALUE_CHARS
    for pos, value in enumerate(col):
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidInputError(
                f"metadata column {name!r} must hold strings or None, got {type(value).__name__} {value!r}"
            )
        if len(value) > most or not value.isascii():
            check_text(value, f"metadata field {name!r} of item {pos}", most)


def _check_rows(out: dict[str, list[str | None]], n: int) -> None:
    """Per item: at most C.MAX_METADATA_FIELDS fields and C.MAX_METADATA_ITEM_CHARS characters of values."""
    cols = [col for name, col in out.items() if name != TEXT_FIELD]
    if len(cols) > C.MAX_METADATA_FIELDS:
        fields = [sum(col[r] is not None for col in cols) for r in range(n)]
        worst = max(range(n), key=fields.__getitem__)
        if fields[worst] > C.MAX_METADATA_FIELDS:
            raise InvalidInputError(
                f"item {worst} has {fields[worst]} metadata fields; at most {C.MAX_METADATA_FIELDS} are accepted"
            )
    if sum(max((len(v) for v in col if v is not None), default=0) for col in cols) > C.MAX_METADATA_ITEM_CHARS:
        sizes = [sum(len(col[r] or "") for col in cols) for r in range(n)]
        worst = max(range(n), key=sizes.__getitem__)
        if sizes[worst] > C.MAX_METADATA_ITEM_CHARS:
            raise InvalidInputError(
                f"item {worst}'s metadata values hold {sizes[worst]} characters together; "
                f"at most {C.MAX_METADATA_ITEM_CHARS} are accepted"
            )


def check_metadata(metadata: Any, n: int) -> dict[str, list[str | None]]:
    """Checks metadata columns for n items: a dict of name to n strings (or None), within the limits.

    Raises InvalidInputError naming the field, the item and the limit; returns plain lists.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInputError(
            f"metadata must be a dict of column name to list of strings, got {type(metadata).__name__}"
        )
    out: dict[str, list[str | None]] = {}
    for name, col in metadata.items():
        check_name(name)
        if isinstance(col, (str, bytes)) or not hasattr(col, "__len__") or len(col) != n:
            got = len(col) if hasattr(col, "__len__") and not isinstance(col, (str, bytes)) else type(col).__name__
            raise InvalidInputError(f"metadata column {name!r} must be a list of {n} values, got {got}")
        _check_values(name, col)
        out[name] = list(col)
    _check_rows(out, n)
    return out


def rows_of(metadata: dict[str, list[str | None]], n: int) -> list[dict[str, str] | None]:
    """Checked columns as one sparse dict per item (only the fields it has; None when it has none)."""
    rows: list[dict[str, str] | None] = [None] * n
    for name, col in metadata.items():
        for r, value in enumerate(col):
            if value is not None:
                row = rows[r]
                if row is None:
                    rows[r] = {name: value}
                else:
                    row[name] = value
    return rows


def columns_of(rows: Sequence[dict[str, str] | None]) -> dict[str, list[str | None]]:
    """Sparse rows back as columns over every row (None where a row lacks the field)."""
    names = dict.fromkeys(name for row in rows if row for name in row)
    return {name: [row.get(name) if row else None for row in rows] for name in names}


def take(metadata: dict[str, list[str | None]], positions: Sequence[int]) -> dict[str, list[str | None]] | None:
    """The rows at positions of every column (None when there are no columns)."""
    return {name: [col[p] for p in positions] for name, col in metadata.items()} or None


def check_items(
    ids: Sequence[Any], vectors: Any, metadata: Mapping[str, Sequence[Any]] | None, dim: int, what: str = "vector"
) -> tuple[list[str], np.ndarray, dict[str, list[str | None]]]:
    """Checks one write's items (ItemIndex.upsert's arguments), raising InvalidInputError on any that is bad
    (what: how the errors name a vector).

    Returns:
        (ids as strings, (n, dim) float32 vectors normalised, metadata as checked columns of n values each).
    """
    ids = check_ids(ids)
    vecs = check_vectors(vectors, dim, what=what)
    if vecs.shape[0] != len(ids):
        raise InvalidInputError(f"got {len(ids)} ids but {vecs.shape[0]} vectors")
    return ids, vecs, check_metadata(metadata, len(ids))
