"""Re-sharding a running system: S -> S' shards under a stream of reads and writes, exact throughout."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from typing import Any

import numpy as np
import pytest
import ray

from rayrec import Rayrec
from rayrec.exceptions import InvalidInputError, LayoutChangedError, ShardUnavailableError
from rayrec.system.deploy import build_actors, create_shards
from rayrec.system.layout import Generation
from tests.integration.conftest import clustered, make_config
from tests.integration.waiting import wait_until

DIM = 16
CATEGORIES = ["drama", "comedy", "horror"]


def _catalog(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    return [f"i{i}" for i in range(n)], clustered(rng, n, DIM), [CATEGORIES[i % 3] for i in range(n)]


def _exact(ids: list[str], vecs: np.ndarray, cats: list[str], query: np.ndarray, k: int, **kw: Any) -> list[str]:
    """Brute-force top-k ids, honouring an exclude list and a category filter."""
    exclude = set(kw.get("exclude") or ())
    wanted = kw.get("categories")
    keep = [r for r, (i, c) in enumerate(zip(ids, cats)) if i not in exclude and (wanted is None or c in wanted)]
    scores = vecs[keep] @ query
    return [ids[keep[r]] for r in np.argsort(-scores, kind="stable")[:k]]


class ReadStream:
    """Reads from a thread until stopped, each checked against brute force; remembers when each ran."""

    def __init__(self, system: Rayrec, ids: list[str], vecs: np.ndarray, cats: list[str], seed: int) -> None:
        self.system, self.ids, self.vecs, self.cats = system, ids, vecs, cats
        rng = np.random.default_rng(seed)
        self.queries = clustered(rng, 8, DIM)
        self.probe = [ids[r] for r in rng.choice(len(ids), 20, replace=False)]
        self.spans: list[tuple[float, float]] = []
        self.wrong: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, step: int) -> None:
        q = self.queries[step % len(self.queries)]
        kind = step % 4
        if kind == 0:
            got = list(self.system.search(q, k=10).ids[0])
            want = _exact(self.ids, self.vecs, self.cats, q, 10)
        elif kind == 1:
            exclude = want_ex = _exact(self.ids, self.vecs, self.cats, q, 3)
            got = list(self.system.search(q, k=5, exclude=[exclude]).ids[0])
            want = _exact(self.ids, self.vecs, self.cats, q, 5, exclude=want_ex)
        elif kind == 2:
            got = list(self.system.search(q, k=7, categories=[["horror"]]).ids[0])
            want = _exact(self.ids, self.vecs, self.cats, q, 7, categories={"horror"})
        else:
            records = self.system.fetch(self.probe)
            got = [r["item_id"] if r is not None else None for r in records] + [self.system.count()]
            want = list(self.probe) + [len(self.ids)]
        if got != want:
            self.wrong.append(f"step {step} (kind {kind}): got {got}, want {want}")

    def _run(self) -> None:
        step = 0
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self._one(step)
            except Exception as exc:  # a failed read is as wrong as a wrong one
                self.wrong.append(f"step {step}: {type(exc).__name__}: {exc}")
            self.spans.append((t0, time.monotonic()))
            step += 1

    def __enter__(self) -> ReadStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def during(self, start: float, end: float) -> int:
        """Reads that ran (at least partly) inside [start, end]."""
        return sum(1 for a, b in self.spans if a < end and b > start)


def test_reshard_under_a_read_stream_is_exact_and_loses_nothing(ray_session):
    ids, vecs, cats = _catalog(4000)
    config = make_config(DIM, num_shards=2, index_kwargs={"factory": "Flat"})
    with Rayrec.start(config) as system:
        system.upsert(ids, vecs, {"category": cats})
        with ReadStream(system, ids, vecs, cats, seed=1) as stream:
            for target in (3, 1, 4):
                done = len(stream.spans)  # some reads on the current shards first
                wait_until(lambda: len(stream.spans) >= done + 5, 60, "reads before the re-shard", interval_s=0.05)
                t0 = time.monotonic()
                out = system.reshard(target)
                t1 = time.monotonic()
                assert out["changed"] and out["to_shards"] == target and out["items"] == len(ids)
                assert stream.during(t0, t1) >= 3, "the stream must overlap the re-shard"
            done = len(stream.spans)
            wait_until(lambda: len(stream.spans) >= done + 5, 60, "reads after the last re-shard", interval_s=0.05)
        assert not stream.wrong, stream.wrong[:5]
        assert len(stream.spans) > 30
        # The layout is the new one: every shard holds exactly the ids that hash to it.
        info = ray.get(system.router.info.remote())
        assert [i["shard_id"] for i in info] == [0, 1, 2, 3] and {i["generation"] for i in info} == {3}
        assert sum(i["items"] for i in info) == len(ids)
        assert system.config.num_shards == 4 and system.count() == len(ids)
        records = system.fetch(ids)
        assert all(r is not None and r["category"] == c for r, c in zip(records, cats))
        np.testing.assert_allclose(np.stack([r["vector"] for r in records]), vecs, atol=1e-6)
        assert system.reshard(4) == {"to_shards": 4, "changed": False}


def test_writes_and_feedback_during_a_reshard_wait_and_land(ray_session):
    ids, vecs, cats = _catalog(3000, seed=2)
    config = make_config(DIM, num_shards=3, index_kwargs={"factory": "Flat"})
    with Rayrec.start(config) as system:
        system.upsert(ids, vecs, {"category": cats})
        system.set_histories({f"u{u}": [ids[u], ids[u + 1]] for u in range(20)})
        acked_upserts: list[str] = []
        acked_deletes: list[str] = []
        acked_feedback: dict[str, int] = {}
        failures: list[str] = []
        stop = threading.Event()
        rng = np.random.default_rng(3)

        def writer() -> None:
            step = 0
            while not stop.is_set():
                try:
                    if step % 3 == 0:
                        new = f"new{step}"
                        system.upsert([new], clustered(rng, 1, DIM), {"category": ["comedy"]})
                        acked_upserts.append(new)
                    elif step % 3 == 1:
                        system.delete([ids[step]])
                        acked_deletes.append(ids[step])
                    else:
                        user = f"u{step % 20}"
                        out = system.feedback(user, ids[100 + step], "like")
                        acked_feedback[user] = out["version"]
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                step += 1

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()

        def progress(more: int) -> None:  # the writer acknowledges `more` further calls
            done = len(acked_upserts) + len(acked_deletes) + len(acked_feedback)
            wait_until(lambda: len(acked_upserts) + len(acked_deletes) + len(acked_feedback) >= done + more, 60,
                       "the writer's progress", interval_s=0.05)

        progress(10)
        system.reshard(2)
        progress(10)
        system.reshard(5)
        progress(10)
        stop.set()
        thread.join(60)
        assert not failures, failures[:5]
        assert len(acked_upserts) > 5 and len(acked_deletes) > 5 and len(acked_feedback) > 5
        live = (set(ids) - set(acked_deletes)) | set(acked_upserts)
        assert system.count() == len(live)
        assert all(r is not None for r in system.fetch(acked_upserts))
        assert all(r is None for r in system.fetch(acked_deletes))
        for user, version in acked_feedback.items():
            assert system.get_user(user)["version"] >= version
        # Feedback after the re-shard reads item vectors from the new shards.
        before = system.get_user("u0")["version"]
        assert system.feedback("u0", ids[2999], "like")["version"] == before + 1


def test_a_reshard_that_fails_keeps_the_old_shards_serving(ray_session):
    ids, vecs, cats = _catalog(500, seed=4)
    config = make_config(DIM, num_shards=2, index_kwargs={"factory": "Flat"})
    with Rayrec.start(config) as system:
        system.upsert(ids, vecs, {"category": cats})
        _, current, _ = ray.get(system.router.get_layout.remote())
        new = Generation(current.number + 1, uuid.uuid4().hex[:8], 3)
        groups = create_shards(_with_shards(system.config, 3), new, detached=False)
        ray.kill(groups[1][0])  # one new shard dies before the copy
        with pytest.raises(ShardUnavailableError, match="did not start"):
            ray.get(system.router.reshard.remote(groups, new, current.number))
        # The router stopped the other new actors itself.
        for group in (groups[0], groups[2]):
            with pytest.raises(ray.exceptions.RayActorError):
                ray.get(group[0].count.remote(), timeout=60)
        # A plan made against an old generation is refused, and its actors stopped. (One new shard is enough
        # here and below: the refusal and the stopping do not depend on the count, and each new shard is one
        # more Ray worker process to start.)
        stale = Generation(5, "x", 1)
        groups = create_shards(_with_shards(system.config, 1), stale, detached=False)
        with pytest.raises(LayoutChangedError):
            ray.get(system.router.reshard.remote(groups, stale, 4))
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(groups[0][0].count.remote(), timeout=60)
        # A planner that gives up: the router stops its generation, which can then not be switched in.
        given_up = Generation(current.number + 1, uuid.uuid4().hex[:8], 1)
        groups = create_shards(_with_shards(system.config, 1), given_up, detached=False)
        assert ray.get(system.router.abandon.remote(given_up, groups)) is True
        with pytest.raises(LayoutChangedError, match="abandoned"):
            ray.get(system.router.reshard.remote(groups, given_up, current.number))
        assert ray.get(system.router.get_layout.remote())[1] == current
        # Another driver may not re-shard a system it did not start (and that is not detached).
        with pytest.raises(InvalidInputError, match="re-shard it from that driver"):
            Rayrec.connect(namespace=system.config.namespace).reshard(3)
        assert system.count() == len(ids)
        q = vecs[0]
        assert list(system.search(q, k=5).ids[0]) == _exact(ids, vecs, cats, q, 5)
        system.upsert(["after"], vecs[:1])  # the write gate is open again
        assert system.count() == len(ids) + 1
        assert system.reshard(3)["items"] == len(ids) + 1


def _with_shards(config: Any, n: int) -> Any:
    return dataclasses.replace(config, num_shards=n)


def test_a_durable_reshard_survives_router_and_system_restarts(ray_session, tmp_path):
    ids, vecs, cats = _catalog(1500, seed=5)
    config = make_config(DIM, num_shards=2, storage=str(tmp_path), index_kwargs={"factory": "Flat"})
    system = Rayrec.start(config)
    try:
        system.upsert(ids, vecs, {"category": cats})
        system.set_histories({"u1": ids[:3]})
        system.reshard(3)
        # The old generation's files are gone; the new one's are in their own directory.
        shard_dirs = [p.name for p in tmp_path.iterdir() if p.name.startswith(("gen-", "shard-"))]
        assert len(shard_dirs) == 1 and shard_dirs[0].startswith("gen-1-"), shard_dirs
        assert sorted(p.name for p in (tmp_path / shard_dirs[0]).iterdir()) == ["shard-0", "shard-1", "shard-2"]
        # Ray restarts a killed router with its first arguments; it finds the new shards in storage.
        ray.kill(system.router, no_restart=False)
        wait_until(lambda: system.count() == len(ids), 60, "the restarted router answering")
        assert ray.get(system.router.get_layout.remote())[1].num_shards == 3
        q = vecs[7]
        assert list(system.search(q, k=10).ids[0]) == _exact(ids, vecs, cats, q, 10)
        assert system.feedback("u1", ids[10], "like")["applied"]
        user = system.get_user("u1")
    finally:
        system.shutdown()
    # The whole system again on its storage, configured with 2 shards: it recovers 3, then re-shards to 2.
    with Rayrec.start(config) as again:
        assert again.config.num_shards == 2
        assert ray.get(again.router.get_layout.remote())[1].num_shards == 2
        assert again.count() == len(ids)
        assert list(again.search(q, k=10).ids[0]) == _exact(ids, vecs, cats, q, 10)
        assert again.get_user("u1")["version"] == user["version"]
        # An ingress replica deployed with another shard count re-shards the running system (Serve redeploy).
        router, shards, _ = build_actors(_with_shards(config, 4), detached=False, attach=True)
        assert len(shards) == 4 and ray.get(router.count.remote()) == len(ids)
