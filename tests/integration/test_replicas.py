"""Shard replicas: reads go to one live replica, writes to all; a killed replica is skipped, then replaced."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import ray

from rayrec import Rayrec
from tests.integration.conftest import make_config, unit_vectors

DIM = 8


def _exact(vecs: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    ids = sorted(vecs)
    scores = np.stack([vecs[i] for i in ids]) @ query
    return [ids[r] for r in np.argsort(-scores, kind="stable")[:k]]


def test_reads_skip_a_dead_replica_and_writes_reach_its_replacement(ray_session, tmp_path):
    config = make_config(DIM, num_shards=2, replicas=2, storage=str(tmp_path), replica_hedge_s=0.5)
    rng = np.random.default_rng(0)
    vecs = dict(zip([f"i{i}" for i in range(200)], unit_vectors(rng, 200, DIM)))
    with Rayrec.start(config) as system:
        system.upsert(list(vecs), np.stack(list(vecs.values())))
        system.delete(["i0", "i1"])
        del vecs["i0"], vecs["i1"]
        replicas = ray.get(system.router.get_replicas.remote())
        assert [len(g) for g in replicas] == [2, 2]
        # Every replica holds its shard's items.
        counts = [[ray.get(h.count.remote()) for h in g] for g in replicas]
        assert all(a == b for a, b in counts) and sum(a for a, _ in counts) == 198
        query = unit_vectors(rng, 1, DIM)
        assert list(system.search(query, k=10).ids[0]) == _exact(vecs, query[0], 10)

        victim = replicas[0][0]
        pid = ray.get(victim.__ray_call__.remote(lambda self: os.getpid()))
        os.kill(pid, signal.SIGKILL)
        # Reads go on from the other replica, whole and exact, while Ray restarts the dead one.
        t0 = time.perf_counter()
        for _ in range(20):
            res = system.search(query, k=10)
            assert not res.partial and list(res.ids[0]) == _exact(vecs, query[0], 10)
        assert time.perf_counter() - t0 < 15
        # A write waits for the restarted replica and reaches both.
        new = unit_vectors(rng, 5, DIM)
        system.upsert([f"n{i}" for i in range(5)], new)
        vecs.update(zip([f"n{i}" for i in range(5)], new))
        assert ray.get(victim.__ray_call__.remote(lambda self: os.getpid())) != pid
        counts = [[ray.get(h.count.remote()) for h in g] for g in replicas]
        assert all(a == b for a, b in counts) and sum(a for a, _ in counts) == 203
        info = ray.get(system.router.info.remote())
        assert [(i["shard_id"], i["replica"]) for i in info] == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert list(system.search(query, k=10).ids[0]) == _exact(vecs, query[0], 10)
        # Each replica answers the same, itself included after its restart.
        for group in replicas:
            answers = [ray.get(h.search.remote(query, 10)) for h in group]
            assert list(answers[0][1][0]) == list(answers[1][1][0])


def _fail(method: str):
    """Makes one replica's `method` raise (the replica stays up), as a disk or a bug failing one replica would.

    Ray calls an actor's methods from its class, so this breaks what a call runs inside the actor:
    `upsert` as write_at calls it, or `index.import_state` (a restore's copy) as restore_replica does.
    """

    def inject(self):
        owner, name = (self.index, "import_state") if method == "restore" else (self, method)
        def broken(*args, **kwargs):
            raise RuntimeError(f"injected: {method} fails on this replica")

        setattr(owner, name, broken)

    return inject


def _heal(method: str):
    def heal(self):
        owner, name = (self.index, "import_state") if method == "restore" else (self, method)
        owner.__dict__.pop(name, None)

    return heal


def test_a_replica_that_fails_a_write_its_peer_applied_gets_no_reads_until_it_is_repaired(ray_session, tmp_path):
    config = make_config(DIM, num_shards=1, replicas=2, storage=str(tmp_path), replica_hedge_s=0.5)
    rng = np.random.default_rng(1)
    vecs = dict(zip([f"i{i}" for i in range(100)], unit_vectors(rng, 100, DIM)))
    with Rayrec.start(config) as system:
        system.upsert(list(vecs)[:60], np.stack(list(vecs.values())[:60]))
        healthy, victim = ray.get(system.router.get_replicas.remote())[0]
        ray.get([victim.__ray_call__.remote(_fail("upsert")), victim.__ray_call__.remote(_fail("restore"))])
        # Acknowledged: replica 0 applied it, and replica 1 is out of sync before the answer.
        assert system.upsert(list(vecs)[60:], np.stack(list(vecs.values())[60:])) == 40
        assert (tmp_path / "shard-0-replica-1" / "out_of_sync.json").exists()
        with pytest.raises(ray.exceptions.RayTaskError, match="out of sync"):
            ray.get(victim.count.remote())
        query = unit_vectors(rng, 1, DIM)
        for _ in range(6):  # every read answered whole by the replica in sync
            res = system.search(query, k=10)
            assert not res.partial and list(res.ids[0]) == _exact(vecs, query[0], 10)
        assert system.delete(["i0"]) == 1  # writes go on, around it
        del vecs["i0"]
        # Once it can be repaired, the router's retries copy replica 0 into it.
        ray.get(victim.__ray_call__.remote(_heal("restore")))
        ray.get(victim.__ray_call__.remote(_heal("upsert")))
        deadline = time.monotonic() + 30
        while ray.get(victim.sync_state.remote())["out_of_sync"] is not None:
            assert time.monotonic() < deadline, "the replica was not repaired within 30 s"
            time.sleep(0.2)
        assert ray.get(victim.sync_state.remote())["position"] == ray.get(healthy.sync_state.remote())["position"]
        assert ray.get(victim.count.remote()) == ray.get(healthy.count.remote()) == 99
        assert not (tmp_path / "shard-0-replica-1" / "out_of_sync.json").exists()
        for handle in (healthy, victim):
            assert list(ray.get(handle.search.remote(query, 10))[1][0]) == _exact(vecs, query[0], 10)
