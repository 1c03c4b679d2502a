"""What GET /healthz reports: the system's size and shape, asked of its actors, and this replica's last swap."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rayrec.serve_app.item_space import ItemSpace

from rayrec import metrics
from rayrec.config import RayrecConfig


async def health(router: Any, users: list[Any], config: RayrecConfig, space: ItemSpace) -> dict[str, Any]:
    """{status, items, users, shards, dim, index, model_version, last_swap, check_ms}, the actors asked at once.

    Args:
        router, users: the system's router and user-vector actor handles.
        config: the system's settings (the index's dim and factory).
        space: this replica's item space (its version where the router records none; its last swap).
    """
    t0 = time.perf_counter()
    items, layout, *per_actor = await asyncio.gather(
        router.count.remote(), router.get_layout.remote(), *(u.count.remote() for u in users)
    )
    metrics.catalog_size().set(items)
    return {
        "status": "ok",
        "items": items,
        "users": sum(per_actor),
        "shards": layout[1].num_shards,  # the current count: a re-shard may have changed it
        "dim": config.index.dim,
        "index": config.index.factory,
        "model_version": ((await router.item_space.remote()) or {}).get("version") or space.version,
        "last_swap": space.last_swap,
        "check_ms": round((time.perf_counter() - t0) * 1000, 2),
    }
