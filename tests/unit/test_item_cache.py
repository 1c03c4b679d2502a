"""Item vectors kept for feedback (rayrec.users.item_cache) and the router and user actor that keep them exact,
over fake handles around the plain Router, UserVectors and Shards, without Ray."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from rayrec.actors.router import Router
from rayrec.actors.shard import Shard
from rayrec.actors.user_vectors import UserVectors

from rayrec.config import IndexConfig, RayrecConfig
from rayrec.exceptions import ItemNotFoundError, ShardUnavailableError
from rayrec.system.layout import Generation
from rayrec.users.item_cache import ItemVectorCache

from ._fakes import FakeHandle, retire_only
from ._helpers import clustered, item_ids, normalise_rows

DIM = 8


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_kept_vectors_are_least_recently_used_expire_and_a_read_that_raced_a_forget_is_not_kept() -> None:
    clock = Clock()
    cache = ItemVectorCache(size=2, ttl_s=10, clock=clock)
    v = list(np.eye(3, dtype=np.float32))  # one object per vector (what get returns is what was put)
    assert cache.get("a") is None
    assert cache.put("a", v[0], cache.epoch) and cache.put("b", v[1], cache.epoch)
    assert cache.get("a") is v[0]  # a is now the most recent: c pushes b out
    assert cache.put("c", v[2], cache.epoch)
    assert cache.get("b") is None and cache.get("a") is v[0] and len(cache) == 2
    epoch = cache.epoch  # a read starts ...
    assert cache.forget(["a", "nope"]) == 1  # ... a write of some item is forgotten meanwhile ...
    assert not cache.put("a", v[0], epoch)  # ... so what the read found is not kept
    assert cache.get("a") is None
    clock.now = 10.0  # c was kept at 0: expired
    assert cache.get("c") is None and len(cache) == 0
    assert cache.put("d", v[0], cache.epoch) and cache.forget(None) == 1 and len(cache) == 0
    assert not ItemVectorCache(size=0, ttl_s=10).put("a", v[0], 0)


class Recorder:
    def __init__(self) -> None:
        self.forgotten: list[list[str] | None] = []

    def forget_items(self, ids: list[str] | None) -> int:
        self.forgotten.append(None if ids is None else list(ids))
        return 0


def _config() -> RayrecConfig:
    return RayrecConfig(index=IndexConfig(dim=DIM), num_shards=2, shard_timeout_s=5.0, shard_retries=0)


def _system(config: RayrecConfig, users: list[Any]) -> tuple[Router, list[FakeHandle]]:
    shards = [FakeHandle(Shard(config, s)) for s in range(2)]
    return Router(config, shards, Generation.first(2), users=users, stop=retire_only), shards


def test_every_item_write_has_the_user_actors_forget_it_before_it_is_acknowledged_even_when_it_fails() -> None:
    rng = np.random.default_rng(0)
    ids, vectors = item_ids(10), clustered(rng, 10, DIM, clusters=2)

    async def run() -> None:
        recorders = [Recorder(), Recorder()]
        router, shards = _system(_config(), [FakeHandle(r) for r in recorders])
        await router.upsert(ids, vectors)
        await router.delete(["item-1"])
        await router.clear()
        shards[1].fail = RuntimeError("down")
        with pytest.raises(ShardUnavailableError):
            await router.upsert(ids, vectors)
        for r in recorders:
            assert r.forgotten == [ids, ["item-1"], None, ids]

    asyncio.run(run())


def test_feedback_reads_an_item_once_and_again_after_the_item_is_written() -> None:
    rng = np.random.default_rng(1)
    ids, vectors = item_ids(20), clustered(rng, 20, DIM, clusters=2)
    config = _config()

    async def run() -> None:
        router, shards = _system(config, [])
        user_actor = UserVectors(config, FakeHandle(router), 0)
        router._users.handles = [FakeHandle(user_actor)]  # the router tells this user actor of item writes
        await router.upsert(ids, vectors)

        def reads() -> int:
            return sum(h.by_method.get("vectors_of", 0) for h in shards)

        await user_actor.feedback("u", "item-3", "click", "e1")
        await user_actor.feedback("v", "item-3", "like", "e2")
        assert reads() == 1 and user_actor.items.hits == 1
        np.testing.assert_allclose(user_actor.items.get("item-3")[0], normalise_rows(vectors)[3], atol=1e-6)
        moved = normalise_rows(rng.standard_normal((1, DIM)))
        await router.upsert(["item-3"], moved)  # acknowledged only once the user actor forgot it
        assert user_actor.items.get("item-3") is None
        await user_actor.feedback("u", "item-3", "like", "e3")
        assert reads() == 2
        np.testing.assert_allclose(user_actor.items.get("item-3")[0], moved[0], atol=1e-6)
        await router.delete(["item-3"])
        with pytest.raises(ItemNotFoundError):
            await user_actor.feedback("u", "item-3", "like", "e4")

    asyncio.run(run())
