"""Seeded random operation sequences against the durable path of a user actor (UserStore, Journal with its
WAL, snapshots and writer fence, on real files) with faults injected: syncs that fail after the bytes reached
the disk, writes that fail before, crashes that tear the last record, crashes mid-snapshot. After every
restart the recovered state is checked against a model of what was acknowledged, FoundationDB-style:

- every acknowledged change is there (a user's recovered version is at least its last acknowledged one);
- nothing is there that was never attempted, and a version is only ever the one change that took it;
- after a failed append the node fail-stops (the log refuses more), so no version is acknowledged twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rayrec.config import FeedbackRule
from rayrec.durability import user_log, wal
from rayrec.durability.journal import Journal
from rayrec.durability.storage import Storage
from rayrec.users.user_state import UserStore

DIM = 4
USERS = ["a", "b", "c"]


class Crashed(Exception):
    """The node's process ended (a fail-stop or an injected crash)."""


class Node:
    """The user actor's durable steps without Ray: plan, log (durable), apply; snapshot; recover."""

    def __init__(self, root: str) -> None:
        self.storage = Storage(root)
        self.journal = Journal(self.storage, user_log.log_schema(DIM), snapshot_every=10**9)
        self.store = UserStore(DIM, FeedbackRule())
        snap, batches = self.journal.recover()
        if snap is not None:
            user_log.table_to_store(snap.table("users"), self.store)
        for batch in batches:
            for change in user_log.batch_to_changes(batch, DIM):
                self.store.commit(change)

    def set_vector(self, user: str, vector: np.ndarray, event: str) -> int:
        change = self.store.plan_vector(user, vector, event)
        assert change is not None
        try:
            self.journal.append(user_log.changes_to_batch([change], DIM))
        except wal.LogFailedError:
            raise Crashed from None  # fail-stop: the process ends, the log alone decides
        self.store.commit(change)
        return change.version

    def snapshot(self) -> None:
        wal_from = self.journal.begin_snapshot()
        self.journal.write_snapshot(wal_from, {}, {"users": user_log.store_to_table(self.store)})

    def crash(self) -> None:
        """The process ends: nothing more is written, its writer lock goes with it."""
        if self.journal._wal is not None:
            self.journal._wal._abandon()
        if self.journal.fence is not None:
            self.journal.fence.close()


def _tear_last_record(root: str, rng: np.random.Generator) -> None:
    """A crash in the middle of the last append: the newest segment loses a random tail of its last record."""
    storage = Storage(root)
    numbers = wal.segments(storage)
    if not numbers:
        return
    path = storage.path(wal.segment_name(numbers[-1]))
    size = os.path.getsize(path)
    if size > wal.HEADER_BYTES:
        with open(path, "r+b") as f:
            f.truncate(int(rng.integers(size - 40, size)) if size > 60 else size - 1)


def _failing_append(node: Node, monkeypatch: pytest.MonkeyPatch, landed: bool, call: Callable[[], Any]) -> None:
    """Runs call (an append) with fdatasync failing; landed: its bytes stay on disk, else they are taken back
    (as if the write itself had failed)."""
    real_sync = os.fdatasync
    numbers = wal.segments(node.storage)
    path = node.storage.path(wal.segment_name(numbers[-1])) if numbers else None
    before = os.path.getsize(path) if path and node.journal._wal and node.journal._wal._file else None

    def failing(fd: int) -> None:
        real_sync(fd)
        raise OSError(5 if landed else 28, "Input/output error" if landed else "No space left on device")

    monkeypatch.setattr(os, "fdatasync", failing)
    try:
        with pytest.raises(Crashed):
            call()
    finally:
        monkeypatch.setattr(os, "fdatasync", real_sync)
    if not landed:
        newest = node.storage.path(wal.segment_name(wal.segments(node.storage)[-1]))
        with open(newest, "r+b") as f:
            f.truncate(before if before is not None and newest == path else 0)


@pytest.mark.parametrize("seed", range(24))
def test_random_operations_with_faults_never_lose_an_acknowledged_change(tmp_path, monkeypatch, seed):
    rng = np.random.default_rng(seed)
    root = str(tmp_path)
    acked: dict[str, int] = {u: 0 for u in USERS}  # the last acknowledged version per user
    attempted: dict[tuple[str, int], np.ndarray] = {}  # (user, version) -> the vector of every change tried
    node = Node(root)
    faults = {"sync_after_write": 0, "write_fails": 0, "torn": 0, "snapshots": 0, "restarts": 0}

    def restart(tear: bool) -> Node:
        nonlocal node
        node.crash()
        if tear:
            _tear_last_record(root, rng)
            faults["torn"] += 1
        faults["restarts"] += 1
        node = Node(root)
        for user in USERS:  # the model's checks
            state = node.store.get(user)
            version = 0 if state is None else state.version
            assert version >= acked[user], f"user {user}: acknowledged v{acked[user]}, recovered v{version}"
            if state is not None:
                assert np.allclose(attempted[(user, version)], state.vector, atol=1e-6), f"{user} v{version}"
            acked[user] = version  # a recovered unacknowledged change now counts: later versions follow it
        return node

    for step in range(60):
        roll = rng.random()
        user = USERS[int(rng.integers(len(USERS)))]
        vector = rng.standard_normal(DIM).astype(np.float32)
        version = acked[user] + 1
        normalised = (vector / np.linalg.norm(vector)).astype(np.float32)
        if roll < 0.14:  # an append fails: its bytes reached the disk (a failed sync) or never did (disk full)
            landed = roll < 0.08
            faults["sync_after_write" if landed else "write_fails"] += 1
            attempted[(user, version)] = normalised
            _failing_append(node, monkeypatch, landed, lambda: node.set_vector(user, vector, f"e{step}"))
            with pytest.raises(wal.LogFailedError):  # poisoned: nothing more is acknowledged before a restart
                node.journal.append(user_log.changes_to_batch([node.store.plan_vector(user, vector)], DIM))
            restart(tear=False)
        elif roll < 0.22:
            faults["snapshots"] += 1
            node.snapshot()
        elif roll < 0.30:  # a crash, sometimes in the middle of an append that was never acknowledged
            tear = bool(rng.random() < 0.5)
            if tear:
                attempted[(user, version)] = normalised
                node.journal.append(user_log.changes_to_batch([node.store.plan_vector(user, vector, "torn")], DIM))
            restart(tear=tear)
        else:
            attempted[(user, version)] = normalised
            acked[user] = node.set_vector(user, vector, f"e{step}")
            assert acked[user] == version
    restart(tear=False)
    assert sum(faults.values()) > 5  # the sequence exercised faults, not only the happy path
    node.crash()
