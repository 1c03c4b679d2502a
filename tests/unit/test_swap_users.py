"""A whole model swap (rayrec.system.model_swap.swap_model) over the plain router, shards and user actor behind
fake handles, without Ray: into models of fewer dimensions than the index (served padded), to and from a
sequential version (its user model moves the users), each answer against brute force in the new space."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rayrec.actors.router import Router
from rayrec.actors.shard import Shard
from rayrec.actors.user_vectors import UserVectors

from rayrec.config import IndexConfig, RayrecConfig
from rayrec.exceptions import InvalidInputError
from rayrec.learning import store
from rayrec.system.layout import Generation
from rayrec.system.model_swap import swap_model
from rayrec.users import model_files
from rayrec.users.feedback_rule import history_vector, update_vector
from tests._models import padded, sequential, two_tower

from ._fakes import FakeHandle, retire_only

DIM, TEXT_DIM = 24, 6  # the running index; the models are 8-d (two-tower) and 13-d (sequential)
IDS = [f"i{j}" for j in range(30)]
HISTORIES = {"a": ["i1", "i2", "i3"], "b": ["i10", "i11"], "c": ["i20"]}


def _shards(config: RayrecConfig, generation: Generation, *_: Any) -> list[list[FakeHandle]]:
    return [[FakeHandle(Shard(config, s, generation=generation))] for s in range(generation.num_shards)]


class System:
    """One router, its shards and one user actor, each a plain object behind a fake handle."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.config = RayrecConfig(index=IndexConfig(dim=DIM), num_shards=2, num_user_actors=1,
                                   shard_timeout_s=5.0, shard_retries=0)
        self.router = Router(self.config, _shards(self.config, Generation.first(2)), users=[], stop=retire_only)
        self.user = UserVectors(self.config, FakeHandle(self.router), 0)
        self.router._users.handles = [FakeHandle(self.user)]
        self.rng = rng

    async def swap(self, folder: str) -> dict[str, Any]:
        async def encode(texts: list[str]) -> np.ndarray:
            raise AssertionError(f"every item has a vector in the model: nothing to encode ({texts[:3]})")

        return await swap_model(FakeHandle(self.router), [FakeHandle(self.user)], folder, encode, _shards)

    async def check_answers(self, items: np.ndarray, users: dict[str, np.ndarray], moved_by: str) -> None:
        """Every item as the index holds it (padded), every user's vector, and their top 5 by brute force."""
        got = np.stack([r["vector"] for r in await self.router.fetch(IDS)])
        np.testing.assert_allclose(got, items, atol=1e-6)
        for user_id, vector in users.items():
            np.testing.assert_allclose(self.user.store.get(user_id).vector, vector, atol=1e-5, err_msg=user_id)
            out = await self.user.recommend(user_id, 5)
            seen = set(self.user.store.seen(user_id))
            truth = [IDS[j] for j in np.argsort(-(items @ vector), kind="stable") if IDS[j] not in seen][:5]
            assert [i["item_id"] for i in out["items"]] == truth, user_id
            assert out["user_model"] == moved_by
        assert (await self.user.info())["user_model"] == moved_by


def _by_rule(items: dict[str, np.ndarray], events: dict[str, list[tuple[str, str]]], rule: Any) -> dict[str, Any]:
    out = {}
    for user_id, history in HISTORIES.items():
        v = history_vector(np.stack([items[i] for i in history]), rule.history_recency)
        for item, event in events.get(user_id, []):
            v = update_vector(v, items[item], rule.learning_rates[event])
        out[user_id] = v
    return out


def _by_model(user: Any, events: dict[str, list[tuple[str, str]]]) -> dict[str, np.ndarray]:
    return {u: padded(user.vector([(i, "history") for i in h] + events.get(u, [])), DIM)[0]
            for u, h in HISTORIES.items()}


def test_a_system_moves_into_smaller_models_and_to_and_from_a_sequential_one_by_live_swaps(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tower_folder = two_tower(tmp_path, IDS, 8, TEXT_DIM, rng)
    seq_folder, user_model = sequential(tmp_path, IDS, TEXT_DIM, rng)
    tower = padded(store.load(tower_folder).vectors, DIM)
    seq = padded(store.load(seq_folder).vectors, DIM)
    events: dict[str, list[tuple[str, str]]] = {"a": [("i4", "like")], "b": [("i12", "dislike")]}

    async def run() -> None:
        system = System(rng)
        rule = system.config.feedback
        await system.router.upsert(IDS, padded(rng.standard_normal((len(IDS), DIM)), DIM))
        await system.user.set_histories(HISTORIES)
        for user_id, mine in events.items():
            for n, (item, event) in enumerate(mine):
                await system.user.feedback(user_id, item, event, f"{user_id}-{n}")

        # Into an 8-d model: the index stays 24-d, every vector padded with zeros; the rule moves users.
        out = await system.swap(tower_folder)
        assert (out["model_version"], out["previous"], out["items"], out["users"]) == ("v1", "unnamed", 30, 3)
        await system.check_answers(tower, _by_rule(dict(zip(IDS, tower)), events, rule), "rule")

        # To the 13-d sequential version: its user model re-derives every user from their kept history...
        out = await system.swap(seq_folder)
        assert (out["model_version"], out["previous"]) == ("v2", "v1")
        await system.check_answers(seq, _by_model(user_model, events), "sequential")
        # ... and moves them at every feedback from then on.
        await system.user.feedback("c", "i21", "click", "c-0")
        events["c"] = [("i21", "click")]
        await system.check_answers(seq, _by_model(user_model, events), "sequential")
        # A user actor started afresh (no storage) in this space takes its user model before its first call.
        again = UserVectors(system.config, FakeHandle(system.router), 0)
        assert (await again.recommend("nobody", 3))["user_model"] == "sequential"

        # Back to the two-tower version: the rule moves users again, re-derived from the same histories.
        out = await system.swap(tower_folder)
        assert (out["model_version"], out["previous"]) == ("v1", "v2")
        await system.check_answers(tower, _by_rule(dict(zip(IDS, tower)), events, rule), "rule")

    asyncio.run(run())


def test_a_larger_model_or_an_unreadable_user_model_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tower_folder = two_tower(tmp_path, IDS, 8, TEXT_DIM, rng)
    wide = two_tower(tmp_path, IDS, DIM + 1, TEXT_DIM, rng)
    seq_folder, _ = sequential(tmp_path, IDS, TEXT_DIM, rng)
    (Path(seq_folder) / store.USER_MODEL / model_files.TENSORS).unlink()

    async def run() -> None:
        system = System(rng)
        await system.router.upsert(IDS, padded(rng.standard_normal((len(IDS), DIM)), DIM))
        await system.user.set_histories(HISTORIES)
        await system.swap(tower_folder)
        before = {u: system.user.store.get(u).vector.copy() for u in HISTORIES}
        with pytest.raises(InvalidInputError, match="model v2 is 25-d but this system's index is 24-d"):
            await system.swap(wide)
        with pytest.raises(InvalidInputError, match="no readable user model.*nothing was swapped"):
            await system.swap(seq_folder)
        assert system.router.item_space()["version"] == "v1" and system.user.swaps.version() == "v1"
        tower = padded(store.load(tower_folder).vectors, DIM)
        await system.check_answers(tower, before, "rule")

    asyncio.run(run())
