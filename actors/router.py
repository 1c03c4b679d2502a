"""RouterActor: fans queries out to every shard and merges the partial top-k; routes writes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import ray

from rayrec.actors.router_swap import ModelSwapping, Staged
from rayrec import constants as C
from rayrec.system import layout as layouts
from rayrec.config import RayrecConfig
from rayrec.exceptions import (
    CALLER_ERRORS,
    InvalidInputError,
    ItemNotFoundError,
    ShardUnavailableError,
)
from rayrec.routing.fanout import FanOutResult
from rayrec.system.generations import ShardSet, stored_shards
from rayrec.hashing import group_by_partition
from rayrec.system.layout import Generation
from rayrec.index.metadata import check_metadata, take
from rayrec.routing.query import SearchRequest, make_request
from rayrec.routing.replicas import ReplicaSet
from rayrec.system.resharding import WriteGate
from rayrec.durability.storage import Storage
from rayrec.routing.search import ShardSearch, run_on_shards
from rayrec.routing.topk import SearchResult
from rayrec.validation import check_ids, check_vectors
from rayrec.routing.wire import pack_answers, unpack_requests

T = TypeVar("T")


def _rows(column: Any, pos: list[int]) -> Any:
    """The rows at pos of an array or of a metadata dict."""
    if isinstance(column, np.ndarray):
        return column[pos]
    if isinstance(column, dict):
        return take(column, pos)
    return [column[p] for p in pos]


class Router(ModelSwapping):  # with Resharding, ModelSwapping's base
    """Query fan-out with exact merge, coalescing concurrent queries into one call per shard.

    Every write goes to the shard that owns the id (stable hash of the id over
    the number of shards). A re-shard switches to a new generation of shards
    while queries go on (see reshard), a model swap to new shards in another item
    space (see stage_space): those steps live in actors/router_reshard.py and
    actors/router_swap.py. Plain async Python over shard handles; RouterActor is
    this class as a Ray async actor.
    """

    def __init__(
        self, config: RayrecConfig, shards: list[Any], generation: Generation | None = None, detached: bool = False
    ) -> None:
        """shards: per shard, its handle or the list of its replicas' handles (of generation, default the first)."""
        generation = generation or Generation.first(config.num_shards)
        if config.storage is not None:
            # A router Ray restarts gets its first arguments again: storage names the current shards.
            config, shards, generation = stored_shards(config, shards, generation)
        if len(shards) != config.num_shards or generation.num_shards != config.num_shards:
            raise InvalidInputError(f"config says {config.num_shards} shards but {len(shards)} handles were given")
        self.config = config
        self.detached = detached
        self._now = ShardSet(generation, self._replica_sets(shards))
        # Drivers' vector queries: the same fan-out and merge a user actor runs for its users.
        self._search = ShardSearch(config, self._current, self._behind)
        self._load_lock = asyncio.Lock()
        self._gate = WriteGate()  # closed by a re-shard while it copies and switches
        self._abandoned: set[str] = set()  # tokens of generations their planners gave up on
        self._writes = 0  # bumped by every write: the cached catalog mean is stale once it moves
        self._mean: tuple[int, np.ndarray | None] | None = None
        # The item space the vectors are in (rayrec.system.model_swap.space_of); storage records it once a model swap has.
        self._space: dict[str, Any] | None = None
        if config.storage is not None:
            self._space = (layouts.read_layout(Storage(config.storage)) or {}).get("item_space")
        self._swap: Staged | None = None  # a model swap's generation, staged with item writes held
        self._switching: str | None = None  # the token of a model swap switching now

    def _replica_sets(self, shards: list[Any]) -> list[ReplicaSet]:
        groups = [list(s) if isinstance(s, (list, tuple)) else [s] for s in shards]
        if any(len(g) != self.config.replicas for g in groups):
            raise InvalidInputError(
                f"config says {self.config.replicas} replicas per shard; got {[len(g) for g in groups]}"
            )
        return [ReplicaSet(g, C.REPLICA_SUSPECT_S, self.config.replica_hedge_s) for g in groups]

    @property
    def shards(self) -> list[Any]:
        """The first replica of each current shard."""
        return [s.handles[0] for s in self._now.sets]

    # ----- fan-out helpers -----------------------------------------------
    async def _current(self) -> ShardSet:
        return self._now

    async def _behind(self, on: ShardSet) -> bool:
        """Whether a re-shard or model swap switched away from `on`."""
        return on.generation.number < self._now.generation.number

    async def _fan_out(
        self,
        calls: list[Callable[[], Awaitable[Any]]],
        kind: str,
        tolerate: bool = False,
        shard_ids: list[int] | None = None,
        on: ShardSet | None = None,
    ) -> FanOutResult[Any]:
        """Runs shard calls under the deadline and retries of their kind (see rayrec.routing.search.run_on_shards).

        on: the generation the calls went to; if a re-shard switched away from it meanwhile, any failure
        raises ShardRetiredError (the caller runs again on the current one, see _on_current).
        """
        stale = None if on is None else (lambda: self._behind(on))
        return await run_on_shards(self.config, calls, kind, tolerate=tolerate, shard_ids=shard_ids, stale=stale)

    async def _on_current(self, op: Callable[[ShardSet], Awaitable[T]]) -> T:
        """Runs a read on the current shards; once more on the new ones if a re-shard switched meanwhile."""
        return await self._search.on_current(op)

    @staticmethod
    def _call(on: ShardSet, shard: int, method: str, args: Any, kind: str) -> Callable[[], Awaitable[Any]]:
        """A query goes to one replica of the shard; a write or load to all of them."""
        replicas = on.sets[shard]
        return replicas.read(method, *args) if kind == "query" else replicas.write(method, *args)

    async def _all(
        self, method: str, *args: Any, kind: str = "query", tolerate: bool = False, on: ShardSet | None = None
    ) -> FanOutResult[Any]:
        on = on or self._now
        calls = [self._call(on, s, method, args, kind) for s in range(len(on))]
        return await self._fan_out(calls, kind, tolerate, on=on)

    async def _by_owner(
        self, method: str, ids: list[str], *columns: Any, kind: str = "query", on: ShardSet | None = None
    ) -> list[tuple[list[int], Any]]:
        """Calls method on each owning shard with its ids (and the matching rows of columns).

        Returns (positions in ids, shard's answer) per owning shard.
        """
        on = on or self._now
        groups = group_by_partition(ids, len(on))
        owners = sorted(groups)
        calls = []
        for shard in owners:
            pos = groups[shard]
            args = [[ids[p] for p in pos]] + [_rows(c, pos) for c in columns]
            calls.append(self._call(on, shard, method, args, kind))
        res = await self._fan_out(calls, kind, shard_ids=owners, on=on)
        return [(groups[shard], out) for shard, out in zip(owners, res.results)]

    # ----- queries --------------------------------------------------------
    async def search(
        self, queries: Any, k: int, exclude: Any = None, categories: Any = None, with_metadata: bool = False
    ) -> SearchResult:
        """Global top-k per query vector (arguments as in rayrec.routing.query.make_request)."""
        cfg = self.config.index
        request = make_request(queries, k, exclude, categories, with_metadata, dim=cfg.dim, max_k=cfg.max_k)
        return await self._search.search(request)

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
        results = iter(await self._search.search_parcel(parcel) if parcel else [])
        return pack_answers([a if a is not None else next(results) for a in answers])

    async def mean_vector(self) -> np.ndarray | None:
        """Normalised mean of every live item vector: None for an empty catalog or no direction.

        Cached until the next write. Shards that fail are left out (the mean of
        the others), so a cold-start answer survives a dead shard.
        """
        if self._mean is not None and self._mean[0] == self._writes:
            return self._mean[1]
        writes = self._writes
        res = await self._on_current(lambda on: self._all("vector_sum", tolerate=True, on=on))
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
        for pos, records in await self._on_current(lambda on: self._by_owner("fetch", ids, on=on)):
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
        for pos, (vecs, hit) in await self._on_current(lambda on: self._by_owner("vectors_of", ids, on=on)):
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
        return sum((await self._on_current(lambda on: self._all("count", on=on))).results)

    async def categories(self) -> dict[str, int]:
        """Live items per category over all shards."""
        total: dict[str, int] = {}
        for counts in (await self._on_current(lambda on: self._all("categories", on=on))).results:
            for name, n in counts.items():
                total[name] = total.get(name, 0) + n
        return total

    async def info(self) -> list[dict[str, Any]]:
        """Per shard replica (shard order, then replica): id, replica, items, tombstones, index kind, node."""

        async def info_on(on: ShardSet) -> list[dict[str, Any]]:
            calls = [lambda h=h: h.info.remote() for h in on.handles]
            return list((await self._fan_out(calls, "query", on=on)).results)

        return await self._on_current(info_on)

    # ----- writes ---------------------------------------------------------
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
        ids = check_ids(ids)
        vecs = check_vectors(vectors, self.config.index.dim, what="item vector")
        if vecs.shape[0] != len(ids):
            raise InvalidInputError(f"got {len(ids)} ids but {vecs.shape[0]} vectors")
        metadata = check_metadata(metadata, len(ids))
        if not ids:
            return 0
        async with self._gate.write():
            self._check_space(space)
            self._writes += 1
            return sum(out for _, out in await self._by_owner("upsert", ids, vecs, metadata, kind="write"))

    async def delete(self, ids: Any) -> int:
        """Deletes items by id; returns how many existed. Idempotent."""
        ids = check_ids(ids)
        if not ids:
            return 0
        async with self._gate.write():
            self._writes += 1
            return sum(out for _, out in await self._by_owner("delete", ids, kind="write"))

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
        async with self._gate.write(), self._load_lock:
            on = self._now
            n = len(on)
            # Rows a load staged before a router restart must not join this one.
            await self._all("abort_staged", kind="load")
            calls = [self._call(on, i, "stage", (source, i, n), "load") for i in range(n)]
            try:
                staged = (await self._fan_out(calls, "load")).results
            except BaseException:
                aborts = [self._call(on, i, "abort_staged", (), "load")() for i in range(n)]
                await asyncio.gather(*aborts, return_exceptions=True)
                raise
            self._writes += 1
            committed = (await self._all("commit_staged", kind="load")).results
            # (committed rows can be fewer than staged ones: duplicate ids in a batch count once)
            short = [i for i, (a, b) in enumerate(zip(staged, committed)) if a and not b]
            if short:  # a shard restarted between staging and committing: its staged rows are gone
                raise ShardUnavailableError(
                    f"shards {short} lost their staged rows (restarted during the load): load the catalog again"
                )
            return sum(committed)

    async def snapshot(self) -> None:
        """Every shard replica writes a snapshot of its state and drops the log it covers."""
        await self._all("snapshot", kind="load")

    async def compact(self) -> None:
        """Rebuilds every shard's index without its tombstones (HNSW shards only compact so)."""
        async with self._gate.write():
            await self._all("compact", kind="load")

    async def clear(self) -> None:
        """Removes every item from every shard."""
        async with self._gate.write():
            self._writes += 1
            await self._all("clear", kind="write")

    def search_batches(self) -> int:
        """Search fan-outs this router made (drivers' vector queries; recommendations never pass here)."""
        return self._search.batches_run

    def get_config(self) -> RayrecConfig:
        """The system's config (Rayrec.connect reads it)."""
        return self.config

    def get_layout(self) -> tuple[RayrecConfig, Generation, bool]:
        """The config (its num_shards is the current one), the current shard generation, and whether detached."""
        return self.config, self._now.generation, self.detached

    def shard_view(self) -> tuple[Generation, list[list[Any]]]:
        """The current generation and, per shard, its replicas' handles (what a user actor searches)."""
        return self._now.generation, [list(r.handles) for r in self._now.sets]

    def current_shards(self) -> tuple[int, list[list[Any]]]:
        """The current generation's number and, per shard, its replicas' handles."""
        return self._now.generation.number, [list(r.handles) for r in self._now.sets]

    def get_shards(self) -> list[Any]:
        """The shard handles (each shard's first replica), in shard order."""
        return list(self.shards)

    def get_replicas(self) -> list[list[Any]]:
        """Per shard, its replicas' handles."""
        return self.current_shards()[1]


RouterActor = ray.remote(Router)
