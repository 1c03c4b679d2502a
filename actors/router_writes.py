"""The router's item writes: each routed to the shards that own its items, and told to the user actors.

Part of actors/router.py's Router (which holds one ItemWrites and answers upsert, delete, load,
snapshot, compact and clear through it): plain async Python on the router's Topology. A write counts
in the topology's write counter (what is cached of the catalog is stale once it moves), and before
it is answered, failed or not, every user actor drops its kept vectors of the items it wrote
(rayrec.users.item_cache), so feedback after an acknowledged write never uses an old vector.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pyarrow as pa
import ray
from rayrec.actors.router_swap import ModelSwaps

from rayrec.config import RayrecConfig
from rayrec.exceptions import InvalidInputError, ShardUnavailableError
from rayrec.index.metadata import check_items
from rayrec.routing.fanout import describe, fan_out
from rayrec.system.topology import Topology
from rayrec.validation import check_ids

log = logging.getLogger(__name__)


class UserCaches:
    """The user actors of a system, told of item writes (each keeps item vectors for feedback)."""

    def __init__(self, config: RayrecConfig, handles: list[Any] | None) -> None:
        """handles: the user actors'; None: looked up by name in config.namespace at the first write
        (config's namespace, user actor count and write timeout: none of them changes while it runs)."""
        self.config = config
        self.handles = handles

    def _handles(self) -> list[Any]:
        if self.handles is None:
            from rayrec.system.deploy import users_name

            try:
                self.handles = [ray.get_actor(users_name(i), namespace=self.config.namespace)
                                for i in range(self.config.num_user_actors)]
            except ValueError:  # not created yet: they will start with nothing kept
                return []
        return self.handles

    async def forget(self, ids: list[str] | None) -> None:
        """Has every user actor drop its kept vectors of ids (None: all).

        A user actor that does not answer within write_timeout_s is logged, not waited for: one that
        restarts keeps nothing, and what a live one kept expires after ITEM_VECTOR_CACHE_TTL_S.
        """
        users = self._handles()
        if not users:
            return
        done = await fan_out([lambda u=u: u.forget_items.remote(ids) for u in users], self.config.write_timeout_s, 0)
        if done.errors:
            log.warning("%d user actors did not drop the item vectors of a write: %s", len(done.errors),
                        describe(next(iter(done.errors.values()))))


class ItemWrites:
    """Router.upsert, delete, load, snapshot, compact and clear."""

    def __init__(self, topology: Topology, swaps: ModelSwaps, users: UserCaches) -> None:
        self.topology, self.swaps, self.users = topology, swaps, users

    @asynccontextmanager
    async def _changing(self, ids: list[str] | None) -> AsyncIterator[None]:
        """One write of ids (None: of any item): counted, and told to the user actors after it, failed or not
        (some shards may have applied a write that failed on others)."""
        self.topology.writes += 1
        try:
            yield
        finally:
            await self.users.forget(ids)

    async def upsert(
        self, ids: Any, vectors: Any, metadata: dict[str, list[Any]] | None = None, space: str | None = None
    ) -> int:
        """Inserts or replaces items on their owning shards.

        Args:
            ids: item ids (strings, or integers taken as strings).
            vectors: (n, dim) array, any scale (normalised here).
            metadata: optional string columns of n values (None allowed), e.g. category.
            space: the item space (model version) the vectors are in; if the system has moved to another
                meanwhile, SpaceChangedError (place them again). None: not checked.

        Returns:
            The number of items written. Input is checked whole before any shard
            is written; a shard failure raises ShardUnavailableError (upserts are
            idempotent, so retrying the call is safe).
        """
        ids, vecs, metadata = check_items(ids, vectors, metadata, self.topology.config.index.dim, what="item vector")
        if not ids:
            return 0
        async with self.topology.gate.write():
            self.swaps.check_space(space)
            async with self._changing(ids):
                return sum(out for _, out in await self.topology.by_owner("upsert", ids, vecs, metadata, kind="write"))

    async def delete(self, ids: Any) -> int:
        """Deletes items by id; returns how many existed. Idempotent."""
        ids = check_ids(ids)
        if not ids:
            return 0
        async with self.topology.gate.write(), self._changing(ids):
            return sum(out for _, out in await self.topology.by_owner("delete", ids, kind="write"))

    async def load(self, source: str | pa.Table) -> int:
        """Bulk-loads a catalog (Parquet path/URI or Arrow table) as an upsert.

        Each shard reads the rows it owns and checks them; only when every shard
        has staged its rows without error are they applied, so bad input writes
        nothing. Loads run one at a time. A shard answers no queries while it
        reads, checks and indexes its part.

        Returns:
            The number of rows applied.
        """
        if not isinstance(source, (str, pa.Table)):
            raise InvalidInputError(f"a catalog is a Parquet path or a pyarrow Table, got {type(source).__name__}")
        if isinstance(source, pa.Table):
            source = ray.put(source)  # one copy in the object store, read by every shard
        async with self.topology.gate.write(), self.topology.load_lock:
            on = self.topology.now
            n = len(on)
            # Rows a load staged before a router restart must not join this one.
            await self.topology.all("abort_staged", kind="load")
            calls = [self.topology.call(on, i, "stage", (source, i, n), "load") for i in range(n)]
            try:
                staged = (await self.topology.fan_out(calls, "load")).results
            except BaseException:
                aborts = [self.topology.call(on, i, "abort_staged", (), "load")() for i in range(n)]
                await asyncio.gather(*aborts, return_exceptions=True)
                raise
            # Each replica commits only the rows staged there: one that restarted meanwhile refuses, and is
            # repaired from a peer that committed (see ReplicaSet.write); if none could, the load fails.
            commits = [self.topology.call(on, i, "commit_staged", (staged[i],), "load") for i in range(n)]
            async with self._changing(None):
                committed = (await self.topology.fan_out(commits, "load")).results
            # (committed rows can be fewer than staged ones: duplicate ids in a batch count once)
            short = [i for i, (a, b) in enumerate(zip(staged, committed)) if a and not b]
            if short:  # a shard restarted between staging and committing: its staged rows are gone
                raise ShardUnavailableError(
                    f"shards {short} lost their staged rows (restarted during the load): load the catalog again"
                )
            return sum(committed)

    async def snapshot(self) -> None:
        """Every shard replica writes a snapshot of its state and drops the log it covers."""
        await self.topology.all("snapshot", kind="load")

    async def compact(self) -> None:
        """Rebuilds every shard's index without its tombstones (HNSW shards only compact so)."""
        async with self.topology.gate.write():
            await self.topology.all("compact", kind="load")

    async def clear(self) -> None:
        """Removes every item from every shard."""
        async with self.topology.gate.write(), self._changing(None):
            await self.topology.all("clear", kind="write")
