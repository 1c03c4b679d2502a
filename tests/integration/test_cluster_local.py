"""The Serve config deployed on a real 3-node Ray on this machine (cluster/local_cluster.sh):
shards and their replicas on distinct nodes that offer rayrec_shard, the encoder on the node that
offers rayrec_encoder (Ray's state API says where), recommend / feedback over HTTP, and a re-shard
from 2 to 3 shards by deploying the config again while recommendations stream."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
import requests
import yaml

from tests.integration.waiting import healthy, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cluster" / "local_cluster.sh"
# How long the per-actor call counts must stay the same before they count as complete (Ray's task events
# arrive about a second after the calls)
SETTLED_S = 3.0


def _free_ports(n: int) -> list[int]:
    """n distinct ports nobody listens on now (held together while picked, so never one twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.mark.timeout(900)
def test_serve_config_on_a_three_node_cluster(tmp_path):
    gcs, dashboard, http = _free_ports(3)
    state = tempfile.mkdtemp(prefix="rrc-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = dict(os.environ, RAYREC_CLUSTER_DIR=state, RAYREC_CLUSTER_PORT=str(gcs),
               RAYREC_DASHBOARD_PORT=str(dashboard), RAY_AUTH_MODE="token", HF_HUB_OFFLINE="1",
               RAYREC_CLUSTER_STOP_WAIT_S="0")  # nothing to drain at the end: no 10 s for a gentle stop
    env.pop("RAY_ADDRESS", None)
    # the script's `ray start` is this interpreter's (as `serve` below), the virtual environment active or not
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    client_env = dict(env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    config = yaml.safe_load((ROOT / "cluster" / "serve_config.multinode.yaml").read_text())
    config["http_options"]["port"] = http  # the file's port may be taken on this machine
    config["applications"][0]["args"]["catalog"] = _small_catalog(tmp_path)
    config_path = tmp_path / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    start = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
    stack = contextlib.ExitStack()
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        # One checker process for every look at the cluster (each look: one line to it, one JSON line back),
        # started now so that its start overlaps the app's.
        cluster_state = stack.enter_context(
            _Checker(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", client_env, tmp_path / "check.log")
        )
        deploy = subprocess.run(
            [str(Path(sys.executable).parent / "serve"), "run", "--address", f"127.0.0.1:{gcs}", "--non-blocking",
             str(config_path)],
            env=client_env, capture_output=True, text=True, timeout=300, cwd=ROOT,
        )
        assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-4000:]
        url = f"http://127.0.0.1:{http}"
        wait_until(lambda: healthy(url), 300, "the app coming up", interval_s=0.5)
        health = requests.get(url + "/healthz", timeout=10)
        assert health.json()["items"] == 200

        seen = cluster_state()
        nodes = seen["nodes"]
        shard_nodes = {n for n, v in nodes.items() if v["resources"].get("rayrec_shard")}
        encoder_nodes = {n for n, v in nodes.items() if v["resources"].get("rayrec_encoder")}
        assert len(nodes) == 3 and len(shard_nodes) == 2 and len(encoder_nodes) == 1
        replicas: dict[str, set[str]] = defaultdict(set)
        for actor in seen["actors"]:
            if actor["class"] == "Shard":
                assert actor["node"] in shard_nodes, actor
                replicas[actor["name"].split("-replica-")[0]].add(actor["node"])
            if "Encoder" in actor["class"]:
                assert actor["node"] in encoder_nodes, actor
        # Two shards, each with its two replicas on the two distinct shard nodes.
        assert {s: len(n) for s, n in replicas.items()} == {"shard-0": 2, "shard-1": 2}
        assert any("Encoder" in a["class"] for a in seen["actors"])

        # End to end over HTTP: a recommendation, feedback, and the next recommendation reflecting it.
        first = requests.post(url + "/recommend", json={"user_id": "1", "k": 5}, timeout=60).json()
        assert len(first["items"]) == 5 and not first["partial"]
        liked = first["items"][0]["item_id"]
        fb = requests.post(url + "/feedback", json={"user_id": "1", "item_id": liked, "event": "like"}, timeout=60)
        assert fb.status_code == 200 and fb.json()["user_version"] == first["user_version"] + 1
        after = requests.post(url + "/recommend", json={"user_id": "1", "k": 5}, timeout=60).json()
        assert after["user_version"] == first["user_version"] + 1
        assert liked not in [i["item_id"] for i in after["items"]]  # seen items are excluded

        # No actor that every request passes through: Ray's per-actor call counts over a stream of
        # recommendations for 20 users show them spread over the two user actors and over both replicas
        # of each shard, and none reaching the router.
        users = [f"stream-{n}" for n in range(20)]
        for user in users:  # each user's first calls (the user actor learns the shards and the space)
            requests.post(url + "/feedback", json={"user_id": user, "item_id": liked, "event": "click"},
                          timeout=60).raise_for_status()
            requests.post(url + "/recommend", json={"user_id": user, "k": 5}, timeout=60).raise_for_status()
        # every recommendation so far is counted first: user 1's two and these 20
        before = _calls_by_actor(
            cluster_state, lambda c: _sum_calls(c, "UserVectors", "recommend_many") >= 22
            and all(_sum_calls(c, "Shard", "search_packed", f"shard-{s}") >= 22 for s in (0, 1)),
        )
        for user in users * 2:
            answer = requests.post(url + "/recommend", json={"user_id": user, "k": 5}, timeout=60)
            assert answer.status_code == 200 and len(answer.json()["items"]) == 5
        streamed = _calls_by_actor(
            cluster_state, lambda c: _sum_calls(c, "UserVectors", "recommend_many") >= 40
            and all(_sum_calls(c, "Shard", "search_packed", f"shard-{s}") >= 40 for s in (0, 1)), since=before,
        )
        by_class: dict[str, list[tuple[str, dict[str, int]]]] = defaultdict(list)
        for name, (cls, methods) in streamed.items():
            by_class[cls].append((name, methods))
        assert sum(sum(m.values()) for _, m in by_class["Router"]) == 0, by_class["Router"]
        per_user_actor = sorted(m.get("recommend_many", 0) for _, m in by_class["UserVectors"])
        assert len(per_user_actor) == 2 and sum(per_user_actor) == 40 and per_user_actor[0] > 0, per_user_actor
        per_shard: dict[str, list[int]] = defaultdict(list)
        for name, methods in by_class["Shard"]:
            per_shard[name.split("-replica-")[0]].append(methods.get("search_packed", 0))
        assert sorted(per_shard) == ["shard-0", "shard-1"], per_shard
        for shard, replica_calls in per_shard.items():  # one search per recommendation, over both replicas
            assert len(replica_calls) == 2 and sum(replica_calls) >= 40 and min(replica_calls) > 0, per_shard

        # Re-sharding the running deployment: the same config with 3 shards, deployed again,
        # while a stream of recommendations runs over HTTP.
        config["applications"][0]["args"]["shards"] = 3
        config_path.write_text(yaml.safe_dump(config))
        stream = _RecommendStream(url, user="1", want=after["items"])
        with stream:
            redeploy = subprocess.run(
                [str(Path(sys.executable).parent / "serve"), "run", "--address", f"127.0.0.1:{gcs}", "--non-blocking",
                 str(config_path)],
                env=client_env, capture_output=True, text=True, timeout=300, cwd=ROOT,
            )
            assert redeploy.returncode == 0, redeploy.stdout[-2000:] + redeploy.stderr[-4000:]
            wait_until(lambda: requests.get(url + "/healthz", timeout=10).json()["shards"] == 3, 300,
                       "the re-shard to 3 shards", interval_s=0.5)
        assert stream.answered >= 5 and not stream.wrong, (stream.answered, stream.wrong[:3])
        assert requests.get(url + "/healthz", timeout=10).json()["items"] == 200
        replicas = defaultdict(set)
        for actor in cluster_state()["actors"]:
            if actor["class"] == "Shard":
                assert actor["node"] in shard_nodes, actor
                replicas[actor["name"].split("-replica-")[0]].add(actor["node"])
        # Only the new generation is alive: 3 shards, each with its replicas on the two shard nodes.
        assert sorted(s.split("-shard-")[1] for s in replicas) == ["0", "1", "2"], replicas
        assert all(s.startswith("g1-") and len(n) == 2 for s, n in replicas.items()), replicas
        again = requests.post(url + "/recommend", json={"user_id": "1", "k": 5}, timeout=60).json()
        assert [i["item_id"] for i in again["items"]] == [i["item_id"] for i in after["items"]]
        fb = requests.post(url + "/feedback", json={"user_id": "1", "item_id": again["items"][0]["item_id"],
                                                   "event": "like"}, timeout=60)
        assert fb.status_code == 200 and fb.json()["user_version"] == after["user_version"] + 1
    finally:
        stack.close()
        subprocess.run([str(SCRIPT), "stop"], env=env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


class _Checker:
    """`python -m tests.integration.cluster_check ... --each-line`, kept running: calling it asks for the
    cluster's state (nodes, actors and where they are, each rayrec actor's calls) now."""

    def __init__(self, address: str, dashboard: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.cluster_check", address, dashboard, "--each-line"],
                env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
            )

    def __call__(self, timeout_s: float = 120) -> dict:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        assert line, f"cluster_check gave no answer within {timeout_s:g} s: {self.log.read_text()[-3000:]}"
        return json.loads(line)

    def __enter__(self) -> _Checker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()  # it disconnects and ends
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _RecommendStream:
    """Asks for one user's top 5 over HTTP from a thread; every 200 answer must equal want.

    Answers other than 200 are counted apart: while Serve replaces the ingress
    replica, its proxy may briefly have no replica to send to (that is Serve's
    rolling update, not the re-shard, which the driver-level tests show drops nothing).
    """

    def __init__(self, url: str, user: str, want: list[dict[str, object]]) -> None:
        self.url, self.user = url, user
        self.want = [i["item_id"] for i in want]
        self.answered = 0
        self.unavailable = 0
        self.wrong: list[object] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = requests.post(self.url + "/recommend", json={"user_id": self.user, "k": 5}, timeout=60)
            except requests.RequestException:
                self.unavailable += 1
                continue
            if r.status_code != 200:
                self.unavailable += 1
                continue
            body = r.json()
            self.answered += 1
            if body["partial"] or [i["item_id"] for i in body["items"]] != self.want:
                self.wrong.append(body)
            self._stop.wait(0.05)  # paced: a stream, not a flood

    def __enter__(self) -> _RecommendStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)


def _calls_by_actor(
    state, until, since: dict | None = None, timeout_s: float = 90
) -> dict[str, tuple[str, dict[str, int]]]:
    """Per rayrec actor (by name): (class, calls per method), less those in `since`.

    state: asks cluster_check again, until until(answer) holds and the answer has not changed for SETTLED_S
    (Ray reports task events a little after the calls, each worker about once a second: a call not yet
    reported would be counted in the next window, or not at all); fails after timeout_s.
    """
    answer: dict[str, tuple[str, dict[str, int]]] = {}
    unchanged_since = [0.0, {}]  # when the current answer was first seen, and that answer

    def counted() -> bool:
        seen = state()
        names = {a["id"]: (a["name"] or a["id"], a["class"]) for a in seen["actors"]}
        answer.clear()
        for actor, methods in seen["calls"].items():
            if actor in names:
                name, cls = names[actor]
                earlier = (since or {}).get(name, ("", {}))[1]
                answer[name] = (cls, {m: n - earlier.get(m, 0) for m, n in methods.items()})
        now = time.monotonic()
        if answer != unchanged_since[1]:
            unchanged_since[:] = [now, dict(answer)]
        return until(answer) and now - unchanged_since[0] >= SETTLED_S

    wait_until(counted, timeout_s, "Ray's task events counting every call", interval_s=0.5, retry_on=())
    return dict(answer)


def _sum_calls(calls: dict[str, tuple[str, dict[str, int]]], cls: str, method: str, prefix: str = "") -> int:
    return sum(m.get(method, 0) for name, (c, m) in calls.items() if c == cls and name.startswith(prefix))


def _small_catalog(tmp_path: Path) -> str:
    """The first 200 MovieLens movies as Parquet (fewer to encode on the CPU than all 1,682)."""
    import pyarrow.parquet as pq

    from rayrec.catalogs import movielens

    path = tmp_path / "movies.parquet"
    pq.write_table(movielens.load().items.slice(0, 200), path)
    return str(path)
