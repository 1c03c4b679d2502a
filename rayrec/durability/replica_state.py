"""A shard replica's place among its peers: its write position, and whether it is out of sync.

The router numbers each shard's item writes (rayrec.routing.replicas.ReplicaSet); a replica applies write n
only as the one after its position n - 1, and the position travels in its log and snapshots. A replica that
missed a write a peer applied is out of sync: it answers no reads and takes no writes until a repair copies
a peer's state in. Its mark is kept in its storage directory (out_of_sync.json), written durably before the
router acknowledges such a write, so a restart cannot bring a lagging replica back into reads.
"""

from __future__ import annotations

import json
import time

from rayrec.durability.storage import Storage
from rayrec.exceptions import ReplicaOutOfSyncError

MARK_FILE = "out_of_sync.json"


def mark(storage: Storage, why: str) -> None:
    storage.write_bytes(MARK_FILE, json.dumps({"why": why, "at": time.time()}).encode())


def read_mark(storage: Storage) -> str | None:
    """Why the replica in storage is out of sync; None if it is not marked."""
    if not storage.exists(MARK_FILE):
        return None
    try:
        return str(json.loads(storage.read_bytes(MARK_FILE))["why"])
    except (ValueError, KeyError, TypeError):  # a mark whose content was damaged still marks
        return "marked out of sync (the mark's content is unreadable)"


def clear_mark(storage: Storage) -> None:
    storage.delete(MARK_FILE)
    storage.sync()


class ReplicaState:
    """One replica's write position and out-of-sync mark (plain Python, held by actors/shard.py's Shard)."""

    def __init__(self, name: str, storage: Storage | None = None) -> None:
        """name: the replica in words, for errors ("replica 1 of shard 0"); storage: its directory, if durable."""
        self.name = name
        self.storage = storage
        self.position = 0  # of the last sequenced write applied
        self.out_of_sync = read_mark(storage) if storage is not None else None  # why; None while in sync
        self.applying: int | None = None  # the position of the write being applied, until it is durable

    def check_in_sync(self) -> None:
        """A read (or a write) is answered only by a replica in sync."""
        if self.out_of_sync is not None:
            raise ReplicaOutOfSyncError(
                f"{self.name} is out of sync ({self.out_of_sync}): another replica answers until it is repaired"
            )

    def begin(self, seq: int) -> None:
        """Takes write seq, which must be the one after this replica's position: any other means it missed
        writes (or the writer lost count), so it marks itself out of sync and refuses."""
        self.check_in_sync()
        if seq != self.position + 1:
            self.mark(f"it was sent write {seq} at position {self.position}")
            self.check_in_sync()
        self.applying = seq

    def applied(self) -> None:
        """The write being applied is durable (or changed nothing): the position is its."""
        if self.applying is not None:
            self.position = self.applying

    def end(self) -> None:
        self.applying = None

    def mark(self, why: str) -> None:
        """Out of sync until repaired: no reads, no writes; durably, so a restart reads it."""
        self.out_of_sync = why
        if self.storage is not None:
            mark(self.storage, why)

    def repaired(self) -> None:
        """A peer's state (and its position) was taken in, and made durable: back in sync."""
        if self.storage is not None:
            clear_mark(self.storage)
        self.out_of_sync = None

    def state(self) -> dict[str, int | str | None]:
        return {"position": self.position, "out_of_sync": self.out_of_sync}
