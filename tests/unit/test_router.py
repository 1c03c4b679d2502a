"""The router (actors/router.py, plain async Python) over fake shard handles around plain Shards, without Ray.

What the router promises: its merge equals one exact search, every write lands on the shard that owns the
id (on each of its replicas), reads by id find it, and a re-shard moves every item onto the new generation
while searches stay exact and writes wait for the switch; a re-shard planned against another generation, or
abandoned by its planner, is refused and its shards are stopped; a model swap holds item writes from its
staging to its switch (after which writes of the old space are refused) or its abort (the old space serves on).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rayrec.actors.router import Router
from rayrec.actors.shard import Shard

from rayrec.config import IndexConfig, RayrecConfig
from rayrec.exceptions import LayoutChangedError, ShardRetiredError, ShardUnavailableError
from rayrec.hashing import partition_of
from rayrec.learning import store
from rayrec.system.layout import Generation
from rayrec.system.model_swap import SpaceChangedError, space_of

from ._fakes import FakeHandle, retire_only, turns
from ._helpers import assert_equals_brute_force, clustered, hypothesis_settings, item_ids, normalise_rows

DIM = 8


def _config(shards: int, **kwargs: Any) -> RayrecConfig:
    kwargs.setdefault("shard_timeout_s", 5.0)
    kwargs.setdefault("shard_retries", 0)
    return RayrecConfig(index=IndexConfig(dim=DIM), num_shards=shards, **kwargs)


def _shards(config: RayrecConfig, generation: Generation) -> list[list[FakeHandle]]:
    """Per shard of generation, its replicas' fake handles (fresh, empty Shards)."""
    return [
        [FakeHandle(Shard(config, s, replica=r, generation=generation)) for r in range(config.replicas)]
        for s in range(generation.num_shards)
    ]


def _router(config: RayrecConfig, users: list[Any] | None = None) -> tuple[Router, list[list[FakeHandle]]]:
    shards = _shards(config, Generation.first(config.num_shards))
    return Router(config, shards, users=users or [], stop=retire_only), shards


