"""Where rayrec's actors landed on a running cluster, from Ray's state API: one JSON line.

    RAY_AUTH_MODE=token RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 python -m tests.integration.cluster_check GCS_ADDRESS DASHBOARD_URL
"""

from __future__ import annotations

import json
import sys

import ray
from ray.util.state import list_actors


def main(address: str, dashboard: str) -> dict[str, object]:
    ray.init(address=address, log_to_driver=False)
    try:
        nodes = {n["NodeID"]: {"ip": n["NodeManagerAddress"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]}
        actors = [a for a in list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], limit=1000)]
        placed = [
            {"class": a.class_name, "name": a.name, "node": a.node_id, "ip": nodes.get(a.node_id, {}).get("ip")}
            for a in actors
        ]
        return {"nodes": nodes, "actors": placed}
    finally:
        ray.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])), flush=True)
