"""Item metadata: string columns checked once, sliced per shard, and made uniform in results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rayrec.exceptions import InvalidInputError

CATEGORY = "category"
# Names that would collide with the fields of a result or record.
RESERVED_NAMES = ("item_id", "score", "embedding", "vector")


def check_metadata(metadata: Any, n: int) -> dict[str, list[str | None]]:
    """Checks metadata columns for n items: a dict of name to n strings (or None).

    Raises InvalidInputError naming the column and the fix; returns plain lists.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInputError(
            f"metadata must be a dict of column name to list of strings, got {type(metadata).__name__}"
        )
    out: dict[str, list[str | None]] = {}
    for name, col in metadata.items():
        if not isinstance(name, str) or name in RESERVED_NAMES:
            raise InvalidInputError(
                f"metadata column name {name!r} is reserved or not a string "
                f"(reserved: {', '.join(RESERVED_NAMES)}); rename it"
            )
        if isinstance(col, (str, bytes)) or not hasattr(col, "__len__") or len(col) != n:
            got = len(col) if hasattr(col, "__len__") and not isinstance(col, (str, bytes)) else type(col).__name__
            raise InvalidInputError(f"metadata column {name!r} must be a list of {n} values, got {got}")
        bad = next((v for v in col if v is not None and not isinstance(v, str)), None)
        if bad is not None:
            raise InvalidInputError(
                f"metadata column {name!r} must hold strings or None, got {type(bad).__name__} {bad!r}"
            )
        out[name] = list(col)
    return out


def take(metadata: dict[str, list[str | None]], positions: Sequence[int]) -> dict[str, list[str | None]] | None:
    """The rows at positions of every column (None when there are no columns)."""
    return {name: [col[p] for p in positions] for name, col in metadata.items()} or None


def same_keys(meta: np.ndarray) -> None:
    """Gives every result's metadata the same keys: a column only some shards have seen is None elsewhere."""
    keys = set().union(*(m for m in meta.flat if m is not None))
    for m in meta.flat:
        if m is not None:
            for key in keys - m.keys():
                m[key] = None
