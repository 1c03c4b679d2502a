"""A user actor's write path (rayrec.users.user_writes) and read path (rayrec.users.user_reads), composed in the
plain UserVectors over a plain router and shards behind fake handles, without Ray: each answer against the
feedback rule and brute force, the freshness the two paths share, erasure, a vector of a retired space."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from rayrec.actors.router import Router
from rayrec.actors.shard import Shard
from rayrec.actors.user_vectors import UserVectors

from rayrec.config import IndexConfig, RayrecConfig
from rayrec.exceptions import InvalidInputError, ItemNotFoundError
from rayrec.system.layout import Generation
from rayrec.system.model_swap import SpaceChangedError, space_of
from rayrec.users.feedback_rule import update_vector

from ._fakes import FakeHandle, retire_only
from ._helpers import clustered, item_ids, normalise_rows

DIM = 8
IDS = item_ids(12)


async def _system(rng: np.random.Generator) -> tuple[RayrecConfig, Router, np.ndarray]:
    """A router over two plain shards holding IDS; returns the items as the index holds them (normalised)."""
    config = RayrecConfig(index=IndexConfig(dim=DIM), num_shards=2, shard_timeout_s=5.0, shard_retries=0)
    shards = [FakeHandle(Shard(config, s)) for s in range(2)]
    router = Router(config, shards, Generation.first(2), users=[], stop=retire_only)
    vectors = clustered(rng, len(IDS), DIM, clusters=3)
    await router.upsert(IDS, vectors)
    return config, router, normalise_rows(vectors)


def _user_actor(config: RayrecConfig, router: Router) -> UserVectors:
    user = UserVectors(config, FakeHandle(router), 0)
    router._users.handles = [*router._users.handles, FakeHandle(user)]
    return user


def _top(items: np.ndarray, vector: np.ndarray, k: int, seen: set[str]) -> list[str]:
    return [IDS[j] for j in np.argsort(-(items @ vector), kind="stable") if IDS[j] not in seen][:k]


def test_feedback_moves_the_user_by_the_rule_and_the_next_answer_is_brute_force_and_reports_freshness_once() -> None:
    async def run() -> None:
        config, router, items = await _system(np.random.default_rng(0))
        user = _user_actor(config, router)
        cold = await user.recommend("u", 4)
        assert cold["cold_start"] and cold["version"] == 0 and cold["freshness_ms"] is None

        out = await user.feedback("u", IDS[3], "like", "e1", arrived_at=time.time() - 0.5)
        assert out == {"user_id": "u", "version": 1, "applied": True}
        np.testing.assert_allclose(user.store.get("u").vector, items[3], atol=1e-6)  # a first like: its item
        assert await user.feedback("u", IDS[3], "like", "e1") == {"user_id": "u", "version": 1, "applied": False}

        await user.feedback("u", IDS[7], "dislike", "e2", arrived_at=time.time() - 0.5)
        rate = config.feedback.learning_rates["dislike"]
        expected = update_vector(items[3], items[7], rate)  # decay over milliseconds: ~1
        np.testing.assert_allclose(user.store.get("u").vector, expected, atol=1e-5)

        first = await user.recommend("u", 4)
        assert [i["item_id"] for i in first["items"]] == _top(items, expected, 4, {IDS[3], IDS[7]})
        assert (first["version"], first["cold_start"], first["user_model"]) == (2, False, "rule")
        assert first["freshness_ms"] >= 500  # the feedback's arrival, reported by the read path once
        assert (await user.recommend("u", 4))["freshness_ms"] is None
        assert set(first["timing"]) == {"user_ms", "search_ms"}

    asyncio.run(run())


def test_feedback_many_equals_one_event_at_a_time_with_errors_per_event() -> None:
    events: list[Any] = [
        ("a", IDS[1], "click", "a1"), ("b", IDS[2], "like", "b1"), ("a", "nope", "like", "a2"),
        ("a", IDS[4], "dislike", "a3"), ("a", IDS[1], "click", "a1"), ("b", IDS[5], "bogus", "b2"),
        ("b", IDS[6], "purchase", None), ("too", "few"),
    ]

    async def run() -> None:
        config, router, _ = await _system(np.random.default_rng(1))
        many, one = _user_actor(config, router), _user_actor(config, router)
        outs = await many.feedback_many(events)
        singles = []
        for fields in events[:-1]:
            try:
                singles.append(await one.feedback(*fields))
            except (ItemNotFoundError, InvalidInputError) as exc:
                singles.append(exc)
        assert isinstance(outs[2], ItemNotFoundError) and isinstance(outs[5], InvalidInputError)
        assert isinstance(outs[7], InvalidInputError)
        for got, alone in zip(outs[:-1], singles, strict=True):
            assert type(got) is type(alone) and (not isinstance(got, dict) or got == alone)
        assert outs[4] == {"user_id": "a", "version": 2, "applied": False}  # a1 again: nothing changes
        for user_id in ("a", "b"):
            mine, theirs = many.store.get(user_id), one.store.get(user_id)
            assert mine.version == theirs.version and [h[:2] for h in mine.history] == [h[:2] for h in theirs.history]
            np.testing.assert_allclose(mine.vector, theirs.vector, atol=1e-5)

    asyncio.run(run())


def test_delete_erases_the_user_and_its_freshness_and_a_vector_of_a_retired_space_is_refused() -> None:
    async def run() -> None:
        config, router, items = await _system(np.random.default_rng(2))
        router.set_item_space(space_of("v2", None))
        user = _user_actor(config, router)
        await user.set_histories({"h": [IDS[0], IDS[1]]})
        await user.feedback("h", IDS[2], "click", "e1")
        assert (await user.get("h"))["version"] == 2
        assert await user.delete_user("h") == {"user_id": "h", "deleted": True}
        assert await user.get("h") is None and await user.export_user("h") is None
        assert "h" not in user.writes.fresh and await user.count() == 0
        assert await user.delete_user("h") == {"user_id": "h", "deleted": False}
        assert (await user.recommend("h", 3))["cold_start"]

        with pytest.raises(SpaceChangedError, match="moved to item space 'v2'"):
            await user.set_vector("p", items[0], "e1", None, "v1")
        assert await user.get("p") is None
        out = await user.set_vector("p", items[5], "e2", None, "v2")
        assert out == {"user_id": "p", "version": 1, "applied": True}
        assert (await user.export_user("p"))["placed_from"]["text_embedding"] is None  # a raw vector
        got = await user.recommend("p", 3, exclude_seen=False)
        assert [i["item_id"] for i in got["items"]] == _top(items, items[5], 3, set())
        assert got["space"] == "v2"

    asyncio.run(run())
