"""The read path's fan-out and exact merge over one generation of shards, shared by the router and the user actors.

The router runs it for drivers' vector queries (and for its own writes' fan-out); a user-vector actor
runs the same code for its users' recommendations, so `/recommend` goes ingress -> user actor ->
shards, without passing through the router. Plain async Python over shard handles (no Ray import).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np

from rayrec import constants as C
from rayrec.config import RayrecConfig
from rayrec.exceptions import CALLER_ERRORS, ShardRetiredError, ShardUnavailableError, root_cause
from rayrec.hashing import partition_of
from rayrec.routing.fanout import Coalescer, FanOutResult, describe, fan_out
from rayrec.routing.query import SearchRequest
from rayrec.routing.topk import SearchResult, merge_topk
from rayrec.routing.wire import pack_search, unpack_partial

T = TypeVar("T")

# Whether the generation a call went to was switched away from meanwhile (then: ShardRetiredError, run again).
Stale = Callable[[Any], Awaitable[bool]]


class GenerationSwitched(ShardRetiredError):
    """run_on_shards found the generation it called switched away from (stale() said so: no need to ask again)."""


def deadline_of(config: RayrecConfig, kind: str) -> tuple[float, int]:
    """(timeout per round in s, retries) of a fan-out kind: query, write or load."""
    return {
        "query": (config.shard_timeout_s, config.shard_retries),
        "write": (config.write_timeout_s, config.shard_retries),
        "load": (config.load_timeout_s, 0),
    }[kind]


async def run_on_shards(
    config: RayrecConfig,
    calls: list[Callable[[], Awaitable[Any]]],
    kind: str,
    *,
    tolerate: bool = False,
    shard_ids: list[int] | None = None,
    stale: Callable[[], Awaitable[bool]] | None = None,
) -> FanOutResult[Any]:
    """Runs shard calls under the deadline and retries of their kind, and decides what a failure means.

    A caller error (bad input) is raised as it is. If stale() says the generation was switched away
    from during the call, any failure raises ShardRetiredError (the caller runs again on the new one).
    Otherwise failed shards raise ShardUnavailableError, unless tolerate (the partial policy) and some
    answered: then the result lists them in `errors`. shard_ids names call i's shard in errors.
    """
    timeout, retries = deadline_of(config, kind)
    res = await fan_out(calls, timeout, retries)  # a late call is left to finish (see ReplicaSet._one)
    bad_request = res.caller_error()
    if bad_request is not None:
        raise bad_request
    if res.errors and stale is not None and await stale():
        raise GenerationSwitched("the shards were switched away from during the call")
    if res.errors and (not tolerate or len(res.errors) == len(calls)):
        names = shard_ids or list(range(len(calls)))
        detail = "; ".join(f"shard {names[i]}: {describe(e)}" for i, e in sorted(res.errors.items()))
        hint = (
            "a write that failed may still have been applied; retrying it is safe"
            if kind != "query"
            else "see the shard's log; raise shard_timeout_s, or set on_shard_failure='partial' "
            "to answer from the other shards"
        )
        raise ShardUnavailableError(f"{len(res.errors)} of {len(calls)} shards failed: {detail} ({hint})")
    return res


def excludes_by_shard(excludes: list[list[str] | None], n: int) -> list[list[list[str] | None]]:
    """Per shard (of n), each query row's excluded ids that live on that shard (None when there are none)."""
    out: list[list[list[str] | None]] = [[None] * len(excludes) for _ in range(n)]
    for row, ids in enumerate(excludes):
        for item in ids or ():
            shard = partition_of(item, n)
            if out[shard][row] is None:
                out[shard][row] = []
            out[shard][row].append(item)  # type: ignore[union-attr]
    return out


class ShardSearch:
    """Exact top-k over whichever generation of shards is current, with concurrent searches coalesced.

    view() gives the shard set to use now (a ShardSet: .generation, .sets of ReplicaSet); stale(on)
    whether `on` was switched away from (the router compares with its own current set; a user actor
    asks the router, which refreshes its view). A search that fails on a generation switched away
    from meanwhile runs once more on the current one, so reads stay exact through re-shards and model
    swaps. Concurrent searches travel as one batched call per shard.
    """

    def __init__(
        self, config: RayrecConfig, view: Callable[[], Awaitable[Any]], stale: Stale, max_in_flight: int | None = None
    ) -> None:
        self.config = config
        self._view = view
        self._stale = stale
        # A parcel is the requests of one caller (a search: one; a client's coalesced batch: several).
        self._coalescer: Coalescer[list[SearchRequest], list[SearchResult]] = Coalescer(
            self._run_batch,
            max_size=config.max_batch_queries,
            size_of=lambda p: sum(r.rows for r in p),
            max_in_flight=max_in_flight or C.ROUTER_BATCHES_IN_FLIGHT,
        )

    @property
    def batches_run(self) -> int:
        """Fan-outs made so far (fewer than searches under concurrency)."""
        return self._coalescer.batches_run

    async def search(self, request: SearchRequest) -> SearchResult:
        """The global top-k of one checked request."""
        return (await self._coalescer.submit([request]))[0]

    async def search_parcel(self, parcel: list[SearchRequest]) -> list[SearchResult]:
        """The global top-k of several checked requests, kept together in one batch."""
        return await self._coalescer.submit(parcel)

    async def on_current(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Runs a read on the current shards; once more on the new ones if they were switched meanwhile."""
        on = await self._view()
        try:
            return await op(on)
        except Exception as exc:
            cause = root_cause(exc)
            if isinstance(cause, CALLER_ERRORS):
                raise
            if not isinstance(cause, GenerationSwitched) and not await self._stale(on):
                raise
        return await op(await self._view())

    async def _run_batch(self, parcels: list[list[SearchRequest]]) -> list[list[SearchResult]]:
        return await self.on_current(lambda on: self._search_on(on, parcels))

    async def _search_on(self, on: Any, parcels: list[list[SearchRequest]]) -> list[list[SearchResult]]:
        batch = [r for p in parcels for r in p]
        queries = np.concatenate([r.queries for r in batch]) if len(batch) > 1 else batch[0].queries
        k = max(r.k for r in batch)
        categories = [c for r in batch for c in r.categories]
        with_meta = any(r.with_metadata for r in batch)
        excludes = excludes_by_shard([e for r in batch for e in r.excludes], len(on.sets))
        blobs = [pack_search(queries, k, excludes[s], categories, with_meta) for s in range(len(on.sets))]
        calls = [on.sets[s].read("search_packed", b) for s, b in enumerate(blobs)]
        res = await run_on_shards(
            self.config, calls, "query", tolerate=self.config.on_shard_failure == "partial",
            stale=lambda: self._stale(on),
        )
        merged = merge_topk([unpack_partial(r) for r in res.results if r is not None], k)
        flat, start = [], 0
        for r in batch:
            rows = slice(start, start + r.rows)
            start = rows.stop
            meta = merged[2][rows, : r.k] if r.with_metadata else None
            flat.append(SearchResult.from_arrays(merged[0][rows, : r.k], merged[1][rows, : r.k], meta, res.failed))
        out, start = [], 0
        for p in parcels:
            out.append(flat[start : start + len(p)])
            start += len(p)
        return out
