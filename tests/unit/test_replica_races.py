"""Races between a shard's replicas and the router's writes (rayrec.routing.replicas, rayrec.system.topology).

Over fake handles around plain Shards, without Ray, some answering late or hanging. Concurrent writes from
an unknown position each take their own position, and every replica holds every acknowledged one; a write
whose caller stops waiting still runs to its end (its out-of-sync marking too), and its retry waits for it
instead of sending it again; a repair whose replica hangs never holds the shard's writes; a replica that
came back unmarked is told again before it is repaired; a read goes on to every replica before it fails.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rayrec.actors.router import Router
from rayrec.actors.shard import Shard

from rayrec.config import IndexConfig, RayrecConfig
from rayrec.exceptions import ReplicaOutOfSyncError, ShardUnavailableError
from rayrec.routing.replicas import ReplicaSet
from rayrec.system import topology
from rayrec.system.generations import ShardSet
from rayrec.system.layout import Generation

from ._fakes import FakeHandle, retire_only, until

DIM = 4


class SlowHandle(FakeHandle):
    """A fake handle whose calls of some methods answer after a delay, or (hang) never while it is set."""

    def __init__(self, obj: Any, delays: dict[str, float] | None = None) -> None:
        super().__init__(obj)
        self.delays = delays or {}
        self.hang = False

    async def call(self, name: str, args: tuple[Any, ...]) -> Any:
        while self.hang:
            await asyncio.sleep(0.01)
        await asyncio.sleep(self.delays.get(name, 0.0))
        return await super().call(name, args)


def _config(replicas: int = 3, storage: Path | None = None) -> RayrecConfig:
    return RayrecConfig(index=IndexConfig(dim=DIM), num_shards=1, replicas=replicas,
                        storage=None if storage is None else str(storage),
                        shard_timeout_s=5.0, shard_retries=2, write_timeout_s=5.0)


def _shard(config: RayrecConfig, replica: int) -> Shard:
    return Shard(config, 0, replica=replica, generation=Generation.first(1))


def _vector(i: int) -> np.ndarray:
    v = np.zeros((1, DIM), dtype=np.float32)
    v[0, i % DIM] = 1.0
    return v


def _items(shard: Shard) -> list[str]:
    return sorted(shard.index.live_items().ids)


def test_concurrent_writes_from_an_unknown_position_each_take_their_own() -> None:
    config = _config()
    rng = np.random.default_rng(0)

    async def run() -> None:
        handles = [SlowHandle(_shard(config, r), {"write_at": float(rng.uniform(0, 0.01)),
                                                  "sync_state": float(rng.uniform(0, 0.01))}) for r in range(3)]
        replicas = ReplicaSet(handles, suspect_s=1.0, hedge_s=1.0)
        assert replicas.position is None  # a router that just started: every write asks the positions first
        answers = await asyncio.gather(*(replicas.write("upsert", [f"i{n}"], _vector(n), None)() for n in range(20)))
        assert answers == [1] * 20
        for h in handles:
            assert _items(h.obj) == sorted(f"i{n}" for n in range(20))
            assert h.obj.replication.position == 20 and h.obj.replication.out_of_sync is None
        assert replicas.position == 20 and not replicas.out_of_sync

    asyncio.run(run())


def test_a_write_whose_caller_stops_waiting_runs_to_its_end_and_its_retry_waits_for_it() -> None:
    config = _config(replicas=2)

    async def run() -> None:
        handles = [SlowHandle(_shard(config, 0)), SlowHandle(_shard(config, 1), {"write_at": 0.2})]
        marked: list[tuple[list[int], str]] = []

        async def on_diverged(_: ReplicaSet, lagging: list[int], why: str) -> None:
            await asyncio.sleep(0.2)  # the router marks it in storage and tells it: slow, and never cut short
            marked.append((lagging, why))

        replicas = ReplicaSet(handles, suspect_s=1.0, hedge_s=1.0, on_diverged=on_diverged)
        write = replicas.write("upsert", ["a"], _vector(0), None)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(write(), 0.05)  # a fan-out's deadline: its caller stops waiting
        assert await write() == 1  # the fan-out's retry: the same write, not sent again
        assert [h.by_method["write_at"] for h in handles] == [1, 1]
        assert [h.obj.replication.position for h in handles] == [1, 1] and replicas.position == 1

        # A write that one replica fails, whose caller stops waiting while the failed one is being marked:
        # the marking runs to its end, and the retry answers once it has.
        handles[1].fail = RuntimeError("disk gone")
        write = replicas.write("upsert", ["b"], _vector(1), None)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(write(), 0.05)
        assert await write() == 1
        assert marked and marked[0][0] == [1] and "write 2 (upsert)" in marked[0][1]
        assert replicas.out_of_sync == {1} and replicas.in_sync() == [0]
        assert handles[0].by_method["write_at"] == 2 and _items(handles[0].obj) == ["a", "b"]

    asyncio.run(run())


def test_a_write_no_replica_can_take_names_the_shard_out_of_sync() -> None:
    config = _config(replicas=2)

    async def run() -> None:
        replicas = ReplicaSet([FakeHandle(_shard(config, r)) for r in range(2)], suspect_s=1.0, hedge_s=1.0)
        replicas.out_of_sync.update({0, 1})
        for method, args in (("upsert", (["a"], _vector(0), None)), ("stage_batches", ())):
            with pytest.raises(ShardUnavailableError, match="no replica of this shard is in sync"):
                await replicas.write(method, *args)()

    asyncio.run(run())


def test_a_repair_whose_replica_hangs_never_holds_the_shards_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology, "SYNC_TIMEOUT_S", 0.1)
    monkeypatch.setattr(topology, "REPAIR_RETRY_S", 0.05)
    monkeypatch.setattr(topology, "REPAIR_RETRY_CAP_S", 0.05)
    config = _config(replicas=2)

    async def run() -> None:
        handles = [SlowHandle(_shard(config, r)) for r in range(2)]
        router = Router(config, [handles], users=[], stop=retire_only)
        assert await router.upsert(["a"], _vector(0)) == 1
        handles[1].fail = RuntimeError("node lost")
        assert await router.upsert(["b"], _vector(1)) == 1  # acknowledged from replica 0; replica 1 to repair
        handles[1].fail, handles[1].hang = None, True  # its calls now hang, as on a node Ray has not given up on
        for n in range(5):  # the repair keeps trying; item writes go on meanwhile, each at once
            assert await asyncio.wait_for(router.upsert([f"c{n}"], _vector(n)), 1.0) == 1
            await asyncio.sleep(0.05)
        assert router._topology.repairing  # still trying
        handles[1].hang = False
        await until(lambda: not router._topology.repairing, timeout_s=5, what="the repair")
        assert _items(handles[1].obj) == _items(handles[0].obj) == ["a", "b", "c0", "c1", "c2", "c3", "c4"]
        assert handles[1].obj.replication.position == handles[0].obj.replication.position == 7

    asyncio.run(run())


def test_a_replica_that_came_back_unmarked_is_told_again_before_its_repair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology, "REPAIR_RETRY_S", 0.02)
    monkeypatch.setattr(topology, "REPAIR_RETRY_CAP_S", 0.02)
    config = _config(replicas=2)  # no storage: a restarted replica comes back empty and unmarked

    async def run() -> None:
        handles = [FakeHandle(_shard(config, r)) for r in range(2)]
        router = Router(config, [handles], users=[], stop=retire_only)
        assert await router.upsert(["a"], _vector(0)) == 1
        handles[1].fail = RuntimeError("restarting")  # down when it is told it is out of sync
        assert await router.upsert(["b"], _vector(1)) == 1
        restarted = _shard(config, 1)
        assert restarted.replication.out_of_sync is None  # by its own account in sync: a user actor would read it

        def restore_fails(state: Any) -> int:
            raise RuntimeError("restore failed")

        restarted.restore_replica = restore_fails  # type: ignore[method-assign]
        handles[1].obj, handles[1].fail = restarted, None
        await until(lambda: restarted.replication.out_of_sync is not None, timeout_s=5, what="the word")
        with pytest.raises(ReplicaOutOfSyncError):
            restarted.count()
        del restarted.restore_replica  # the repair's next try lands
        await until(lambda: not router._topology.repairing, timeout_s=5, what="the repair")
        assert _items(restarted) == ["a", "b"] and restarted.replication.out_of_sync is None

    asyncio.run(run())


def test_a_read_goes_on_to_every_replica_before_it_fails() -> None:
    config = _config()

    async def run() -> None:
        handles = [FakeHandle(_shard(config, r)) for r in range(3)]
        for h in handles:
            h.obj.upsert(["a"], _vector(0))
        for h in handles[:2]:
            h.obj.replication.mark("missed a write")  # as a user actor sees it: it learns only from the refusal
        replicas = ReplicaSet(handles, suspect_s=0.0, hedge_s=1.0)
        for _ in range(3):  # whichever replica's turn it is
            assert await replicas.read("count")() == 1
        handles[2].obj.replication.mark("missed a write too")
        with pytest.raises(ReplicaOutOfSyncError):
            await replicas.read("count")()

    asyncio.run(run())


def test_a_discarded_generation_is_abandoned() -> None:
    config = _config(replicas=1)

    async def run() -> None:
        router = Router(config, [[FakeHandle(_shard(config, 0))]], users=[], stop=retire_only)
        topo = router._topology
        new = Generation(1, "planned", 1)
        await topo.discard(ShardSet(new, topo.replica_sets([[FakeHandle(_shard(config, 0))]], new)))
        assert "planned" in topo.abandoned

    asyncio.run(run())
