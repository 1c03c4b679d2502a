"""RouterActor: fans queries out to every shard and merges the partial top-k; routes writes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from rayrec.config import RayrecConfig
from rayrec.exceptions import CALLER_ERRORS, InvalidInputError, ItemNotFoundError, ShardUnavailableError
from rayrec.fanout import Coalescer, FanOutResult, describe, fan_out
from rayrec.hashing import group_by_partition
from rayrec.topk import SearchResult, merge_topk
from rayrec.wire import pack_answers, pack_search, unpack_partial, unpack_requests
from rayrec.query import SearchRequest, make_request
from rayrec.validation import check_ids, check_vectors


class Router:
    """Query fan-out with exact merge, coalescing concurrent queries into one call per shard.

    Every write goes to the shard that owns the id (stable hash of the id over
    the number of shards). Plain async Python over shard handles; RouterActor
    is this class as a Ray async actor.
    """

    def __init__(self, config: RayrecConfig, shards: list[Any]) -> None:
        if len(shards) != config.num_shards:
            raise InvalidInputError(f"config says {config.num_shards} shards but {len(shards)} handles were given")
        self.config = config
        self.shards = list(shards)
        # A parcel is the requests of one call (search: one; search_many: a client's batch).
        self._coalescer: Coalescer[list[SearchRequest], list[SearchResult]] = Coalescer(
            self._run_batch, max_size=config.max_batch_queries, size_of=lambda p: sum(r.rows for r in p)
        )

    # ----- fan-out helpers -----------------------------------------------
    async def _fan_out(
        self,
        calls: list[Callable[[], Awaitable[Any]]],
        kind: str,
        tolerate: bool = False,
        shard_ids: list[int] | None = None,
    ) -> FanOutResult[Any]:
        """Runs shard calls under the deadline and retries of their kind (query, write, load).

        shard_ids names the shard of each call in errors (default: call i is shard i).
        """
        cfg = self.config
        timeout, retries = {
            "query": (cfg.shard_timeout_s, cfg.shard_retries),
            "write": (cfg.write_timeout_s, cfg.shard_retries),
            "load": (cfg.load_timeout_s, 0),
        }[kind]
        res = await fan_out(calls, timeout, retries)
        bad_request = res.caller_error()
        if bad_request is not None:
            raise bad_request
        if res.errors and (not tolerate or len(res.errors) == len(calls)):
            names = shard_ids or list(range(len(calls)))
            detail = "; ".join(f"shard {names[i]}: {describe(e)}" for i, e in sorted(res.errors.items()))
            raise ShardUnavailableError(f"{len(res.errors)} of {len(calls)} shards failed: {detail}")
        return res

    async def _all(self, method: str, *args: Any, kind: str = "query", tolerate: bool = False) -> FanOutResult[Any]:
        calls = [lambda s=s: getattr(s, method).remote(*args) for s in self.shards]
        return await self._fan_out(calls, kind, tolerate)

    async def _by_owner(self, method: str, ids: list[str], *columns: Any, kind: str = "query") -> list[tuple[list[int], Any]]:
        """Calls method on each owning shard with its ids (and the matching rows of columns).

        Returns (positions in ids, shard's answer) per owning shard.
        """
        groups = group_by_partition(ids, len(self.shards))
        owners = sorted(groups)
        calls = []
        for shard in owners:
            pos = groups[shard]
            args = [[ids[p] for p in pos]] + [_rows(c, pos) for c in columns]
            calls.append(lambda s=self.shards[shard], a=args: getattr(s, method).remote(*a))
        res = await self._fan_out(calls, kind, shard_ids=owners)
        return [(groups[shard], out) for shard, out in zip(owners, res.results)]

    # ----- queries --------------------------------------------------------
    async def search(
        self,
        queries: Any,
        k: int,
        exclude: Any = None,
        categories: Any = None,
        with_metadata: bool = False,
    ) -> SearchResult:
        """Global top-k per query vector.

        Args:
            queries: (nq, dim) or (dim,) vectors; normalised here.
            k: results per query, 1..max_k.
            exclude: item ids never to return: one list for all queries or one per query.
            categories: allowed categories: one list for all queries or one per query.
            with_metadata: also return each result's metadata.
        """
        cfg = self.config.index
        request = make_request(queries, k, exclude, categories, with_metadata, dim=cfg.dim, max_k=cfg.max_k)
        return (await self._coalescer.submit([request]))[0]

    async def search_many(self, blob: bytes) -> bytes:
        """Several callers' searches in one call (RouterClient's coalesced batch).

        blob and the answer are encoded by rayrec.wire: in, a list of
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
        results = iter(await self._coalescer.submit(parcel) if parcel else [])
        return pack_answers([a if a is not None else next(results) for a in answers])

    async def _run_batch(self, parcels: list[list[SearchRequest]]) -> list[list[SearchResult]]:
        batch = [r for p in parcels for r in p]
        queries = np.concatenate([r.queries for r in batch]) if len(batch) > 1 else batch[0].queries
        k = max(r.k for r in batch)
        excludes = [e for r in batch for e in r.excludes]
        categories = [c for r in batch for c in r.categories]
        with_meta = any(r.with_metadata for r in batch)
        tolerate = self.config.on_shard_failure == "partial"
        request = pack_search(queries, k, excludes, categories, with_meta)
        res = await self._all("search_packed", request, tolerate=tolerate)
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

    async def mean_vector(self) -> np.ndarray | None:
        """Normalised mean of every live item vector (None for an empty catalog or no direction)."""
        res = await self._all("vector_sum")
        total = sum(r[0] for r in res.results)
        count = sum(r[1] for r in res.results)
        norm = float(np.linalg.norm(total)) if count else 0.0
        if norm < 1e-9:
            return None
        return (total / norm).astype(np.float32)

    # ----- reads by id ----------------------------------------------------
    async def fetch(self, ids: Any) -> list[dict[str, Any] | None]:
        """Per id, its record (item_id, vector, metadata) or None."""
        ids = check_ids(ids)
        out: list[dict[str, Any] | None] = [None] * len(ids)
        for pos, records in await self._by_owner("fetch", ids):
            for p, rec in zip(pos, records):
                out[p] = rec
        return out

    async def vectors_of(self, ids: Any, required: bool = True) -> tuple[np.ndarray, list[bool]]:
        """Vectors of ids; raises ItemNotFoundError for a missing one when required."""
        ids = check_ids(ids)
        vectors = np.zeros((len(ids), self.config.index.dim), dtype=np.float32)
        found = [False] * len(ids)
        for pos, (vecs, hit) in await self._by_owner("vectors_of", ids):
            vectors[pos] = vecs
            for p, h in zip(pos, hit):
                found[p] = h
        if required and not all(found):
            missing = [i for i, f in zip(ids, found) if not f]
            raise ItemNotFoundError(f"unknown item id(s): {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        return vectors, found

    async def count(self) -> int:
        return sum((await self._all("count")).results)

    async def info(self) -> list[dict[str, Any]]:
        return list((await self._all("info")).results)

    # ----- writes ---------------------------------------------------------
    async def upsert(self, ids: Any, vectors: Any, metadata: dict[str, list[Any]] | None = None) -> int:
        """Inserts or replaces items on their owning shards; returns how many were written.

        Input is checked whole before any shard is written. A shard failure
        raises ShardUnavailableError; upserts are idempotent, so retrying the
        call is safe.
        """
        ids = check_ids(ids)
        vecs = check_vectors(vectors, self.config.index.dim, what="item vector")
        if vecs.shape[0] != len(ids):
            raise InvalidInputError(f"got {len(ids)} ids but {vecs.shape[0]} vectors")
        metadata = dict(metadata or {})
        for name, col in metadata.items():
            if isinstance(col, (str, bytes)) or len(col) != len(ids):
                raise InvalidInputError(f"metadata column {name!r} must be a list of {len(ids)} values")
            bad = next((v for v in col if v is not None and not isinstance(v, str)), None)
            if bad is not None:
                raise InvalidInputError(f"metadata column {name!r} must hold strings or None, got {bad!r}")
        if not ids:
            return 0
        names = list(metadata)
        meta = _MetaColumns(names, [metadata[n] for n in names])
        return sum(out for _, out in await self._by_owner("upsert", ids, vecs, meta, kind="write"))

    async def delete(self, ids: Any) -> int:
        """Deletes items by id; returns how many existed. Idempotent."""
        ids = check_ids(ids)
        if not ids:
            return 0
        return sum(out for _, out in await self._by_owner("delete", ids, kind="write"))

    async def load(self, source: str | pa.Table) -> int:
        """Bulk-loads a catalog (Parquet path/URI or Arrow table): all shards or none.

        Each shard reads the rows it owns and checks them; only when every shard
        has staged its rows without error are they applied.
        """
        if not isinstance(source, (str, pa.Table)):
            raise InvalidInputError(f"a catalog is a Parquet path or a pyarrow Table, got {type(source).__name__}")
        if isinstance(source, pa.Table):
            source = ray.put(source)  # one copy in the object store, read by every shard
        n = len(self.shards)
        calls = [lambda s=s, i=i: s.stage.remote(source, i, n) for i, s in enumerate(self.shards)]
        try:
            await self._fan_out(calls, "load")
        except BaseException:
            await asyncio.gather(*(s.abort_staged.remote() for s in self.shards), return_exceptions=True)
            raise
        return sum((await self._all("commit_staged", kind="load")).results)

    async def clear(self) -> None:
        """Removes every item from every shard."""
        await self._all("clear", kind="write")

    def get_config(self) -> RayrecConfig:
        return self.config

    def get_shards(self) -> list[Any]:
        return list(self.shards)


class _MetaColumns:
    """Metadata columns that _rows can slice like an array."""

    def __init__(self, names: list[str], columns: list[list[Any]]) -> None:
        self.names = names
        self.columns = columns


def _rows(column: Any, pos: list[int]) -> Any:
    if isinstance(column, np.ndarray):
        return column[pos]
    if isinstance(column, _MetaColumns):
        return {n: [c[p] for p in pos] for n, c in zip(column.names, column.columns)} or None
    return [column[p] for p in pos]


RouterActor = ray.remote(Router)
