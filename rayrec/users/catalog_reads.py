"""What a user actor reads of the catalog, without Ray: its mean, item vectors, and searches over its shards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rayrec import constants as C
from rayrec.config import RayrecConfig
from rayrec.exceptions import ItemNotFoundError
from rayrec.hashing import partition_of
from rayrec.routing.replicas import ReplicaSet
from rayrec.routing.search import ShardSearch
from rayrec.users.item_cache import ItemVectorCache

if TYPE_CHECKING:
    from rayrec.system.generations import ShardSet


class CatalogReads:
    """The catalog as one user actor reads it, through a router handle.

    Searches run the router's fan-out and exact merge (rayrec.routing.search) here, over the shard handles
    the router names: asked once, and again when a re-shard or model swap retires them. Item vectors for
    feedback come from `items` (an ItemVectorCache the router empties of written items) or, when it lacks
    one, from the item's owning shard directly. The catalog mean is asked of the router.
    """

    def __init__(self, config: RayrecConfig, router: Any, items: ItemVectorCache) -> None:
        self.config, self.router, self.items = config, router, items
        # The current shard generation and its shards' replicas, asked of the router on first use.
        self._shards: ShardSet | None = None
        self.search = ShardSearch(config, self._view, self._switched)

    async def cold_start_vector(self) -> np.ndarray:
        """The vector a user without one is served from: the catalog's mean direction (a fixed one if none)."""
        mean = await self.router.mean_vector.remote()
        if mean is None:  # empty catalog, or vectors that cancel out: a fixed direction
            mean = np.zeros(self.config.index.dim, dtype=np.float32)
            mean[0] = 1.0
        return mean

    async def vectors_of(self, item_ids: list[str], required: bool = True) -> tuple[np.ndarray, list[bool]]:
        """The items' vectors in the served space and whether each was found (the router's Router.vectors_of)."""
        return await self.router.vectors_of.remote(item_ids, required)

    async def _refresh_shards(self) -> ShardSet:
        """Asks the router for the current shards (a re-shard or model swap may have switched)."""
        from rayrec.system.generations import ShardSet  # its module finds and stops shard actors: it imports Ray

        generation, groups = await self.router.shard_view.remote()
        if self._shards is None or generation != self._shards.generation:
            sets = [ReplicaSet(g, C.REPLICA_SUSPECT_S, self.config.replica_hedge_s) for g in groups]
            self._shards = ShardSet(generation, sets)
        return self._shards

    async def _view(self) -> ShardSet:
        return self._shards if self._shards is not None else await self._refresh_shards()

    async def _switched(self, on: ShardSet) -> bool:
        """Whether the shards `on` were switched away from (a call to them failed): asks the router."""
        return (await self._refresh_shards()).generation != on.generation

    async def item_vector(self, item_id: str) -> np.ndarray:
        """One item's vector (1, dim): kept from an earlier event, else asked of its owning shard directly."""
        kept = self.items.get(item_id)
        if kept is not None:
            return kept

        async def read(on: ShardSet) -> tuple[np.ndarray, list[bool]]:
            return await on.sets[partition_of(item_id, len(on))].read("vectors_of", [item_id])()

        epoch = self.items.epoch
        vectors, found = await self.search.on_current(read)
        if not found[0]:
            raise ItemNotFoundError(f"unknown item id(s): [{item_id!r}]; upsert the items first")
        self.items.put(item_id, vectors, epoch)
        return vectors

    def space_checked(self) -> None:
        """After the users' state was checked against the router's space: a swap may have come between."""
        self._shards = None  # it retired the shards searched before: ask for the new ones
        self.items.forget(None)  # and the item vectors kept are of the old space
