r"""Where rayrec's actors landed on a running cluster, and the calls each has run, from Ray's state API:
one JSON line.

    RAY_AUTH_MODE=token RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 \
        python -m tests.integration.cluster_check GCS_ADDRESS DASHBOARD_URL [--each-line]

With --each-line it connects once and answers one JSON line for every line read from stdin, until stdin
closes: a test that asks again and again pays Python's start, Ray's import and the connection once.
"""

from __future__ import annotations

import json
import sys

import ray
from ray.util.state import list_actors, list_tasks

RAYREC_ACTORS = ("Router", "UserVectors", "Shard")


def check(dashboard: str) -> dict[str, object]:
    """The cluster's live nodes, its live actors and where each is, and the calls of each rayrec actor (needs a
    connected driver)."""
    nodes = {
        n["NodeID"]: {"ip": n["NodeManagerAddress"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]
    }
    actors = [a for a in list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], limit=1000)]
    placed = [
        {"class": a.class_name, "name": a.name, "node": a.node_id, "ip": nodes.get(a.node_id, {}).get("ip"),
         "id": a.actor_id}
        for a in actors
    ]
    # Per rayrec actor, the calls it has run, by method (Ray's task events: every actor call is one task).
    calls: dict[str, dict[str, int]] = {}
    for actor in actors:
        if actor.class_name not in RAYREC_ACTORS:
            continue
        mine = calls.setdefault(actor.actor_id, {})
        for task in list_tasks(address=dashboard, filters=[("actor_id", "=", actor.actor_id)], limit=10_000,
                               raise_on_missing_output=False):
            method = task.func_or_class_name.rsplit(".", 1)[-1]
            mine[method] = mine.get(method, 0) + 1
    return {"nodes": nodes, "actors": placed, "calls": calls}


def main(address: str, dashboard: str) -> dict[str, object]:
    ray.init(address=address, log_to_driver=False)
    try:
        return check(dashboard)
    finally:
        ray.shutdown()


def each_line(address: str, dashboard: str) -> None:
    ray.init(address=address, log_to_driver=False)
    try:
        for _ in sys.stdin:
            print(json.dumps(check(dashboard)), flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    if sys.argv[3:] == ["--each-line"]:
        each_line(sys.argv[1], sys.argv[2])
    else:
        print(json.dumps(main(sys.argv[1], sys.argv[2])), flush=True)
