"""A journal: one actor's write-ahead log plus its snapshots, and recovery from both."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, NoReturn, TypeVar

import pyarrow as pa

from rayrec.durability import wal
from rayrec.durability.fence import FencedError, WriterFence
from rayrec.durability.snapshot import Snapshot, latest_snapshot, write_snapshot
from rayrec.durability.storage import Storage

log = logging.getLogger(__name__)

T = TypeVar("T")
# The exit status of an actor process stopped by fail_stop (Ray restarts it; it recovers from its log).
FAIL_STOP_EXIT_CODE = 75


def fail_stop(what: str, exc: BaseException) -> NoReturn:
    """Ends this process at once after a failed log write: whether the record reached the disk is known only
    to the log, so memory may no longer answer for it. Ray restarts the actor, which recovers from the log
    alone (and resends the calls it was answering)."""
    log.critical("%s: a log write failed (%r); stopping so that recovery decides from the log alone", what, exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(FAIL_STOP_EXIT_CODE)


class Journal:
    """Durable state of one actor in one storage directory.

    recover() hands back the latest snapshot and the log batches after it;
    append() makes a batch durable; snapshot() writes the state and drops the
    log it covers. Appends and snapshots come from one thread at a time.
    """

    def __init__(self, storage: Storage, schema: pa.Schema, snapshot_every: int,
                 fence_wait_s: float | None = None) -> None:
        """fence_wait_s: how long recover() waits for the writer lock (None: RAYREC_FENCE_WAIT_S)."""
        self.storage = storage
        self.fence_wait_s = fence_wait_s
        self.schema = schema
        self.snapshot_every = snapshot_every
        self.since_snapshot = 0  # log rows appended since the last snapshot
        self._wal: wal.WriteAheadLog | None = None
        self.fence: WriterFence | None = None

    def recover(self) -> tuple[Snapshot | None, Iterator[pa.RecordBatch]]:
        """The latest snapshot (or None) and the log batches to replay on top of it, in order.

        Call once, before the first append: the log opens a new segment afterwards.
        """
        if self.fence is None:
            self.fence = WriterFence(self.storage, self.fence_wait_s)  # one writer per directory, before any read
        snap = latest_snapshot(self.storage)
        batches = list(wal.read_log(self.storage, snap.wal_from if snap is not None else 0))
        self.since_snapshot = sum(b.num_rows for b in batches)
        self._wal = wal.WriteAheadLog(self.storage, self.schema, start=snap.wal_from if snap is not None else 0)
        return snap, iter(batches)

    def append(self, batch: pa.RecordBatch) -> None:
        """Writes batch durably (flushed and fsynced, or uploaded) before returning."""
        if self._wal is None or self.fence is None:
            raise RuntimeError("Journal.recover() must run before the first append")
        try:
            self.fence.check()
        except FencedError as exc:  # a newer writer: nothing more may be acknowledged here
            raise wal.LogFailedError(str(exc)) from exc
        self._wal.append(batch)
        self.since_snapshot += batch.num_rows

    @property
    def snapshot_due(self) -> bool:
        return self.since_snapshot >= self.snapshot_every

    def begin_snapshot(self) -> int:
        """Starts a new log segment; the state captured next is replayed from it on."""
        assert self._wal is not None
        self.since_snapshot = 0
        return self._wal.rotate()

    def write_snapshot(
        self, wal_from: int, info: dict[str, Any], tables: dict[str, pa.Table], blobs: dict[str, bytes] | None = None
    ) -> None:
        """Writes a state captured after begin_snapshot() returned wal_from; drops the log before it."""
        t0 = time.perf_counter()
        if self.fence is not None:
            self.fence.check()  # a fenced writer's prune would delete the newer writer's log
        write_snapshot(self.storage, wal_from, info, tables, blobs or {})
        log.info("snapshot %s of %s written in %.2f s", wal_from, self.storage.uri, time.perf_counter() - t0)

    def close(self) -> None:
        if self._wal is not None:
            self._wal.close()
        if self.fence is not None:
            self.fence.close()
            self.fence = None


class GroupCommit(Generic[T]):
    """Gathers records from concurrent coroutines into one durable write.

    submit() returns once its record is durable. While one write runs (in a
    thread, so the event loop keeps serving), new records queue up and go out
    together in the next write: one fsync acknowledges a whole group.
    """

    def __init__(self, write: Callable[[list[T]], None], inline: bool = True) -> None:
        self._write = write
        self.inline = inline
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, record: T) -> None:
        if self.inline and not self._pending and (self._flusher is None or self._flusher.done()):
            # Nothing else is waiting: one small write here beats a hop to a thread and back.
            self._write([record])
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        await done

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, [record for record, _ in group])
            except BaseException as exc:  # every record of the group failed: none is acknowledged
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in group:
                if not done.done():
                    done.set_result(None)

    async def drain(self) -> None:
        """Waits until every submitted record is written."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