def _padded(result: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    nq = len(result.ids)
    found, scores = np.full((nq, k), "", dtype=object), np.full((nq, k), -np.inf, dtype=np.float32)
    for q in range(nq):
        found[q, : len(result.ids[q])] = result.ids[q]
        scores[q, : len(result.scores[q])] = result.scores[q]
    return scores, found


@given(shards=st.integers(1, 4), n=st.integers(1, 150), k=st.integers(1, 12), seed=st.integers(0, 2**16))
@hypothesis_settings(30)
def test_merge_over_the_shards_equals_one_exact_search(shards: int, n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids, vectors = item_ids(n), clustered(rng, n, DIM, clusters=4)
    queries = normalise_rows(rng.standard_normal((4, DIM)))

    async def run() -> Any:
        router, _ = _router(_config(shards))
        assert await router.upsert(ids, vectors) == n
        return await router.search(queries, k)

    result = asyncio.run(run())
    scores, found = _padded(result, k)
    assert_equals_brute_force(scores, found, queries, normalise_rows(vectors), ids, k)
    assert not result.partial


def test_writes_land_on_every_replica_of_the_owning_shard_and_reads_by_id_find_them() -> None:
    rng = np.random.default_rng(1)
    ids, vectors = item_ids(60), clustered(rng, 60, DIM, clusters=3)
    cats = {"category": [f"c{i % 3}" for i in range(60)]}
    config = _config(3, replicas=2)

    async def run() -> None:
        router, shards = _router(config)
        await router.upsert(ids, vectors, cats)
        for s, replicas in enumerate(shards):
            mine = sorted(i for i in ids if partition_of(i, 3) == s)
            for handle in replicas:  # both replicas of the owner, nobody else
                assert sorted(handle.obj.index.live_items().ids) == mine
        assert await router.count() == 60
        assert await router.categories() == {"c0": 20, "c1": 20, "c2": 20}
        got, found = await router.vectors_of(["item-7", "nope"], required=False)
        assert found == [True, False]
        np.testing.assert_allclose(got[0], normalise_rows(vectors)[7], atol=1e-6)
        assert not got[1].any()
        records = await router.fetch(["item-5", "nope"])
        assert records[0]["item_id"] == "item-5" and records[0]["category"] == "c2"
        assert records[1] is None
        mean = normalise_rows(normalise_rows(vectors).sum(0, keepdims=True))[0]
        np.testing.assert_allclose(await router.mean_vector(), mean, atol=1e-5)
        sums = sum(h.by_method.get("vector_sum", 0) for r in shards for h in r)
        await router.mean_vector()  # cached: no shard asked again
        assert sum(h.by_method.get("vector_sum", 0) for r in shards for h in r) == sums
        assert await router.delete(["item-5", "item-6", "nope"]) == 2
        assert await router.count() == 58
        assert (await router.fetch(["item-5"]))[0] is None
        rest = [i for i in range(60) if i not in (5, 6)]  # the mean follows the write
        mean = normalise_rows(normalise_rows(vectors)[rest].sum(0, keepdims=True))[0]
        np.testing.assert_allclose(await router.mean_vector(), mean, atol=1e-5)

    asyncio.run(run())


def test_a_failed_shard_answers_partial_or_raises_as_configured() -> None:
    rng = np.random.default_rng(2)
    ids, vectors = item_ids(80), clustered(rng, 80, DIM, clusters=4)
    query = normalise_rows(rng.standard_normal((1, DIM)))

    async def run(policy: str) -> Any:
        router, shards = _router(_config(2, on_shard_failure=policy))
        await router.upsert(ids, vectors)
        shards[1][0].fail = RuntimeError("shard 1 is down")
        return await router.search(query, 10)

    result = asyncio.run(run("partial"))
    assert result.partial and result.failed_shards == [1]
    alive = np.array([partition_of(i, 2) == 0 for i in ids])
    scores, found = _padded(result, 10)
    assert_equals_brute_force(scores, found, query, normalise_rows(vectors), ids, 10, alive)
    with pytest.raises(ShardUnavailableError):
        asyncio.run(run("raise"))


def test_a_reshard_moves_every_item_while_searches_stay_exact_and_writes_wait_for_the_switch() -> None:
    rng = np.random.default_rng(3)
    ids, vectors = item_ids(300), clustered(rng, 300, DIM, clusters=6)
    queries = normalise_rows(rng.standard_normal((5, DIM)))
    config = _config(2)
    new = Generation(1, "t1", 3)

    async def run() -> None:
        router, old = _router(config)
        await router.upsert(ids[:250], vectors[:250])
        target = _shards(config, new)
        reshard = asyncio.ensure_future(router.reshard(target, new, base=0))
        while router._topology.gate.is_open:  # until the re-shard holds writes for its copy
            await asyncio.sleep(0)
        late = asyncio.ensure_future(router.upsert(ids[250:], vectors[250:]))
        during = await asyncio.gather(*(router.search(queries, 10) for _ in range(3)))
        assert not late.done() and not reshard.done()  # the write waits for the switch
        for result in during:  # exact over the 250 items of the old shards
            scores, found = _padded(result, 10)
            assert_equals_brute_force(scores, found, queries, normalise_rows(vectors[:250]), ids[:250], 10)
        summary = await reshard
        assert summary["from_shards"] == 2 and summary["to_shards"] == 3 and summary["items"] == 250
        assert await late == 50
        assert router.config.num_shards == 3 and router.get_layout()[1] == new
        for s, replicas in enumerate(target):  # every item on its new owner, the late writes too
            assert sorted(replicas[0].obj.index.live_items().ids) == sorted(i for i in ids if partition_of(i, 3) == s)
        for replicas in old:  # the old generation is stopped
            assert replicas[0].obj.retired
            with pytest.raises(ShardRetiredError):
                replicas[0].obj.count()
        scores, found = _padded(await router.search(queries, 10), 10)
        assert_equals_brute_force(scores, found, queries, normalise_rows(vectors), ids, 10)
        assert await router.reshard(target, new, base=0) == {  # a resent call whose switch happened
            "from_shards": None, "to_shards": 3, "generation": 1, "items": None,
        }

    asyncio.run(run())


def test_a_reshard_planned_against_another_generation_or_abandoned_stops_its_shards() -> None:
    rng = np.random.default_rng(4)
    ids, vectors = item_ids(40), clustered(rng, 40, DIM, clusters=2)
    config = _config(2)

    async def run() -> None:
        router, old = _router(config)
        await router.upsert(ids, vectors)
        stale = Generation(2, "t2", 3)  # planned against generation 1, but the router is at 0
        stale_shards = _shards(config, stale)
        with pytest.raises(LayoutChangedError, match="generation 0, not 1"):
            await router.reshard(stale_shards, stale, base=1)
        assert all(r[0].obj.retired for r in stale_shards)
        given_up = Generation(1, "t1", 3)
        given_up_shards = _shards(config, given_up)
        assert await router.abandon(given_up, given_up_shards) is True
        assert all(r[0].obj.retired for r in given_up_shards)
        with pytest.raises(LayoutChangedError, match="abandoned"):
            await router.reshard(_shards(config, given_up), given_up, base=0)
        assert not any(r[0].obj.retired for r in old)  # the old generation serves on, whole
        assert await router.count() == 40 and router.get_layout()[1] == Generation.first(2)

    asyncio.run(run())


def _model(root: Path, ids: list[str], vectors: np.ndarray) -> dict[str, Any]:
    """A learned item space holding a vector for every id (the space_of record of its folder)."""
    rng = np.random.default_rng(9)
    folder = store.save(root, "two-tower", ids, vectors, np.zeros(len(ids), bool),
                        rng.standard_normal((DIM, 5)), np.zeros(DIM), {"params": {"dim": DIM}})
    return space_of(Path(folder).name, folder)


def test_a_model_swap_holds_item_writes_until_its_switch_and_an_abort_leaves_the_old_space_serving(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(5)
    ids, old_vectors = item_ids(90), clustered(rng, 90, DIM, clusters=3)
    new_vectors = normalise_rows(clustered(rng, 90, DIM, clusters=3))
    query = normalise_rows(rng.standard_normal((2, DIM)))
    config = _config(2)
    space = _model(tmp_path, ids, new_vectors)

    async def run() -> None:
        router, old = _router(config)
        router.set_item_space(space_of("text", None))
        await router.upsert(ids, old_vectors)
        # Abort: the staged shards stop, the old space serves, writes go on.
        first = Generation(1, "a", 2)
        first_shards = _shards(config, first)
        assert (await router.stage_space(first_shards, first, 0, space, {}))["items"] == 90
        assert router.swap_pending("a")
        held = asyncio.ensure_future(router.upsert(["late"], old_vectors[:1], space="text"))
        await turns()
        assert not held.done()  # item writes wait while a swap is staged
        assert await router.abort_space(first) is True
        assert await held == 1 and not router.swap_pending("a")
        assert all(r[0].obj.retired for r in first_shards) and not any(r[0].obj.retired for r in old)
        assert router.item_space()["version"] == "text" and await router.count() == 91
        await router.delete(["late"])
        # Switch: every item in the new space, and a write of the old space's vectors held meanwhile is refused.
        second = Generation(1, "b", 3)
        second_shards = _shards(config, second)
        await router.stage_space(second_shards, second, 0, space, {})
        held = asyncio.ensure_future(router.upsert(["late"], old_vectors[:1], space="text"))
        await turns()
        assert not held.done()
        assert await router.switch_space(second) == {"generation": 1, "model_version": space["version"]}
        with pytest.raises(SpaceChangedError):
            await held
        assert router.item_space() == space and all(r[0].obj.retired for r in old)
        scores, found = _padded(await router.search(query, 10), 10)
        assert_equals_brute_force(scores, found, query, new_vectors, ids, 10)

    asyncio.run(run())
