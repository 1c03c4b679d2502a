"""Full restart: SIGKILL a whole `rayrec serve --storage` (its Ray and every worker) mid-stream, start it again.

Also the API key on the write routes. Runs `rayrec serve` in child processes with
Ray clusters of their own (not the test session's Ray).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest
import requests

from rayrec.config import FeedbackRule
from rayrec.users.user_state import UserStore
from tests.integration.waiting import healthy, wait_until

DIM = 384
KEY = "s3cret-key"
USERS = [f"u{i}" for i in range(4)]
EVENTS = ("click", "like", "purchase", "skip", "dislike")
AUTH = {"Authorization": f"Bearer {KEY}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Server:
    """`rayrec serve` in its own session, so every process of its Ray can be killed at once."""

    def __init__(self, storage: str, port: int, log_path: str) -> None:
        env = dict(os.environ, RAYREC_API_KEY=KEY, HF_HUB_OFFLINE="1")
        env.pop("RAY_ADDRESS", None)
        # --model text: raw 384-d vectors, whatever models the machine's models root holds
        cmd = [sys.executable, "-m", "rayrec.cli", "serve", "--catalog", "none", "--storage", storage,
               "--model", "text", "--port", str(port), "--num-cpus", "2", "--index", "Flat",
               "--namespace", "restart-test"]
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert self.proc.poll() is None, f"rayrec serve exited: see {log_path}"
            return healthy(self.url)

        try:
            wait_until(up, 240, f"rayrec serve answering (see {log_path})", interval_s=1)
        except AssertionError:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL to every process of the server's session: its Ray, raylet, GCS and workers."""
        sid = self.proc.pid

        def none_left() -> bool:  # kills what is still there; true once nothing was
            found = False
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                try:
                    with open(f"/proc/{name}/stat") as stat:
                        zombie = stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # dead, not yet reaped
                    if not zombie and os.getsid(int(name)) == sid:
                        os.kill(int(name), signal.SIGKILL)
                        found = True
                except (ProcessLookupError, PermissionError, FileNotFoundError):
                    pass
            return not found

        wait_until(none_left, 10, "every process of the server's session gone", interval_s=0.2)
        self.proc.wait(timeout=30)
        self.log.close()


class Clients:
    """One feedback client per user and an item writer; each stops at its first failed call, keeping it pending."""

    def __init__(self, url: str, base: dict[str, np.ndarray]) -> None:
        self.url = url
        self.base = base
        self.acked: dict[str, list[tuple[str, str]]] = {u: [] for u in USERS}
        self.items: dict[str, np.ndarray | None] = {}
        self.pending: list[tuple[str, Any]] = []
        self.acks = threading.Semaphore(0)
        self.lock = threading.Lock()

    def feedback(self, user: str) -> None:
        rng = np.random.default_rng(int(user[1:]))
        ids = sorted(self.base)
        for j in range(10_000):
            body = {"user_id": user, "item_id": ids[rng.integers(len(ids))],
                    "event": EVENTS[rng.integers(len(EVENTS))], "event_id": f"{user}-{j}"}
            if not self._send("POST", "/feedback", body):
                return
            self.acked[user].append((body["item_id"], body["event"]))

    def writer(self) -> None:
        rng = np.random.default_rng(7)
        for j in range(10_000):
            vec = _unit(rng, 1)[0]
            body = {"items": [{"item_id": f"w{j}", "embedding": vec.tolist(), "category": "w"}]}
            if not self._send("PUT", "/items", body):
                return
            self.items[f"w{j}"] = vec
            if j % 3 == 2:
                if not self._send("DELETE", f"/items/w{j - 2}", None):
                    return
                self.items[f"w{j - 2}"] = None

    def _send(self, method: str, path: str, body: Any) -> bool:
        try:
            resp = requests.request(method, self.url + path, json=body, headers=AUTH, timeout=30)
        except requests.RequestException:
            resp = None
        if resp is None or resp.status_code >= 500:  # no acknowledgement: resent after the restart
            with self.lock:
                self.pending.append((method, path, body))  # type: ignore[arg-type]
            return False
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        self.acks.release()
        return True

    def resend(self) -> None:
        """What a client does after an outage: sends its unacknowledged call again (same event id)."""
        for method, path, body in self.pending:  # type: ignore[misc]
            resp = requests.request(method, self.url + path, json=body, headers=AUTH, timeout=60)
            if method == "DELETE":
                assert resp.status_code in (200, 404), resp.text
                self.items[path.rsplit("/", 1)[1]] = None
                continue
            assert resp.status_code == 200, resp.text
            if path == "/feedback":
                self.acked[body["user_id"]].append((body["item_id"], body["event"]))
            else:
                item = body["items"][0]
                self.items[item["item_id"]] = np.asarray(item["embedding"], dtype=np.float32)


