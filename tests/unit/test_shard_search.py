"""rayrec.routing.search over fake shard handles (plain async objects around plain Shards), without Ray.

The properties the router and the user actors rely on: the merge equals one exact search, concurrent
searches share fan-outs, a generation switched away from is left for the current one, and the
partial / raise policies when a shard fails.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rayrec.actors.shard import Shard

from rayrec.config import IndexConfig, RayrecConfig
from rayrec.exceptions import InvalidInputError, ShardRetiredError, ShardUnavailableError
from rayrec.hashing import partition_of
from rayrec.routing.query import make_request
from rayrec.routing.replicas import ReplicaSet
from rayrec.routing.search import ShardSearch, excludes_by_shard

from ._fakes import FakeHandle
from ._helpers import assert_equals_brute_force, clustered, hypothesis_settings, item_ids, normalise_rows

DIM = 8


@dataclass(frozen=True)
class Gen:
    number: int


@dataclass
class View:
    generation: Gen
    sets: list[ReplicaSet]

    def __len__(self) -> int:
        return len(self.sets)


def _config(shards: int, **kwargs: Any) -> RayrecConfig:
    kwargs.setdefault("shard_timeout_s", 5.0)
    kwargs.setdefault("shard_retries", 1)
    return RayrecConfig(index=IndexConfig(dim=DIM), num_shards=shards, **kwargs)


def _system(
    config: RayrecConfig, ids: list[str], vectors: np.ndarray, number: int = 0
) -> tuple[View, list[FakeHandle]]:
    n = config.num_shards
    shards = [Shard(config, s) for s in range(n)]
    for s, shard in enumerate(shards):
        mine = [p for p, item in enumerate(ids) if partition_of(item, n) == s]
        if mine:
            shard.upsert([ids[p] for p in mine], vectors[mine], {"category": [f"c{p % 3}" for p in mine]})
    handles = [FakeHandle(s) for s in shards]
    return View(Gen(number), [ReplicaSet([h], 1.0, 1.0) for h in handles]), handles


class Switchable:
    """What a user actor does: searches the view it cached; after a failure asks the router (now) again."""

    def __init__(self, view: View) -> None:
        self.now = view  # the router's current generation
        self.cached = view
        self.asked = 0

    async def view(self) -> View:
        return self.cached

    async def stale(self, on: View) -> bool:
        self.asked += 1
        self.cached = self.now
        return on.generation != self.now.generation


def _search(config: RayrecConfig, view: View) -> tuple[ShardSearch, Switchable]:
    box = Switchable(view)
    return ShardSearch(config, box.view, box.stale), box


@given(
    shards=st.integers(1, 5), n=st.integers(1, 120), k=st.integers(1, 15), seed=st.integers(0, 2**16),
    excluded=st.integers(0, 10),
)
@hypothesis_settings(40)
def test_merge_equals_one_exact_search(shards: int, n: int, k: int, seed: int, excluded: int) -> None:
    rng = np.random.default_rng(seed)
    ids, vectors = item_ids(n), clustered(rng, n, DIM, clusters=4)
    config = _config(shards)
    view, _ = _system(config, ids, vectors)
    search, _ = _search(config, view)
    queries = normalise_rows(rng.standard_normal((3, DIM)))
    exclude = list(rng.choice(ids, min(excluded, n), replace=False)) if excluded else None
    request = make_request(queries, k, exclude, None, dim=DIM, max_k=config.index.max_k)
    result = asyncio.run(search.search(request))
    eligible = None if not exclude else ~np.isin(np.array(ids, dtype=object), exclude)
    found = np.full((3, k), "", dtype=object)
    scores = np.full((3, k), -np.inf, dtype=np.float32)
    for q in range(3):
        found[q, : len(result.ids[q])] = result.ids[q]
        scores[q, : len(result.scores[q])] = result.scores[q]
    assert_equals_brute_force(scores, found, queries, normalise_rows(vectors), ids, k, eligible)
    assert not result.partial


def test_concurrent_searches_share_fan_outs_and_each_gets_its_own_answer() -> None:
    rng = np.random.default_rng(3)
    ids, vectors = item_ids(200), clustered(rng, 200, DIM, clusters=6)
    config = _config(3)
    view, handles = _system(config, ids, vectors)
    search, _ = _search(config, view)
    queries = normalise_rows(rng.standard_normal((24, DIM)))

    async def many() -> list[Any]:
        requests = [make_request(q, 5, None, None, True, dim=DIM, max_k=100) for q in queries]
        return await asyncio.gather(*(search.search(r) for r in requests))

    results = asyncio.run(many())
    assert search.batches_run < len(queries), "concurrent searches travel together"
    assert all(h.calls == search.batches_run for h in handles), "one call per shard per batch"
    truth = normalise_rows(queries) @ normalise_rows(vectors).T
    for q, result in enumerate(results):
        want = [ids[j] for j in np.argsort(-truth[q], kind="stable")[:5]]
        assert result.ids[0] == want
        assert [m["category"] for m in result.metadata[0]] == [f"c{ids.index(i) % 3}" for i in want]


def test_a_switched_generation_is_left_for_the_current_one() -> None:
    rng = np.random.default_rng(4)
    ids, vectors = item_ids(60), clustered(rng, 60, DIM, clusters=4)
    old, old_handles = _system(_config(2), ids, vectors, number=0)
    new_ids, new_vectors = item_ids(90, "new"), clustered(rng, 90, DIM, clusters=4)
    new, _ = _system(_config(3), new_ids, new_vectors, number=1)
    config = _config(2, on_shard_failure="partial")
    search, box = _search(config, old)
    query = make_request(normalise_rows(rng.standard_normal((1, DIM))), 4, dim=DIM, max_k=100)
    assert set(asyncio.run(search.search(query)).ids[0]) <= set(ids)

    # The router switched and retired the old shards: even under the partial policy, a retired
    # generation is never answered from; the search runs again on the current shards, whole.
    box.now = new
    for h in old_handles:
        h.fail = ShardRetiredError("retired")
    result = asyncio.run(search.search(query))
    assert not result.partial and len(result.ids[0]) == 4 and set(result.ids[0]) <= set(new_ids)
    assert box.asked == 1 and all(h.calls == 1 + 1 + config.shard_retries for h in old_handles)
    assert not asyncio.run(search.search(query)).partial and box.asked == 1, "the new view is kept"


@pytest.mark.parametrize("policy", ["partial", "raise"])
def test_a_failed_shard_gives_a_partial_answer_or_raises(policy: str) -> None:
    rng = np.random.default_rng(5)
    ids, vectors = item_ids(150), clustered(rng, 150, DIM, clusters=5)
    config = _config(3, on_shard_failure=policy)
    view, handles = _system(config, ids, vectors)
    handles[1].fail = ConnectionError("shard 1 is down")
    search, box = _search(config, view)
    query = make_request(normalise_rows(rng.standard_normal((1, DIM))), 6, dim=DIM, max_k=100)
    if policy == "raise":
        with pytest.raises(ShardUnavailableError, match="shard 1"):
            asyncio.run(search.search(query))
        return
    result = asyncio.run(search.search(query))
    assert result.partial and result.failed_shards == [1]
    others = [p for p, i in enumerate(ids) if partition_of(i, 3) != 1]
    truth = query.queries[0] @ normalise_rows(vectors[others]).T
    assert result.ids[0] == [ids[others[j]] for j in np.argsort(-truth, kind="stable")[:6]]
    assert handles[1].calls == 1 + config.shard_retries and box.asked == 1


def test_bad_input_raised_by_a_shard_is_not_retried_elsewhere() -> None:
    config = _config(2)
    view, handles = _system(config, item_ids(10), np.eye(10, DIM, dtype=np.float32) + 0.1)
    handles[0].fail = InvalidInputError("bad category")
    search, box = _search(config, view)
    with pytest.raises(InvalidInputError, match="bad category"):
        asyncio.run(search.search(make_request(np.ones(DIM), 3, dim=DIM, max_k=100)))
    assert handles[0].calls == 1 and box.asked == 0


def test_excludes_go_to_the_shard_that_owns_them() -> None:
    ids = item_ids(30)
    split = excludes_by_shard([ids[:10], None, ids[5:7]], 3)
    for shard, rows in enumerate(split):
        assert rows[1] is None
        for row, want in ((0, ids[:10]), (2, ids[5:7])):
            mine = [i for i in want if partition_of(i, 3) == shard]
            assert rows[row] == (mine or None)
