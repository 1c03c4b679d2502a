"""Loading a named catalog (MovieLens 100K) or a Parquet file into a running system."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from rayrec.catalogs import movielens
from rayrec.catalogs.ingest import ingest
from rayrec.exceptions import InvalidInputError
from rayrec.hashing import partition_of

MOVIELENS = "movielens-100k"


async def load_catalog(
    catalog: str,
    encode: Callable[[list[str], list[str]], Awaitable[np.ndarray]],
    router: Any,
    users: list[Any],
    text_columns: Sequence[str] | None = None,
) -> dict[str, int]:
    """Loads `movielens-100k` (items, and users from their ratings >= 4) or a Parquet catalog.

    Returns:
        {"items": items loaded, "users": users set from history}.
    """

    async def load(table: Any) -> int:
        return await router.load.remote(table)

    if catalog == MOVIELENS:
        ml = movielens.load()
        items = await ingest(ml.items, encode, load)
        parts: dict[int, dict[str, list[str]]] = {}
        for user_id, history in ml.histories().items():
            parts.setdefault(partition_of(user_id, len(users)), {})[user_id] = history
        set_users = 0
        for part, histories in parts.items():
            set_users += await users[part].set_histories.remote(histories)
        return {"items": items, "users": set_users}
    try:
        table = pq.read_table(catalog)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"catalog {catalog!r} is neither '{MOVIELENS}', 'none' nor a readable Parquet file: {exc}"
        ) from None
    return {"items": await ingest(table, encode, load, text_columns), "users": 0}
