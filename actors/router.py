"""RouterActor: fans queries out to every shard and merges the partial top-k; routes writes (router_writes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from rayrec.actors.router_reshard import Resharding
from rayrec.actors.router_swap import ModelSwaps
from rayrec.actors.router_writes import ItemWrites, UserCaches

from rayrec import constants as C
from rayrec.config import RayrecConfig
from rayrec.durability.storage import Storage
from rayrec.exceptions import CALLER_ERRORS, ItemNotFoundError
from rayrec.routing.query import SearchRequest, make_request
from rayrec.routing.topk import SearchResult
from rayrec.routing.wire import pack_answers, unpack_requests
from rayrec.system import layout as layouts
from rayrec.system.generations import ShardSet, retire, stored_shards
from rayrec.system.layout import Generation
from rayrec.system.topology import Topology
from rayrec.validation import check_ids


class Router:
    """Query fan-out with exact merge, coalescing concurrent queries into one call per shard.

    Every write goes to the shard that owns the id (stable hash of the id over
    the number of shards). A re-shard switches to a new generation of shards
    while queries go on (see reshard), a model swap to new shards in another item
    space (see stage_space): those steps live in actors/router_reshard.py and
    actors/router_swap.py, the item writes in actors/router_writes.py, and all
    share this router's Topology (rayrec.system.topology: the current shards, the
    write gate, the shard calls). Plain async Python over shard handles;
    RouterActor is this class as a Ray async actor.
    """

    def __init__(
        self,
        config: RayrecConfig,
        shards: list[Any],
        generation: Generation | None = None,
        detached: bool = False,
        users: list[Any] | None = None,
        stop: Callable[[ShardSet, float], Awaitable[None]] = retire,
        require_shared: bool = False,
    ) -> None:
        """shards: per shard, its handle or the list of its replicas' handles (of generation, default the first).

        require_shared: refuse to start where the storage holds no layout.json (see
        rayrec.system.layout.require_layout): a router restarted on a node that does not share the storage
        would take its first arguments' shards for the current ones. deploy.py asks it of the router actor.

        users: the user actors' handles (default: looked up by name in config.namespace at the first write).
        stop: how a retired generation's shards are stopped (see rayrec.system.topology.Topology).
        """
        generation = generation or Generation.first(config.num_shards)
        space = None  # the item space the vectors are in; storage records it once a model swap has
        if config.storage is not None:
            if require_shared:
                layouts.require_layout(config)
            # A router Ray restarts gets its first arguments again: storage names the current shards.
            config, shards, generation = stored_shards(config, shards, generation)
            space = (layouts.read_layout(Storage(config.storage)) or {}).get("item_space")
        self.detached = detached
        self._topology = Topology(config, shards, generation, stop)
        self._resharding = Resharding(self._topology)
        self._swaps = ModelSwaps(self._topology, space)
        self._mean: tuple[int, np.ndarray | None] | None = None  # (writes, mean) when it was computed
        self._users = UserCaches(self._topology.config, users)  # told of item writes (they keep item vectors)
        self._writes = ItemWrites(self._topology, self._swaps, self._users)
        storage = Storage(config.storage) if config.storage is not None else None
        self._seeded = storage is not None and storage.exists(layouts.SEEDED_FILE)

    @property
    def config(self) -> RayrecConfig:
        """The system's config; its num_shards is the current generation's."""
        return self._topology.config

    @property
    def shards(self) -> list[Any]:
        """The first replica of each current shard."""
        return [s.handles[0] for s in self._topology.now.sets]

    # ----- queries --------------------------------------------------------
    async def search(
        self, queries: Any, k: int, exclude: Any = None, categories: Any = None, with_metadata: bool = False
    ) -> SearchResult:
        """Global top-k per query vector (arguments as in rayrec.routing.query.make_request)."""
        cfg = self.config.index
        request = make_request(queries, k, exclude, categories, with_metadata, dim=cfg.dim, max_k=cfg.max_k)
        return await self._topology.search.search(request)

    async def search_many(self, blob: bytes) -> bytes:
        """Several callers' searches in one call (RouterClient's coalesced batch).

        blob and the answer are encoded by rayrec.routing.wire: in, a list of
        SearchRequest fields; out, per request a SearchResult or the error
        that request alone caused (bad input fails only its own request).
        """
        cfg = self.config.index
        answers: list[SearchResult | BaseException | None] = []
        parcel: list[SearchRequest] = []
        for fields in unpack_requests(blob):
            try:
                parcel.append(make_request(*fields, dim=cfg.dim, max_k=cfg.max_k))
                answers.append(None)
            except CALLER_ERRORS as exc:
                answers.append(exc)
        results = iter(await self._topology.search.search_parcel(parcel) if parcel else [])
        return pack_answers([a if a is not None else next(results) for a in answers])

    async def mean_vector(self) -> np.ndarray | None:
        """Normalised mean of every live item vector: None for an empty catalog or no direction.

        Cached until the next write. Shards that fail are left out (the mean of
        the others), so a cold-start answer survives a dead shard.
        """
        if self._mean is not None and self._mean[0] == self._topology.writes:
            return self._mean[1]
        writes = self._topology.writes
        res = await self._topology.on_current(lambda on: self._topology.all("vector_sum", tolerate=True, on=on))
        parts = [r for r in res.results if r is not None]
        total = sum(p[0] for p in parts)
        count = sum(p[1] for p in parts)
        norm = float(np.linalg.norm(total)) if count else 0.0
        mean = (total / norm).astype(np.float32) if norm > C.MIN_NORM else None
        if not res.errors:
            self._mean = (writes, mean)
        return mean

    # ----- reads by id ----------------------------------------------------
    async def fetch(self, ids: Any) -> list[dict[str, Any] | None]:
        """Per id, its record (item_id, vector, metadata) or None."""
        ids = check_ids(ids)
        out: list[dict[str, Any] | None] = [None] * len(ids)
        for pos, records in await self._topology.on_current(lambda on: self._topology.by_owner("fetch", ids, on=on)):
            for p, rec in zip(pos, records):
                out[p] = rec
        return out

    async def vectors_of(self, ids: Any, required: bool = True) -> tuple[np.ndarray, list[bool]]:
        """Vectors of ids (zeros where absent) and which were found.

        Raises ItemNotFoundError naming the missing ids when required.
        """
        ids = check_ids(ids)
        vectors = np.zeros((len(ids), self.config.index.dim), dtype=np.float32)
        found = [False] * len(ids)
        topo = self._topology
        for pos, (vecs, hit) in await topo.on_current(lambda on: topo.by_owner("vectors_of", ids, on=on)):
            vectors[pos] = vecs
            for p, h in zip(pos, hit):
                found[p] = h
        if required and not all(found):
            missing = [i for i, f in zip(ids, found) if not f]
            more = " ..." if len(missing) > 10 else ""
            raise ItemNotFoundError(f"unknown item id(s): {missing[:10]}{more}; upsert the items first")
        return vectors, found

    async def count(self) -> int:
        """Live items over all shards."""
        return sum((await self._topology.on_current(lambda on: self._topology.all("count", on=on))).results)

    async def categories(self) -> dict[str, int]:
        """Live items per category over all shards."""
        total: dict[str, int] = {}
        for counts in (await self._topology.on_current(lambda on: self._topology.all("categories", on=on))).results:
            for name, n in counts.items():
                total[name] = total.get(name, 0) + n
        return total

    async def info(self) -> list[dict[str, Any]]:
        """Per shard replica (shard order, then replica): id, replica, items, tombstones, index kind, node."""

        async def info_on(on: ShardSet) -> list[dict[str, Any]]:
            calls = [lambda h=h: h.info.remote() for h in on.handles]
            return list((await self._topology.fan_out(calls, "query", on=on)).results)

        return await self._topology.on_current(info_on)

    # ----- writes (their steps: router_writes.py) -----------------------------
    async def upsert(
        self, ids: Any, vectors: Any, metadata: dict[str, list[Any]] | None = None, space: str | None = None
    ) -> int:
        """Inserts or replaces items on their owning shards (see ItemWrites.upsert)."""
        return await self._seed(await self._writes.upsert(ids, vectors, metadata, space))

    async def delete(self, ids: Any) -> int:
        """Deletes items by id; returns how many existed. Idempotent."""
        return await self._seed(await self._writes.delete(ids))

    async def load(self, source: str | pa.Table) -> int:
        """Bulk-loads a catalog (Parquet path/URI or Arrow table) as an upsert (see ItemWrites.load)."""
        return await self._seed(await self._writes.load(source))

    def seeded(self) -> bool:
        """Whether this system ever acknowledged an item write (then no start loads a catalog into it)."""
        return self._seeded

    async def _seed(self, written: int) -> int:
        if written and not self._seeded:
            if self.config.storage is not None:
                storage = Storage(self.config.storage)
                await asyncio.to_thread(storage.write_bytes, layouts.SEEDED_FILE, b"1")
            self._seeded = True
        return written

    async def snapshot(self) -> None:
        """Every shard replica writes a snapshot of its state and drops the log it covers."""
        await self._writes.snapshot()

    async def compact(self) -> None:
        """Rebuilds every shard's index without its tombstones (HNSW shards only compact so)."""
        await self._writes.compact()

    async def clear(self) -> None:
        """Removes every item from every shard."""
        await self._writes.clear()

    def search_batches(self) -> int:
        """Search fan-outs this router made (drivers' vector queries; recommendations never pass here)."""
        return self._topology.search.batches_run

    def get_config(self) -> RayrecConfig:
        """The system's config (Rayrec.connect reads it)."""
        return self.config

    async def check_replicas(self) -> None:
        """Asks every shard replica its write position (once a router starts, see Topology.check_replicas)."""
        await self._topology.replicas_checked()

    def get_layout(self) -> tuple[RayrecConfig, Generation, bool]:
        """The config (its num_shards is the current one), the current shard generation, and whether detached."""
        return self.config, self._topology.now.generation, self.detached

    async def shard_view(self) -> tuple[Generation, list[list[Any]]]:
        """The current generation and, per shard, its replicas' handles (what a user actor searches)."""
        self._topology.ensure_checked()
        return self._topology.now.generation, [list(r.handles) for r in self._topology.now.sets]

    def current_shards(self) -> tuple[int, list[list[Any]]]:
        """The current generation's number and, per shard, its replicas' handles."""
        return self._topology.now.generation.number, [list(r.handles) for r in self._topology.now.sets]

    def get_shards(self) -> list[Any]:
        """The shard handles (each shard's first replica), in shard order."""
        return list(self.shards)

    def get_replicas(self) -> list[list[Any]]:
        """Per shard, its replicas' handles."""
        return self.current_shards()[1]


    # ----- the control plane: re-shards and model swaps (their steps: router_reshard.py, router_swap.py) -----
    async def reshard(self, groups: list[list[Any]], new: Generation, base: int) -> dict[str, Any]:
        """Moves every item onto a new generation of shards, then switches to it (see Resharding.reshard)."""
        return await self._resharding.reshard(groups, new, base)

    async def abandon(self, new: Generation, groups: list[list[Any]]) -> bool:
        """Stops a planned generation unless it is the current one (see Resharding.abandon)."""
        return await self._resharding.abandon(new, groups)

    def item_space(self) -> dict[str, Any] | None:
        """The item space the system's vectors are in ({"version", "path"}), None if never set."""
        return self._swaps.item_space()

    def set_item_space(self, space: dict[str, Any]) -> dict[str, Any]:
        """Records the item space of a new system (the first setter wins); returns the one in force."""
        return self._swaps.set_item_space(space)

    async def texts_to_place(self, folder: str) -> dict[str, str]:
        """Item id -> text, of the items the model in folder has no vector for (see ModelSwaps.texts_to_place)."""
        return await self._swaps.texts_to_place(folder)

    async def stage_space(
        self, groups: list[list[Any]], new: Generation, base: int, space: dict[str, Any],
        placed: dict[str, tuple[str, np.ndarray]],
    ) -> dict[str, Any]:
        """Fills a new generation with every item in a new model's space, item writes held (see ModelSwaps)."""
        return await self._swaps.stage_space(groups, new, base, space, placed)

    def swap_pending(self, token: str) -> bool:
        """Whether the model swap with this token (its generation's) is staged or switching."""
        return self._swaps.swap_pending(token)

    async def switch_space(self, new: Generation) -> dict[str, Any]:
        """Makes the staged generation current, stops the old one, lets item writes go on (see ModelSwaps)."""
        switched = await self._swaps.switch_space(new)
        await self._users.forget(None)  # every item has a new vector
        return switched

    async def abort_space(self, new: Generation) -> bool:
        """Drops a staged model swap to generation new; True if one was (see ModelSwaps.abort_space)."""
        return await self._swaps.abort_space(new)


RouterActor = ray.remote(Router)
