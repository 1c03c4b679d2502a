"""Kill tests: actors die mid-stream (ray.kill with restart, SIGKILL of the worker); nothing acknowledged is lost."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import ray

from rayrec import Rayrec
from rayrec.durability import wal
from rayrec.durability.snapshot import latest_snapshot
from rayrec.durability.storage import Storage
from rayrec.exceptions import RayrecError
from rayrec.users.user_state import UserStore
from tests.integration.conftest import make_config, unit_vectors
from tests.integration.waiting import wait_until

DIM = 8
USERS = [f"u{i}" for i in range(6)]
EVENTS = ("click", "like", "purchase", "skip", "dislike")


def _pid(handle: Any) -> int:
    return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()))


RETRY_FOR_S = 30


def _kill(handle: Any, how: str) -> None:
    if how == "ray.kill":
        ray.kill(handle, no_restart=False)
    else:
        os.kill(_pid(handle), signal.SIGKILL)


class Stream:
    """Concurrent clients: one feedback client per user, one item writer; records what was acknowledged."""

    def __init__(self, system: Rayrec, base: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        self.system = system
        self.base = base
        self.rng = rng
        self.acked_feedback: dict[str, list[tuple[str, str]]] = {u: [] for u in USERS}
        self.items: dict[str, np.ndarray | None] = {}  # acknowledged state of written items (None: deleted)
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.progress = threading.Semaphore(0)

    def _retry(self, call: Callable[[], Any]) -> Any:
        """Retries a call that failed cleanly (an actor restarting) until it is acknowledged."""
        answers: list[Any] = []

        def attempt() -> bool:
            try:
                answers.append(call())
            except (ValueError, KeyError) as exc:  # a wrong answer to a good request: the test fails
                raise AssertionError(f"a good request was refused: {exc!r}") from exc
            return True

        # A client's patience: Ray restarts an actor in ~2-3 s here, longer while the whole suite runs.
        wait_until(
            attempt,
            RETRY_FOR_S,
            "an acknowledged call",
            interval_s=0.05,
            retry_on=(RayrecError, ray.exceptions.RayError),
        )
        return answers[0]

    def feedback_client(self, user: str, n: int) -> None:
        rng = np.random.default_rng(int(user[1:]))
        base_ids = sorted(self.base)
        try:
            for j in range(n):
                item = base_ids[rng.integers(len(base_ids))]
                event = EVENTS[rng.integers(len(EVENTS))]
                self._retry(lambda: self.system.feedback(user, item, event, event_id=f"{user}-{j}"))
                self.acked_feedback[user].append((item, event))
                self.progress.release()
        except BaseException as exc:
            self.errors.append(exc)

    def item_writer(self, n: int) -> None:
        rng = np.random.default_rng(99)
        try:
            for j in range(n):
                item = f"w{j}"
                vec = unit_vectors(rng, 1, DIM)
                self._retry(lambda: self.system.upsert([item], vec, {"category": ["w"]}))
                self.items[item] = vec[0]
                if j % 3 == 2:
                    gone = f"w{j - 2}"
                    self._retry(lambda: self.system.delete([gone]))
                    self.items[gone] = None
                self.progress.release()
        except BaseException as exc:
            self.errors.append(exc)

    def reader(self) -> None:
        """Searches during the fault: each answer either fails cleanly or is consistent."""
        query = unit_vectors(np.random.default_rng(5), 1, DIM)
        while not self.stop.is_set():
            deleted_before = {i for i, v in list(self.items.items()) if v is None}
            try:
                res = self.system.search(query, k=15)
            except (RayrecError, ray.exceptions.RayError) as exc:
                if isinstance(exc, (ValueError, KeyError)):
                    self.errors.append(exc)
                continue
            ids = [i for i in res.ids[0] if i]
            if len(ids) != len(set(ids)) or deleted_before & set(ids):
                self.errors.append(AssertionError(f"inconsistent answer during the fault: {ids}"))


def _reference(system: Rayrec, start: dict[str, np.ndarray], acked: list[tuple[str, str]], user: str) -> UserStore:
    store = UserStore(DIM, system.config.feedback)
    store.set_vector(user, start[user])
    for item, event in acked:
        vec = system.fetch([item])[0]["vector"]  # type: ignore[index]
        store.apply(user, item, event, vec)
    return store


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
@pytest.mark.parametrize("target", ["shard", "users", "router"])
def test_nothing_acknowledged_is_lost_when_an_actor_dies(ray_session, tmp_path, target, how):
    config = make_config(DIM, num_shards=2, num_user_actors=2, storage=str(tmp_path), snapshot_every=40)
    rng = np.random.default_rng(0)
    base = {f"f{i}": v for i, v in enumerate(unit_vectors(rng, 40, DIM))}
    system = Rayrec.start(config)
    try:
        system.upsert(list(base), np.stack(list(base.values())))
        start = {u: unit_vectors(rng, 1, DIM)[0] for u in USERS}
        for u in USERS:
            system.set_user(u, vector=start[u], event_id=f"{u}-start")
        stream = Stream(system, base, rng)
        threads = [threading.Thread(target=stream.feedback_client, args=(u, 30)) for u in USERS]
        threads.append(threading.Thread(target=stream.item_writer, args=(30,)))
        reader = threading.Thread(target=stream.reader)
        for t in [*threads, reader]:
            t.start()
        for _ in range(40):  # the fault comes in the middle of the stream
            assert stream.progress.acquire(timeout=60)
        victim = {"shard": system.shards[0], "users": system.users[0], "router": system.router}[target]
        old_pid = _pid(victim)
        _kill(victim, how)
        for t in threads:
            t.join(timeout=120)
        stream.stop.set()
        reader.join(timeout=30)
        assert not stream.errors, stream.errors[:3]
        assert _pid(victim) != old_pid  # it really died and was restarted

        for u in USERS:
            got = system.get_user(u)
            want = _reference(system, start, stream.acked_feedback[u], u).get(u)
            assert got is not None and want is not None
            assert got["version"] == 1 + len(stream.acked_feedback[u]) == want.version
            np.testing.assert_allclose(got["vector"], want.vector, atol=1e-5)
        written = sorted(stream.items)
        records = system.fetch(written)
        for item, record in zip(written, records):
            want_vec = stream.items[item]
            if want_vec is None:
                assert record is None, f"{item} was deleted but came back"
            else:
                assert record is not None, f"{item} was acknowledged but is lost"
                np.testing.assert_allclose(record["vector"], want_vec, atol=1e-6)
        live = len(base) + sum(v is not None for v in stream.items.values())
        assert system.count() == live
        everything = system.search(unit_vectors(rng, 1, DIM), k=live)
        ids = list(everything.ids[0])
        assert len(ids) == len(set(ids)) == live
        assert not {i for i, v in stream.items.items() if v is None} & set(ids)
    finally:
        system.shutdown()


def test_a_whole_system_comes_back_from_storage(ray_session, tmp_path):
    """Every actor stopped (as in a cluster restart), then started again on the same storage."""
    config = make_config(DIM, num_shards=2, num_user_actors=2, storage=str(tmp_path), snapshot_every=25)
    rng = np.random.default_rng(3)
    vecs = unit_vectors(rng, 60, DIM)
    ids = [f"i{i}" for i in range(60)]
    with Rayrec.start(config) as system:
        system.upsert(ids, vecs, {"category": ["a", "b"] * 30})
        system.delete(ids[:10])
        system.set_histories({f"u{i}": ids[10 + i : 20 + i] for i in range(20)})
        system.snapshot()  # on demand: every actor's state in storage, its log truncated
        for actor in ("shard-0", "shard-1", "users-0", "users-1"):
            snap = latest_snapshot(Storage(str(tmp_path)).child(actor))
            assert snap is not None and wal.segments(snap.storage) == []
        for j in range(30):
            system.feedback("u1", ids[20 + j], "like", event_id=f"e{j}")
        before_user = system.get_user("u1")
        before = system.recommend("u1", k=10)
    with Rayrec.start(config) as again:
        assert again.count() == 50
        user = again.get_user("u1")
        assert user["version"] == before_user["version"] == 31
        np.testing.assert_array_equal(user["vector"], before_user["vector"])
        assert user["history"] == before_user["history"]
        after = again.recommend("u1", k=10)
        assert [i["item_id"] for i in after["items"]] == [i["item_id"] for i in before["items"]]
        # A replayed event id is still known: sending it again changes nothing.
        assert again.feedback("u1", ids[20], "like", event_id="e0")["applied"] is False
        info = ray.get([u.info.remote() for u in again.users])
        assert all(i["durable"] for i in info)


def _files_holding(root: str, needle: bytes) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                if needle in f.read():
                    found.append(os.path.relpath(path, root))
    return found


def test_an_erased_user_is_gone_from_every_file_and_after_a_restart(ray_session, tmp_path):
    """Erasure: once delete_user returns, no file under the storage location holds the user's id, and a
    system started again on it knows nothing of the user; the others are untouched."""
    config = make_config(DIM, num_shards=1, num_user_actors=1, storage=str(tmp_path), snapshot_every=1000)
    rng = np.random.default_rng(5)
    ids = [f"i{i}" for i in range(30)]
    secret = b"erase-me-7f3a9c"
    with Rayrec.start(config) as system:
        system.upsert(ids, unit_vectors(rng, 30, DIM))
        system.set_user(secret.decode(), history=ids[:5])
        system.set_user("keep-me", history=ids[5:10])
        system.snapshot()  # the user in a snapshot ...
        for j in range(4):  # ... and in the log after it
            system.feedback(secret.decode(), ids[10 + j], "like", event_id=f"secret-event-{j}")
            system.feedback("keep-me", ids[10 + j], "skip", event_id=f"kept-event-{j}")
        assert _files_holding(str(tmp_path), secret)  # the scan sees the id where it is stored
        exported = system.export_user(secret.decode())
        assert exported["version"] == 5 and exported["event_ids"][-4:] == [f"secret-event-{j}" for j in range(4)]
        vector = np.asarray(exported["vector"], np.float32).tobytes()
        kept = system.get_user("keep-me")
        assert system.delete_user(secret.decode()) is True
        assert _files_holding(str(tmp_path), secret) == []
        assert _files_holding(str(tmp_path), b"secret-event-") == []
        assert _files_holding(str(tmp_path), vector) == []
        assert system.get_user(secret.decode()) is None and system.delete_user(secret.decode()) is False
    with Rayrec.start(config) as again:
        assert again.get_user(secret.decode()) is None and again.export_user(secret.decode()) is None
        user = again.get_user("keep-me")
        assert user["version"] == kept["version"] == 5 and user["history"] == kept["history"]
        assert again.feedback("keep-me", ids[10], "skip", event_id="kept-event-0")["applied"] is False
    assert _files_holding(str(tmp_path), secret) == []


def test_a_second_system_on_the_same_storage_is_refused_and_the_first_loses_nothing(ray_session, tmp_path):
    """Two systems (two namespaces of one Ray) on one --storage: the second is refused by the writer fence;
    the first answers on, its writes after the refusal included, and comes back whole from the storage."""
    import dataclasses

    config = make_config(DIM, num_shards=1, num_user_actors=1, storage=str(tmp_path))
    rng = np.random.default_rng(4)
    ids = [f"i{i}" for i in range(30)]
    with Rayrec.start(config) as first:
        first.upsert(ids[:20], unit_vectors(rng, 20, DIM))
        first.set_histories({"u1": ids[:5]})
        # (its actors wait 1 s, not the default 15 s, for the lock the first system holds: refused all the same)
        second = dataclasses.replace(config, namespace=config.namespace + "-second", fence_wait_s=1.0)
        with pytest.raises(Exception, match="another process writes to") as refused:
            Rayrec.start(second).shutdown()
        assert "give this system its own storage" in str(refused.value)

        def named() -> list[dict[str, str]]:
            return [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == second.namespace]

        wait_until(lambda: named() == [], 30, "the refused system's actors to stop")  # none keeps its name or storage
        assert first.count() == 20  # untouched: its state, and its storage
        first.upsert(ids[20:], unit_vectors(rng, 10, DIM))
        assert first.feedback("u1", ids[25], "like", event_id="after")["applied"] is True
        before = first.get_user("u1")
    with Rayrec.start(config) as again:
        assert again.count() == 30
        user = again.get_user("u1")
        assert user["version"] == before["version"] and user["history"] == before["history"]
        np.testing.assert_array_equal(user["vector"], before["vector"])
