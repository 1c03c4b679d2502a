"""The router's merged top-k equals one exact faiss index over the same items, for 1..8 shards."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import ray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rayrec.actors.router import RouterActor
from rayrec.actors.shard import ShardActor

from tests.integration.conftest import TINY_CPU, make_config, unit_vectors

DIM = 24
MAX_SHARDS = 8


@pytest.fixture(scope="module")
def layouts(ray_session):
    """Eight shard actors, and one router per shard count S over the first S of them."""
    base = make_config(DIM, num_shards=1)
    shards = [ShardActor.options(num_cpus=TINY_CPU).remote(base, i, 1) for i in range(MAX_SHARDS)]
    routers = {}

    def router(s: int):
        if s not in routers:
            cfg = make_config(DIM, num_shards=s)
            routers[s] = RouterActor.options(num_cpus=TINY_CPU).remote(cfg, shards[:s])
        return routers[s]

    yield router
    for handle in [*routers.values(), *shards]:
        ray.kill(handle)


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    num_shards=st.integers(1, MAX_SHARDS),
    n_items=st.integers(1, 600),
    k=st.integers(1, 50),
    n_queries=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_merge_equals_one_exact_index(layouts, num_shards, n_items, k, n_queries, seed):
    rng = np.random.default_rng(seed)
    router = layouts(num_shards)
    ray.get(router.clear.remote())
    x = unit_vectors(rng, n_items, DIM)
    ids = [f"sku-{seed % 997}-{i}" for i in range(n_items)]
    assert ray.get(router.upsert.remote(ids, x)) == n_items
    q = unit_vectors(rng, n_queries, DIM)

    result = ray.get(router.search.remote(q, k))

    truth = faiss.IndexFlatIP(DIM)
    truth.add(x)
    scores, rows = truth.search(q, min(k, n_items))
    assert not result.partial
    for qi in range(n_queries):
        np.testing.assert_array_equal(result.ids[qi], [ids[r] for r in rows[qi]])
        np.testing.assert_allclose(result.scores[qi], scores[qi], atol=1e-5)


def test_count_and_placement_follow_the_stable_hash(layouts):
    router = layouts(4)
    ray.get(router.clear.remote())
    rng = np.random.default_rng(3)
    ids = [f"item{i}" for i in range(400)]
    ray.get(router.upsert.remote(ids, unit_vectors(rng, 400, DIM)))
    info = ray.get(router.info.remote())
    from rayrec.hashing import partitions_of

    expected = np.bincount(partitions_of(ids, 4), minlength=4)
    assert [shard["items"] for shard in info] == expected.tolist()
    assert ray.get(router.count.remote()) == 400


def refill(router, seed: int, n: int, prefix: str) -> tuple[list[str], np.ndarray]:
    """Empties the router's shards and upserts n random unit vectors with ids prefix0.."""
    ray.get(router.clear.remote())
    x = unit_vectors(np.random.default_rng(seed), n, DIM)
    ids = [f"{prefix}{i}" for i in range(n)]
    ray.get(router.upsert.remote(ids, x))
    return ids, x


def test_batched_queries_with_per_query_exclusions(layouts):
    router = layouts(3)
    ids, x = refill(router, 11, 300, "i")
    q = x[:2]
    excludes = [["i0"], ["i1", "i2"]]
    result = ray.get(router.search.remote(q, 5, excludes))
    sims = q @ x.T
    for qi, excl in enumerate(excludes):
        allowed = [i for i in np.argsort(-sims[qi], kind="stable") if ids[i] not in excl][:5]
        assert result.ids[qi] == [ids[i] for i in allowed]


def test_router_client_coalesces_and_answers_each_caller(layouts):
    """Concurrent searches through one RouterClient share router calls, each gets its own exact answer,
    and a bad request fails alone."""
    import asyncio

    from rayrec.exceptions import InvalidInputError
    from rayrec.routing.client import RouterClient

    router = layouts(2)
    ids, x = refill(router, 21, 500, "c")
    queries = unit_vectors(np.random.default_rng(22), 40, DIM)

    async def main():
        client = RouterClient(router, DIM, max_k=100)
        calls = [client.search(queries[i], k=3 + i % 5, exclude=[ids[i]]) for i in range(40)]
        calls.append(client.search(np.ones(DIM + 1), k=3))  # wrong dimension: fails alone
        calls.append(client.search(queries[0], k=3, categories=["none-such"]))
        out = await asyncio.gather(*calls, return_exceptions=True)
        return out, client.calls_sent

    out, calls_sent = asyncio.run(main())
    assert calls_sent < 40  # coalesced
    sims = queries @ x.T
    for i in range(40):
        k = 3 + i % 5
        order = [j for j in np.argsort(-sims[i], kind="stable") if j != i][:k]
        assert out[i].ids[0] == [ids[j] for j in order]
    assert isinstance(out[40], InvalidInputError) and "dimension is 25" in str(out[40])
    assert out[41].ids == [[]]  # a category nothing has: no results, not an error
