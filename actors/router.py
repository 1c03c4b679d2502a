"""RouterActor: fans queries out to every shard and merges the partial top-k; routes writes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from rayrec.config import RayrecConfig
from rayrec.exceptions import InvalidInputError, ItemNotFoundError, ShardUnavailableError
from rayrec.fanout import Coalescer, FanOutResult, fan_out
from rayrec.hashing import group_by_partition
from rayrec.topk import SearchResult, merge_topk
from rayrec.validation import check_categories, check_exclude, check_ids, check_k, check_vectors, per_query


@dataclass(slots=True)
class _Query:
    queries: np.ndarray
    k: int
    excludes: list[list[str] | None]
    categories: list[list[str] | None]
    with_metadata: bool


class Router:
    """Query fan-out with exact merge, coalescing concurrent queries into one call per shard.

    Every write goes to the shard that owns the id (stable hash). Plain async
    Python over shard handles; RouterActor is this class as a Ray async actor.
    """

    def __init__(self, config: RayrecConfig, shards: list[Any]) -> None:
        if len(shards) != config.num_shards:
            raise InvalidInputError(f"config says {config.num_shards} shards but {len(shards)} handles were given")
        self.config = config
        self.shards = list(shards)
        self._coalescer: Coalescer[_Query, SearchResult] = Coalescer(
            self._run_batch, max_size=config.max_batch_queries, size_of=lambda q: q.queries.shape[0]
        )

    # ----- fan-out helpers -----------------------------------------------
    async def _all(self, method: str, *args: Any, tolerate: bool = False) -> FanOutResult[Any]:
        calls = [lambda s=s: getattr(s, method).remote(*args) for s in self.shards]
        return self._check(await fan_out(calls, self.config.shard_timeout_s, self.config.shard_retries), tolerate)

    def _check(self, res: FanOutResult[Any], tolerate: bool) -> FanOutResult[Any]:
        if res.errors and (not tolerate or len(res.errors) == len(self.shards)):
            detail = "; ".join(f"shard {i}: {e}" for i, e in sorted(res.errors.items()))
            raise ShardUnavailableError(f"{len(res.errors)} of {len(self.shards)} shards failed: {detail}")
        return res

    async def _by_owner(self, method: str, ids: list[str], *columns: Any) -> dict[int, Any]:
        """Calls method on each owning shard with its ids (and the matching rows of columns)."""
        groups = group_by_partition(ids, len(self.shards))
        owners = sorted(groups)
        calls = []
        for shard in owners:
            pos = groups[shard]
            args = [[ids[p] for p in pos]] + [_rows(c, pos) for c in columns]
            calls.append(lambda s=self.shards[shard], a=args: getattr(s, method).remote(*a))
        res = self._check(await fan_out(calls, self.config.shard_timeout_s, self.config.shard_retries), False)
        return {shard: (groups[shard], out) for shard, out in zip(owners, res.results)}

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
        q = check_vectors(queries, self.config.index.dim, what="query vector")
        k = check_k(k, self.config.index.max_k)
        n = q.shape[0]
        request = _Query(
            q,
            k,
            per_query(exclude, n, check_exclude, "exclude"),
            per_query(categories, n, check_categories, "category"),
            bool(with_metadata),
        )
        return await self._coalescer.submit(request)

    async def _run_batch(self, batch: list[_Query]) -> list[SearchResult]:
        queries = np.concatenate([r.queries for r in batch]) if len(batch) > 1 else batch[0].queries
        k = max(r.k for r in batch)
        excludes = [e for r in batch for e in r.excludes]
        categories = [c for r in batch for c in r.categories]
        with_meta = any(r.with_metadata for r in batch)
        tolerate = self.config.on_shard_failure == "partial"
        res = await self._all("search", queries, k, excludes, categories, with_meta, tolerate=tolerate)
        merged = merge_topk([r for r in res.results if r is not None], k)
        out, start = [], 0
        for r in batch:
            rows = slice(start, start + r.queries.shape[0])
            start = rows.stop
            meta = merged[2][rows, : r.k] if r.with_metadata else None
            out.append(SearchResult.from_arrays(merged[0][rows, : r.k], merged[1][rows, : r.k], meta, res.failed))
        return out

    async def mean_vector(self) -> np.ndarray | None:
        """Normalised mean of every live item vector (None for an empty catalog)."""
        res = await self._all("vector_sum")
        total = sum(r[0] for r in res.results)
        count = sum(r[1] for r in res.results)
        if count == 0:
            return None
        norm = float(np.linalg.norm(total))
        if norm < 1e-9:  # the vectors cancel out: the mean has no direction
            return None
        return (total / norm).astype(np.float32)

    # ----- reads by id ----------------------------------------------------
    async def fetch(self, ids: Any) -> list[dict[str, Any] | None]:
        """Per id, its record (item_id, vector, metadata) or None."""
        ids = check_ids(ids)
        out: list[dict[str, Any] | None] = [None] * len(ids)
        for pos, records in (await self._by_owner("fetch", ids)).values():
            for p, rec in zip(pos, records):
                out[p] = rec
        return out

    async def vectors_of(self, ids: Any, required: bool = True) -> tuple[np.ndarray, list[bool]]:
        """Vectors of ids; raises ItemNotFoundError for a missing one when required."""
        ids = check_ids(ids)
        vectors = np.zeros((len(ids), self.config.index.dim), dtype=np.float32)
        found = [False] * len(ids)
        for pos, (vecs, hit) in (await self._by_owner("vectors_of", ids)).values():
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
        """Inserts or replaces items on their owning shards; returns how many were written."""
        ids = check_ids(ids)
        vecs = check_vectors(vectors, self.config.index.dim, what="item vector")
        if vecs.shape[0] != len(ids):
            raise InvalidInputError(f"got {len(ids)} ids but {vecs.shape[0]} vectors")
        metadata = dict(metadata or {})
        for name, col in metadata.items():
            if len(col) != len(ids):
                raise InvalidInputError(f"metadata column {name!r} has {len(col)} values for {len(ids)} items")
        if not ids:
            return 0
        names = list(metadata)
        calls = await self._by_owner("upsert", ids, vecs, _MetaColumns(names, [metadata[n] for n in names]))
        return sum(out for _, out in calls.values())

    async def delete(self, ids: Any) -> int:
        """Deletes items by id; returns how many existed."""
        ids = check_ids(ids)
        if not ids:
            return 0
        return sum(out for _, out in (await self._by_owner("delete", ids)).values())

    async def load(self, source: str | pa.Table) -> int:
        """Bulk-loads a catalog (Parquet path/URI or Arrow table), all shards or none.

        Each shard reads the rows it owns and checks them; only when every shard
        has staged its rows without error are they applied.
        """
        if not isinstance(source, (str, pa.Table)):
            raise InvalidInputError(f"a catalog is a Parquet path or a pyarrow Table, got {type(source).__name__}")
        if isinstance(source, pa.Table):
            source = ray.put(source)  # one copy in the object store, read by every shard
        try:
            staged = await self._all("stage", source)
        except BaseException:
            await asyncio.gather(*(s.abort_staged.remote() for s in self.shards), return_exceptions=True)
            raise
        del staged
        return sum((await self._all("commit_staged")).results)

    async def clear(self) -> None:
        await self._all("clear")

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
