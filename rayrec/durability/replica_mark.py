"""The mark of a shard replica that is out of sync, kept in its storage directory.

The router writes it (durably) before it acknowledges a write that a replica failed and a peer applied;
the replica reads it when it recovers, so a restart cannot bring a lagging replica back into reads. A
repair (the peer's state copied in, then snapshotted) deletes it.
"""

from __future__ import annotations

import json
import time

from rayrec.durability.storage import Storage

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
