"""A Ray of 3 nodes on this machine (head 127.0.0.1, workers 127.0.0.2, .3, later .4) that loses nodes.

First with 2 replicas per shard: the node of shard 0's first replica goes, and reads go on from
the other replica. Then with 1: the node of shard 0 goes, and Ray recreates it from storage.

Run by test_multinode.py in a child process (the test session has its own Ray):
    python -m tests.integration.multinode_run STORAGE_DIR
Prints one JSON line of what it saw; exits non-zero on any failure.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray._private.utils import get_ray_address_file  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from rayrec import IndexConfig, Rayrec, RayrecConfig  # noqa: E402
from tests.integration.waiting import wait_until  # noqa: E402

MB = 1024 * 1024
NODE = {"num_cpus": 1, "object_store_memory": 100 * MB, "memory": 1024 * MB}


def start_cluster() -> Cluster:
    """Head without CPUs (no actor lands there, so any actor's node can be removed) and two workers."""
    address_file = get_ray_address_file(None)
    before = open(address_file).read() if os.path.exists(address_file) else None
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**NODE, "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False,
                        # The GCS checks each node every second, not every 3 (still dead only after 5 failed
                        # checks in a row, each given 10 s): a removed node is known dead in ~5 s, not ~15 s.
                        "_system_config": {"health_check_period_ms": 1000}},
    )
    # Cluster records its address for `ray.init()` of every process on this machine: put back what was there.
    if before is None:
        os.remove(address_file)
    else:
        with open(address_file, "w") as f:
            f.write(before)
    for i in (2, 3):
        cluster.add_node(**NODE, node_ip_address=f"127.0.0.{i}")
    cluster.wait_for_nodes()
    cluster.connect(namespace="multinode")
    return cluster


def _fill(system: Rayrec) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((500, 16)).astype(np.float32)
    ids = [f"i{i}" for i in range(500)]
    system.upsert(ids, vecs)
    system.delete(ids[:50])
    system.set_user("u1", history=ids[100:110], event_id="h1")
    for j in range(20):
        system.feedback("u1", ids[200 + j], "like", event_id=f"e{j}")
    return vecs, ids


def _node_of(cluster: Cluster, node_id: str) -> object:
    return next(n for n in cluster.worker_nodes if n.node_id == node_id)


def replicated(cluster: Cluster, storage: str) -> dict[str, object]:
    """R = 2: the node holding a replica goes; reads go on from the other replica at once."""
    config = RayrecConfig(
        index=IndexConfig(dim=16), num_shards=2, replicas=2, storage=storage, namespace="multinode-r2",
        shard_num_cpus=0.05, router_num_cpus=0.05, user_actor_num_cpus=0.05, replica_hedge_s=0.5,
    )
    system = Rayrec.start(config)
    vecs, ids = _fill(system)
    query = vecs[300:301]
    before = system.search(query, k=20)
    info = ray.get(system.router.info.remote())
    assert info[0]["node_id"] != info[1]["node_id"], "the replicas of shard 0 share a node"
    # The node of a shard-0 replica that does not also hold the router (through which reads go).
    router_node = ray.get(system.router.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
    victim_id = next(i["node_id"] for i in info[:2] if i["node_id"] != router_node)
    cluster.remove_node(_node_of(cluster, victim_id), allow_graceful=False)
    t0 = time.perf_counter()
    worst = 0.0
    for _ in range(10):  # reads right after the loss: whole answers from the surviving replicas
        t = time.perf_counter()
        after = system.search(query, k=20)
        worst = max(worst, time.perf_counter() - t)
        assert not after.partial and list(after.ids[0]) == list(before.ids[0])
    reads_s = time.perf_counter() - t0
    system.shutdown()
    return {"r2_removed_node": victim_id, "r2_ten_reads_s": round(reads_s, 2), "r2_slowest_read_s": round(worst, 2)}


def single(cluster: Cluster, storage: str) -> dict[str, object]:
    """R = 1: the node holding a shard goes; Ray recreates the shard on a survivor, from storage."""
    config = RayrecConfig(
        index=IndexConfig(dim=16), num_shards=2, storage=storage, namespace="multinode-r1",
        shard_num_cpus=0.05, router_num_cpus=0.05, user_actor_num_cpus=0.05,
    )
    system = Rayrec.start(config)
    vecs, ids = _fill(system)
    query = vecs[300:301]
    before = system.search(query, k=20)
    user_before = system.get_user("u1")
    info = ray.get(system.router.info.remote())
    victim_id = info[0]["node_id"]
    cluster.remove_node(_node_of(cluster, victim_id), allow_graceful=False)

    def back() -> bool:
        now = ray.get(system.router.info.remote(), timeout=10)
        return now[0]["node_id"] != victim_id and not system.search(query, k=20).partial

    recovered_s = wait_until(back, 180, "shard 0 coming back on another node")
    info_after = ray.get(system.router.info.remote())
    assert info_after[0]["durable"] and info_after[0]["items"] == info[0]["items"]
    after = system.search(query, k=20)
    assert list(after.ids[0]) == list(before.ids[0])
    np.testing.assert_allclose(after.scores[0], before.scores[0], rtol=1e-6)
    assert system.count() == 450
    assert system.fetch(ids[:50]) == [None] * 50
    user_after = system.get_user("u1")
    assert user_after["version"] == user_before["version"] == 21
    np.testing.assert_array_equal(user_after["vector"], user_before["vector"])
    system.feedback("u1", ids[300], "click", event_id="after")  # writes go on too
    out = {
        "r1_removed_node": victim_id,
        "r1_shard0_node_after": info_after[0]["node_id"],
        "r1_recovered_s": round(recovered_s, 2),
        "r1_items": system.count(),
        "r1_user_version": system.get_user("u1")["version"],
    }
    system.shutdown()
    return out


def main(storage: str) -> dict[str, object]:
    cluster = start_cluster()
    try:
        out = replicated(cluster, os.path.join(storage, "r2"))
        cluster.add_node(**NODE, node_ip_address="127.0.0.4")  # two workers again
        cluster.wait_for_nodes()
        out.update(single(cluster, os.path.join(storage, "r1")))
        return out
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
