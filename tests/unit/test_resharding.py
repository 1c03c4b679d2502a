"""Re-sharding's plain parts: the split by new owner, the copy between plain shards, the write gate, the layout."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rayrec.actors.shard import Shard

from rayrec.catalogs.catalog import ItemBatch
from rayrec.config import IndexConfig, RayrecConfig
from rayrec.durability.storage import Storage
from rayrec.exceptions import InvalidInputError, ShardRetiredError
from rayrec.hashing import partition_of
from rayrec.routing.topk import merge_topk
from rayrec.system.layout import (
    LAYOUT_FILE,
    Generation,
    check_layout,
    delete_generation,
    read_layout,
    retiring_of,
    stray_generations,
    write_layout,
)
from rayrec.system.resharding import WriteGate, split_batch

from ._helpers import assert_equals_brute_force, clustered, hypothesis_settings, normalise_rows

DIM = 8


def _config(shards: int, **kw: object) -> RayrecConfig:
    return RayrecConfig(index=IndexConfig(dim=DIM, factory="Flat"), num_shards=shards, **kw)  # type: ignore[arg-type]


@hypothesis_settings(40)
@given(n=st.integers(0, 60), parts=st.integers(1, 7))
def test_split_batch_puts_every_row_on_its_owner_once(n, parts):
    rng = np.random.default_rng(n)
    ids = [f"x{i}" for i in range(n)]
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    batch = ItemBatch(ids, vecs, {"category": [str(i % 3) for i in range(n)], "title": [None] * n})
    out = split_batch(batch, parts)
    assert len(out) == parts
    assert sorted(i for b in out for i in b.ids) == sorted(ids)
    for part, b in enumerate(out):
        assert all(partition_of(i, parts) == part for i in b.ids)
        rows = [ids.index(i) for i in b.ids]
        assert rows == sorted(rows)  # row order kept
        np.testing.assert_array_equal(b.vectors, vecs[rows].reshape(-1, DIM))
        assert b.metadata == {"category": [str(r % 3) for r in rows], "title": [None] * len(rows)}
    with pytest.raises(ValueError, match="at least 1"):
        split_batch(batch, 0)


def _filled_shards(config: RayrecConfig, ids: list[str], vecs: np.ndarray, cats: list[str]) -> list[Shard]:
    shards = [Shard(config, s) for s in range(config.num_shards)]
    for s, shard in enumerate(shards):
        mine = [r for r, i in enumerate(ids) if partition_of(i, config.num_shards) == s]
        shard.upsert([ids[r] for r in mine], vecs[mine], {"category": [cats[r] for r in mine]})
    return shards


@hypothesis_settings(15)
@given(old=st.integers(1, 5), new=st.integers(1, 5), seed=st.integers(0, 1000))
def test_a_copy_between_plain_shards_answers_like_one_exact_index(old, new, seed):
    rng = np.random.default_rng(seed)
    n = 300
    ids = [f"i{i}" for i in range(n)]
    vecs = clustered(rng, n, DIM)
    cats = [("a", "b", "c")[i % 3] for i in range(n)]
    src = _filled_shards(_config(old), ids, vecs, cats)
    # Deletes and replacements leave tombstones: only live rows may travel.
    for shard in src:
        shard.delete(ids[:30])
    vecs[40:50] = clustered(rng, 10, DIM)
    for r in range(40, 50):
        src[partition_of(ids[r], old)].upsert([ids[r]], vecs[r : r + 1], {"category": ["z"]})
        cats[r] = "z"
    live = list(range(30, n))

    dst = [Shard(_config(new), j, generation=Generation(1, "t", new)) for j in range(new)]
    parts = [s.split(new) for s in src]
    parts = [p if new > 1 else [p] for p in parts]
    for j, shard in enumerate(dst):
        shard.stage_batches(*(p[j] for p in parts))
        shard.commit_staged()
    assert sum(s.count() for s in dst) == len(live)
    for j, shard in enumerate(dst):
        assert all(partition_of(i, new) == j for i in shard.index.live_items().ids)

    queries = normalise_rows(clustered(rng, 5, DIM))
    truth_vecs = normalise_rows(vecs[live])
    live_ids = [ids[r] for r in live]
    merged = merge_topk([s.search(queries, 10) for s in dst], 10)
    assert_equals_brute_force(merged[0], merged[1], queries, truth_vecs, live_ids, 10)
    eligible = np.array([cats[r] == "z" for r in live])
    merged = merge_topk([s.search(queries, 5, categories=[["z"]] * 5) for s in dst], 5)
    assert_equals_brute_force(merged[0], merged[1], queries, truth_vecs, live_ids, 5, eligible=eligible)


def test_a_retired_shard_refuses_calls():
    shard = _filled_shards(_config(1), ["a", "b"], np.eye(2, DIM, dtype=np.float32), ["x", "y"])[0]
    shard.retire()
    for call in (
        lambda: shard.count(), lambda: shard.vectors_of(["a"]), lambda: shard.upsert(["c"], np.ones((1, DIM)))
    ):
        with pytest.raises(ShardRetiredError, match="retired by a re-shard"):
            call()
    assert shard.info()["retired"] is True


def test_staged_copies_are_checked():
    shard = Shard(_config(1), 0)
    with pytest.raises(InvalidInputError):
        shard.stage_batches(ItemBatch(["a", "b"], np.ones((1, DIM), dtype=np.float32)))
    assert shard.commit_staged() == 0


def test_the_write_gate_holds_writes_while_closed_and_waits_for_those_inside():
    async def main() -> list[str]:
        gate = WriteGate()
        log: list[str] = []

        async def write(name: str, hold_s: float) -> None:
            async with gate.write():
                log.append(f"{name} in")
                await asyncio.sleep(hold_s)
                log.append(f"{name} out")

        async def close() -> None:
            async with gate.closed():
                log.append("closed")
                assert gate.inside == 0 and not gate.is_open
                await asyncio.sleep(0.05)
                log.append("reopening")

        first = asyncio.ensure_future(write("w1", 0.05))
        await asyncio.sleep(0.01)
        closer = asyncio.ensure_future(close())
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(write("w2", 0))  # arrives while the gate is closing
        await asyncio.gather(first, closer, second)
        assert gate.is_open and gate.inside == 0
        return log

    assert asyncio.run(main()) == ["w1 in", "w1 out", "closed", "reopening", "w2 in", "w2 out"]


def test_a_held_gate_stays_closed_across_calls_until_released():
    async def main() -> list[str]:
        gate = WriteGate()
        log: list[str] = []

        async def write(name: str) -> None:
            async with gate.write():
                log.append(name)

        await gate.hold()
        assert gate.held and not gate.is_open
        waiting = asyncio.ensure_future(write("w"))
        second = asyncio.ensure_future(gate.hold())  # a second holder waits for release
        await asyncio.sleep(0.02)
        assert log == [] and not second.done()
        gate.release()
        await second  # the write may pass between the two holders; none is inside once the second holds
        assert gate.held and gate.inside == 0 and not gate.is_open
        gate.release()
        await waiting
        assert log == ["w"] and gate.is_open and not gate.held
        with pytest.raises(RuntimeError):
            gate.release()
        # a hold cancelled while writes are inside leaves the gate open
        inside = asyncio.Event()
        done = asyncio.Event()

        async def long_write() -> None:
            async with gate.write():
                inside.set()
                await done.wait()

        writer = asyncio.ensure_future(long_write())
        await inside.wait()
        holder = asyncio.ensure_future(gate.hold())
        await asyncio.sleep(0.01)
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        assert gate.is_open and not gate.held
        done.set()
        await writer
        return log

    assert asyncio.run(main()) == ["w"]


def test_generation_names_are_unique_and_the_first_keeps_the_old_ones():
    first, later = Generation.first(2), Generation(3, "ab12", 4)
    assert first.actor_name(1) == "shard-1" and first.storage_name(1, 1) == "shard-1-replica-1"
    assert later.actor_name(1, 1) == "g3-ab12-shard-1-replica-1"
    assert later.storage_name(0) == "gen-3-ab12/shard-0"


def test_the_stored_layout_allows_another_shard_count_but_nothing_else(tmp_path):
    config = _config(2, storage=str(tmp_path))
    assert check_layout(config) == Generation.first(2)
    # Configured with 5 shards: the stored generation comes back (the caller re-shards to 5).
    assert check_layout(_config(5, storage=str(tmp_path))) == Generation.first(2)
    with pytest.raises(InvalidInputError, match="num_user_actors: stored 1, configured 3"):
        check_layout(_config(2, storage=str(tmp_path), num_user_actors=3))
    new = Generation(1, "cafe", 3)
    write_layout(config, new, retiring=Generation.first(2))
    stored = read_layout(Storage(str(tmp_path)))
    assert stored is not None and retiring_of(stored) == Generation.first(2)
    assert check_layout(config) == new
    (tmp_path / LAYOUT_FILE).write_text("{not json")
    with pytest.raises(InvalidInputError, match="not a rayrec layout file"):
        check_layout(config)
    (tmp_path / LAYOUT_FILE).write_text(json.dumps({"dim": DIM}))
    with pytest.raises(InvalidInputError, match="not a rayrec layout file"):
        check_layout(config)


def test_deleting_a_generation_removes_its_files_only(tmp_path):
    storage = Storage(str(tmp_path))
    first, second = Generation.first(2), Generation(1, "beef", 3)
    for gen in (first, second):
        for s in range(gen.num_shards):
            storage.child(gen.storage_name(s)).write_bytes("x", b"1")
    storage.child("users-0").write_bytes("x", b"1")
    storage.child("gen-7-dead").write_bytes("x", b"1")
    assert stray_generations(storage, second) == ["gen-7-dead"]
    delete_generation(storage, first, replicas=1)
    assert sorted(storage.dirs()) == ["gen-1-beef", "gen-7-dead", "users-0"]
    delete_generation(storage, second, replicas=1)
    assert sorted(storage.dirs()) == ["gen-7-dead", "users-0"]
