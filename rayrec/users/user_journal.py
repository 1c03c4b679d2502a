"""A user actor's durability without Ray: each change logged before it applies, snapshots, recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rayrec import constants as C
from rayrec.config import RayrecConfig
from rayrec.durability import user_log
from rayrec.durability.journal import GroupCommit, Journal, fail_stop
from rayrec.durability.storage import Storage
from rayrec.system.layout import require_layout
from rayrec.users.user_state import UserChange, UserStore


class UserJournal:
    """The log and snapshots of one partition of users; without storage, changes only apply.

    A change is planned, logged durably (see GroupCommit), then applied, under its user's lock (the
    caller holds it); a restarted actor recovers its snapshot plus the log after it (recover).
    """

    def __init__(self, config: RayrecConfig, partition: str, store: UserStore, locks: list[asyncio.Lock],
                 space_version: Callable[[], str | None], require_shared: bool = False) -> None:
        self.config, self.partition, self.store, self.locks = config, partition, store, locks
        self.space_version = space_version  # the item space the users are in: a snapshot records it
        self.journal: Journal | None = None
        self.group: GroupCommit[UserChange] | None = None
        self.fail_stop = fail_stop  # what a failed log write does: end the process (tests pass their own)
        self._snapshotting: asyncio.Task[None] | None = None
        self._snapshot_lock = asyncio.Lock()
        self.recovered_changes = 0
        if config.storage is not None:
            if require_shared:  # a node that does not share the storage would recover nothing (see Shard)
                require_layout(config)
            self.journal = Journal(Storage(config.storage).child(f"users-{partition}"),
                                   user_log.log_schema(config.index.dim), config.snapshot_every, config.fence_wait_s)
            # On a local disk a lone change is written in the caller's turn (an fdatasync is
            # ~0.5 ms here); an object store's upload takes longer, so it goes to a thread.
            inline = self.journal.storage.local and C.WAL_INLINE_WRITES
            self.group = GroupCommit(self._write, inline=inline)

    def recover(self) -> str | None:
        """Loads the latest snapshot and replays the log after it (a restart by Ray lands here); returns the
        item space the snapshot recorded (None: none)."""
        assert self.journal is not None
        snap, batches = self.journal.recover()
        recorded = None
        if snap is not None:
            user_log.table_to_store(snap.table("users"), self.store)
            recorded = snap.info.get("item_space")
        for batch in batches:
            for change in user_log.batch_to_changes(batch, self.config.index.dim):
                self.recovered_changes += self.store.commit(change)
        return recorded

    def _write(self, changes: list[UserChange]) -> None:
        assert self.journal is not None
        self.journal.append(user_log.changes_to_batch(changes, self.config.index.dim))

    async def make(self, change: UserChange) -> None:
        """Logs (with storage) and applies a planned change; the caller holds the user's lock."""
        if self.group is not None:
            await self._logged(change)
        self.store.commit(change)
        if self.journal is not None and self.journal.snapshot_due and (
            self._snapshotting is None or self._snapshotting.done()
        ):
            self._snapshotting = asyncio.ensure_future(self.snapshot())

    async def _logged(self, change: UserChange) -> None:
        """Makes change durable. A caller that gives up meanwhile (a cancelled call) does not stop the write:
        once it is in the log it is applied in memory too, so no later change reuses its version. A failed
        write ends the process (fail_stop): only recovery from the log knows whether the record is there."""
        assert self.group is not None
        write = asyncio.ensure_future(self.group.submit(change))
        try:
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                await write
                self.store.commit(change)
                raise
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.fail_stop(f"user actor {self.partition}", exc)

    async def snapshot(self) -> None:
        """Writes every user to storage and drops the log it covers (no-op without storage).

        Holds every user lock while it captures the state (no change is between
        its log write and its apply then), and writes the files after letting go.
        """
        if self.journal is None or self.group is None:
            return
        async with self._snapshot_lock:  # one at a time, files included: each prunes what came before it
            for lock in self.locks:
                await lock.acquire()
            try:
                await self.group.drain()
                wal_from = self.journal.begin_snapshot()
                table = user_log.store_to_table(self.store)
            finally:
                for lock in self.locks:
                    lock.release()
            info = {"users": len(self.store), "item_space": self.space_version()}
            await asyncio.to_thread(self.journal.write_snapshot, wal_from, info, {"users": table})