@pytest.mark.timeout(900)
def test_sigkill_of_the_whole_cluster_loses_no_acknowledged_change(tmp_path):
    storage = str(tmp_path / "state")
    port = _free_port()
    rng = np.random.default_rng(0)
    base = {f"f{i}": v for i, v in enumerate(_unit(rng, 30))}
    starts = {u: _unit(rng, 1)[0] for u in USERS}
    server = Server(storage, port, str(tmp_path / "serve.log"))
    try:
        url = server.url
        # It says where its demo page is, and serves it there.
        wait_until(lambda: f"live demo page at {url}/ " in (tmp_path / "serve.log").read_text(), 60,
                   "the page's URL printed")
        assert '<script src="/static/demo.js"' in requests.get(url + "/", timeout=30).text
        items = [{"item_id": i, "embedding": v.tolist()} for i, v in base.items()]
        # The API key guards the write routes; reads stay open.
        assert requests.put(url + "/items", json={"items": items}, timeout=60).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert requests.put(url + "/items", json={"items": items}, headers=wrong, timeout=60).status_code == 401
        assert requests.post(url + "/feedback", json={"user_id": "u0", "item_id": "f0", "event": "like"},
                             timeout=60).status_code == 401
        assert requests.delete(url + "/items/f0", timeout=60).status_code == 401
        assert requests.put(url + "/users/u0", json={"vector": starts["u0"].tolist()}, timeout=60).status_code == 401
        # The key is checked before the body is read: a body without the key is refused as such, not parsed.
        for body in ("{not json", '{"user_id": "\\ud800", "item_id": NaN}'):
            refused = requests.post(url + "/feedback", data=body, headers={"content-type": "application/json"},
                                    timeout=60)
            assert refused.status_code == 401, refused.text
        assert requests.put(url + "/items", json={"items": items}, headers=AUTH, timeout=60).json() == {"upserted": 30}
        assert requests.get(url + "/items/f0", timeout=60).status_code == 200
        assert requests.post(url + "/recommend", json={"user_id": "x", "k": 3}, timeout=60).status_code == 200
        for u in USERS:
            resp = requests.put(url + f"/users/{u}", json={"vector": starts[u].tolist()}, headers=AUTH, timeout=60)
            assert resp.json()["user_version"] == 1

        clients = Clients(url, base)
        threads = [threading.Thread(target=clients.feedback, args=(u,)) for u in USERS]
        threads.append(threading.Thread(target=clients.writer))
        for t in threads:
            t.start()
        for _ in range(60):  # kill in the middle of the stream
            assert clients.acks.acquire(timeout=120)
        server.kill()
        for t in threads:
            t.join(timeout=120)
    except BaseException:
        server.kill()
        raise

    server = Server(storage, port, str(tmp_path / "serve2.log"))
    try:
        clients.url = server.url
        clients.resend()
        rule = FeedbackRule()
        for u in USERS:
            ref = UserStore(DIM, rule)
            ref.set_vector(u, starts[u])
            for item, event in clients.acked[u]:
                ref.apply(u, item, event, base[item])
            got = requests.get(server.url + f"/users/{u}", timeout=60).json()
            assert got["user_version"] == 1 + len(clients.acked[u]) == ref.get(u).version  # type: ignore[union-attr]
            assert [h["item_id"] for h in got["history"]] == [i for i, _ in clients.acked[u]]
            # The recovered vector ranks the catalog like the reference vector (Flat index: exact).
            live = {i: v for i, v in {**base, **clients.items}.items() if v is not None}
            ids = list(live)
            scores = np.stack([live[i] for i in ids]) @ ref.get(u).vector  # type: ignore[union-attr]
            want = [ids[r] for r in np.argsort(-scores)[:5]]
            recs = requests.post(server.url + "/recommend", json={"user_id": u, "k": 5, "exclude_seen": False},
                                 timeout=60).json()
            assert [r["item_id"] for r in recs["items"]] == want
        for item, vec in clients.items.items():
            resp = requests.get(server.url + f"/items/{item}", timeout=60)
            if vec is None:
                assert resp.status_code == 404, f"{item} was deleted but came back"
            else:
                assert resp.status_code == 200, f"{item} was acknowledged but is lost"
                np.testing.assert_allclose(resp.json()["embedding"], vec, atol=1e-6)
        health = requests.get(server.url + "/healthz", timeout=60).json()
        assert health["items"] == len(base) + sum(v is not None for v in clients.items.values())
        assert health["users"] == len(USERS)
    finally:
        server.kill()
