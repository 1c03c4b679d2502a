"""Shard replicas that diverge are marked out of sync and repaired (rayrec.routing.replicas, system.topology).

Over fake handles around plain Shards on real files, without Ray. A write that one replica fails and its
peer applies is acknowledged only once the failed one is out of sync (marked in its storage, so a restart
keeps it so): it answers no reads, the router writes around it, and a repair copies the peer's state into
it, after which every replica holds the same items at the same write position. A replica's position
survives a restart and a write out of turn takes it out of sync; a router that starts over replicas at
different positions repairs the one behind before its first write; a load whose stage one replica lost
(a restart between staging and committing) still lands on both.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rayrec.actors.router import Router
from rayrec.actors.shard import Shard

from rayrec.config import IndexConfig, RayrecConfig
from rayrec.durability import replica_state
from rayrec.durability.storage import Storage
from rayrec.exceptions import ReplicaOutOfSyncError
from rayrec.hashing import partition_of
from rayrec.routing.replicas import ReplicaSet
from rayrec.system.layout import Generation

from ._fakes import FakeHandle, retire_only, until
from ._helpers import clustered, item_ids, normalise_rows

DIM = 8
FIRST = Generation.first(2)


def _config(tmp_path: Path) -> RayrecConfig:
    return RayrecConfig(index=IndexConfig(dim=DIM), num_shards=2, replicas=2, storage=str(tmp_path),
                        shard_timeout_s=5.0, shard_retries=0, write_timeout_s=5.0)


def _replica(config: RayrecConfig, shard: int, replica: int) -> Shard:
    return Shard(config, shard, replica=replica, generation=FIRST)


def _state(shard: Shard) -> dict[str, list[float]]:
    """Item id -> rounded vector of a replica's live items."""
    batch = shard.index.live_items()
    return {i: np.round(v, 5).tolist() for i, v in zip(batch.ids, batch.vectors)}


def _storage(config: RayrecConfig, shard: int, replica: int) -> Storage:
    return Storage(config.storage).child(FIRST.storage_name(shard, replica))


