"""A 3-node Ray on this machine (head 127.0.0.1, workers 127.0.0.2 and .3): remove the node holding a shard.

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

MB = 1024 * 1024
NODE = {"num_cpus": 1, "object_store_memory": 100 * MB, "memory": 1024 * MB}


def start_cluster() -> Cluster:
    """Head without CPUs (no actor lands there, so any actor's node can be removed) and two workers."""
    address_file = get_ray_address_file(None)
    before = open(address_file).read() if os.path.exists(address_file) else None
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**NODE, "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False},
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


def main(storage: str) -> dict[str, object]:
    cluster = start_cluster()
    try:
        config = RayrecConfig(
            index=IndexConfig(dim=16), num_shards=2, storage=storage, namespace="multinode",
            shard_num_cpus=0.05, router_num_cpus=0.05, user_actor_num_cpus=0.05,
        )
        system = Rayrec.start(config)
        rng = np.random.default_rng(0)
        vecs = rng.standard_normal((500, 16)).astype(np.float32)
        ids = [f"i{i}" for i in range(500)]
        system.upsert(ids, vecs)
        system.delete(ids[:50])
        system.set_user("u1", history=ids[100:110], event_id="h1")
        for j in range(20):
            system.feedback("u1", ids[200 + j], "like", event_id=f"e{j}")
        query = vecs[300:301]
        before = system.search(query, k=20)
        user_before = system.get_user("u1")

        info = ray.get(system.router.info.remote())
        victim_id = info[0]["node_id"]
        victim = next(n for n in cluster.worker_nodes if n.node_id == victim_id)
        cluster.remove_node(victim, allow_graceful=False)
        t0 = time.perf_counter()
        deadline = time.monotonic() + 180
        while True:  # until Ray has recreated shard 0 on the surviving node and it answers
            try:
                info_after = ray.get(system.router.info.remote(), timeout=10)
                if info_after[0]["node_id"] != victim_id:
                    after = system.search(query, k=20)
                    if not after.partial:
                        break
            except Exception:  # the router itself may be coming back too
                pass
            assert time.monotonic() < deadline, "shard 0 did not come back on another node within 180 s"
            time.sleep(0.5)
        recovered_s = time.perf_counter() - t0
        assert info_after[0]["durable"] and info_after[0]["items"] == info[0]["items"]
        assert list(after.ids[0]) == list(before.ids[0])
        np.testing.assert_allclose(after.scores[0], before.scores[0], rtol=1e-6)
        assert system.count() == 450
        assert system.fetch(ids[:50]) == [None] * 50
        user_after = system.get_user("u1")
        assert user_after["version"] == user_before["version"] == 21
        np.testing.assert_array_equal(user_after["vector"], user_before["vector"])
        system.feedback("u1", ids[300], "click", event_id="after")  # writes go on too
        return {
            "removed_node": victim_id,
            "shard0_node_after": info_after[0]["node_id"],
            "recovered_s": round(recovered_s, 2),
            "items": system.count(),
            "user_version": system.get_user("u1")["version"],
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
