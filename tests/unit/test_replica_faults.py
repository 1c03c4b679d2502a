"""Seeded fault sequences over a router's shard replicas (plain Router and Shards on real files, fake handles).

Each sequence interleaves upserts and deletes with replicas going down (every call to them fails) and
coming back (a restart: a new Shard recovered from its own directory). A write that fails is retried, as
clients are told to, until acknowledged. After every acknowledged write, each replica that would answer a
read (up, and not out of sync) holds exactly the acknowledged items; at the end, with every replica back
and the repairs done, every replica holds them at the same write position. With the out-of-sync marking
or the repair taken away, sequences fail.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from rayrec.actors.router import Router
from rayrec.actors.shard import Shard

from rayrec.config import IndexConfig, RayrecConfig
from rayrec.hashing import partition_of
from rayrec.system import topology
from rayrec.system.layout import Generation

from ._fakes import FakeHandle, retire_only, until

DIM = 4
POOL = [f"item-{i}" for i in range(24)]


def _holds(shard: Shard, expected: dict[str, np.ndarray]) -> bool:
    """Whether a replica's live items are exactly expected (ids, and vectors to float32 rounding)."""
    batch = shard.index.live_items()
    held = dict(zip(batch.ids, batch.vectors))
    return sorted(held) == sorted(expected) and all(np.allclose(held[i], expected[i], atol=1e-5) for i in held)


@pytest.mark.parametrize("seed", range(16))
def test_replicas_hold_every_acknowledged_write_through_failures_and_restarts(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(topology, "REPAIR_RETRY_S", 0.01)
    monkeypatch.setattr(topology, "REPAIR_RETRY_CAP_S", 0.02)
    rng = np.random.default_rng(seed)
    shards, replicas = (1, 3) if seed % 2 else (2, 2)
    config = RayrecConfig(index=IndexConfig(dim=DIM), num_shards=shards, replicas=replicas, storage=str(tmp_path),
                          shard_timeout_s=5.0, shard_retries=0, write_timeout_s=5.0, snapshot_every=7)
    first = Generation.first(shards)

    def fresh(s: int, r: int) -> Shard:
        return Shard(config, s, replica=r, generation=first)

    async def run() -> None:
        handles = [[FakeHandle(fresh(s, r)) for r in range(replicas)] for s in range(shards)]
        every = [(s, r) for s in range(shards) for r in range(replicas)]
        router = Router(config, handles, users=[], stop=retire_only)
        model: dict[str, np.ndarray] = {}

        def restart(s: int, r: int) -> None:
            handle = handles[s][r]
            handle.obj.close()
            handle.obj = fresh(s, r)
            handle.fail = None

        async def write(op: str, ids: list[str], vectors: np.ndarray | None) -> None:
            for _ in range(4):
                try:
                    await (router.upsert(ids, vectors) if op == "upsert" else router.delete(ids))
                    return
                except Exception:  # every replica of an owner was down: bring them back, and resend
                    for s, r in every:
                        if handles[s][r].fail is not None:
                            restart(s, r)
            raise AssertionError(f"{op} was never acknowledged")

        for _ in range(40):
            roll = rng.random()
            if roll < 0.15:
                s, r = every[rng.integers(len(every))]
                handles[s][r].fail = RuntimeError("down")
            elif roll < 0.3:
                s, r = every[rng.integers(len(every))]
                restart(s, r)
            else:
                ids = list(rng.choice(POOL, size=int(rng.integers(1, 5)), replace=False))
                if rng.random() < 0.7:
                    vectors = rng.standard_normal((len(ids), DIM)).astype(np.float32)
                    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                    await write("upsert", ids, vectors)
                    model.update(zip(ids, vectors))
                else:
                    await write("delete", ids, None)
                    for i in ids:
                        model.pop(i, None)
            for s, r in every:  # whoever would answer a read answers with exactly what was acknowledged
                handle = handles[s][r]
                if handle.fail is None and handle.obj.replication.out_of_sync is None:
                    mine = {i: v for i, v in model.items() if partition_of(i, shards) == s}
                    assert _holds(handle.obj, mine), f"shard {s} replica {r} answers other items"
        for s, r in every:
            if handles[s][r].fail is not None:
                restart(s, r)
        await router.check_replicas()
        await until(lambda: not router._topology.repairing, timeout_s=10, what="the repairs")
        for s in range(shards):
            positions = {handles[s][r].obj.replication.position for r in range(replicas)}
            assert len(positions) == 1, f"shard {s}: replicas at positions {positions}"
            for r in range(replicas):
                assert handles[s][r].obj.replication.out_of_sync is None
                assert _holds(handles[s][r].obj, {i: v for i, v in model.items() if partition_of(i, shards) == s})

    asyncio.run(run())