def test_a_write_one_replica_fails_is_acknowledged_once_it_is_out_of_sync_and_a_repair_brings_it_back(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    rng = np.random.default_rng(0)
    ids, vectors = item_ids(80), clustered(rng, 80, DIM, clusters=4)

    async def run() -> None:
        handles = [[FakeHandle(_replica(config, s, r)) for r in range(2)] for s in range(2)]
        router = Router(config, handles, users=[], stop=retire_only)
        assert await router.upsert(ids[:40], vectors[:40]) == 40
        lagging = handles[0][1]
        lagging.fail = RuntimeError("disk gone")  # every call to it fails, the word of its state too
        assert await router.upsert(ids[40:], vectors[40:]) == 40  # acknowledged: replica 0 applied it
        assert replica_state.read_mark(_storage(config, 0, 1)) is not None  # marked before the answer
        # A restart of the lagging replica reads its mark: it refuses reads, whoever asks.
        lagging.obj.close()
        lagging.obj = _replica(config, 0, 1)
        assert lagging.obj.replication.out_of_sync is not None and lagging.obj.replication.position == 1
        with pytest.raises(ReplicaOutOfSyncError):
            lagging.obj.count()
        # The router writes around it, and a reader that knows nothing of it reads the peer.
        assert await router.delete([ids[0], ids[41]]) == 2
        mine = sorted(i for i in ids if partition_of(i, 2) == 0 and i not in (ids[0], ids[41]))
        reader = ReplicaSet(handles[0], 5.0, 5.0)
        lagging.fail = None
        for _ in range(4):
            assert await reader.read("count")() == len(mine)
        # The repair (the router retries it) copies replica 0 into it: the same items, the same position.
        await until(lambda: not router._topology.repairing, timeout_s=10, what="the repair")
        healthy = handles[0][0].obj
        assert lagging.obj.replication.state() == healthy.replication.state() == {"position": 3, "out_of_sync": None}
        assert _state(lagging.obj) == _state(healthy) and sorted(_state(healthy)) == mine
        assert replica_state.read_mark(_storage(config, 0, 1)) is None
        back = next(p for p in range(40) if partition_of(ids[p], 2) == 0)
        assert await router.upsert([ids[back]], vectors[back:back + 1]) == 1  # both replicas take writes again
        assert _state(lagging.obj) == _state(healthy) and lagging.obj.replication.position == 4
        got, found = await router.vectors_of([ids[back]], required=False)
        assert found == [True] and np.allclose(got[0], normalise_rows(vectors[back:back + 1])[0], atol=1e-6)
        # The restarted replica recovers the repaired state and position from its own storage.
        lagging.obj.close()
        restarted = _replica(config, 0, 1)
        assert restarted.replication.state() == {"position": 4, "out_of_sync": None}
        assert _state(restarted) == _state(healthy)

    asyncio.run(run())


def test_a_replicas_position_survives_a_restart_and_a_write_out_of_turn_marks_it_out_of_sync(tmp_path: Path) -> None:
    config = _config(tmp_path)
    shard = _replica(config, 0, 0)
    one = np.ones((1, DIM), dtype=np.float32)
    assert shard.write_at(1, "upsert", (["a"], one, None)) == (1, 1)
    assert shard.write_at(2, "delete", (["a"],)) == (1, 2)
    assert shard.write_at(3, "delete", (["absent"],)) == (0, 3)  # changed nothing: its position is logged alone
    shard.close()
    shard = _replica(config, 0, 0)
    assert shard.replication.position == 3
    shard.snapshot()
    shard.write_at(4, "upsert", (["b"], one, None))
    shard.close()
    shard = _replica(config, 0, 0)  # from the snapshot's position, then the log after it
    assert shard.replication.position == 4 and sorted(_state(shard)) == ["b"]
    # A write that does not follow its position (write 4 again, or write 6: it missed write 5) is refused
    # and the replica takes itself out of sync, durably, until a repair.
    for seq in (4, 6):
        with pytest.raises(ReplicaOutOfSyncError, match=f"write {seq} at position 4"):
            shard.write_at(seq, "upsert", (["c"], one, None))
        assert "c" not in shard.index and shard.replication.position == 4
        with pytest.raises(ReplicaOutOfSyncError):
            shard.count()
        shard.replication.repaired()
    shard.replication.mark("a test")
    shard.close()
    assert _replica(config, 0, 0).replication.out_of_sync == "a test"


def test_a_router_started_over_replicas_at_different_positions_repairs_the_one_behind_before_writing(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    rng = np.random.default_rng(1)
    ids, vectors = item_ids(30), normalise_rows(clustered(rng, 30, DIM, clusters=3))
    replicas = [[_replica(config, s, r) for r in range(2)] for s in range(2)]
    for s in range(2):
        mine = [p for p, i in enumerate(ids) if partition_of(i, 2) == s]
        for r in range(2):
            replicas[s][r].write_at(1, "upsert", ([ids[p] for p in mine[:5]], vectors[mine[:5]], None))
        # The router crashed while its second write had reached only replica 0.
        replicas[s][0].write_at(2, "upsert", ([ids[p] for p in mine[5:]], vectors[mine[5:]], None))

    async def run() -> None:
        handles = [[FakeHandle(r) for r in group] for group in replicas]
        router = Router(config, handles, users=[], stop=retire_only)
        await router.check_replicas()  # what a router does once it runs: shard 0 gets no write here
        assert await router.upsert(["new"], np.ones((1, DIM))) == 1
        await until(lambda: not router._topology.repairing, timeout_s=10, what="the repair")
        for s, (first, second) in enumerate(replicas):
            expected = 3 if partition_of("new", 2) == s else 2
            assert first.replication.position == second.replication.position == expected
            assert _state(first) == _state(second)
            assert len(_state(first)) == sum(partition_of(i, 2) == s for i in [*ids, "new"])

    asyncio.run(run())


def test_a_load_whose_stage_one_replica_lost_lands_on_both(tmp_path: Path) -> None:
    config = _config(tmp_path)
    rng = np.random.default_rng(2)
    ids, vectors = item_ids(50), normalise_rows(clustered(rng, 50, DIM, clusters=3))
    path = str(tmp_path / "items.parquet")
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), DIM)
    pq.write_table(pa.table({"item_id": ids, "embedding": embedding}), path)

    async def run() -> None:
        handles = [[FakeHandle(_replica(config, s, r)) for r in range(2)] for s in range(2)]
        router = Router(config, handles, users=[], stop=retire_only)
        forgetful = handles[1][0].obj
        commit = forgetful.commit_staged

        def restarted_then_commit(expected: Any = None) -> int:
            forgetful.staged.drop()  # what a restart between staging and committing leaves
            return commit(expected)

        forgetful.commit_staged = restarted_then_commit
        assert await router.load(path) == 50
        await until(lambda: not router._topology.repairing, timeout_s=10, what="the repair")
        for s, (first, second) in enumerate((h.obj for h in group) for group in handles):
            assert _state(first) == _state(second)
            assert len(_state(first)) == sum(partition_of(i, 2) == s for i in ids)
        assert await router.count() == 50

    asyncio.run(run())
