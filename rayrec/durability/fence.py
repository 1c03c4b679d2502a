"""One writer per actor directory: a second system (or a stale actor) on the same storage is refused.

A local directory is fenced by an exclusive flock held for the writer's life: a second writer
cannot start while the first process lives (a crashed one lets go, so Ray's restart takes over).
An object store has no locks: the writer records its token in `writer.json`, and checks before
every commit and prune that the token is still its own. A newer writer (a restarted actor, the new
cluster of a KubeRay upgrade) takes over; the older one is refused from then on (FencedError), so
two writers never both acknowledge changes or delete each other's log segments.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
from typing import Any

from rayrec import constants as C
from rayrec.durability.storage import Storage
from rayrec.exceptions import RayrecError

LOCK_FILE = "writer.lock"
WRITER_FILE = "writer.json"


class StorageInUseError(RayrecError):
    """Another live process writes to this storage directory."""


class FencedError(RayrecError):
    """A newer writer took this storage directory over: this one may no longer commit."""


class WriterFence:
    """Holds a storage directory for one writer (see the module's docstring)."""

    def __init__(self, storage: Storage, wait_s: float | None = None) -> None:
        """wait_s: how long a local writer waits for the lock (an actor restarted before its old process
        was gone takes it once that process ends)."""
        self.storage = storage
        self.token = uuid.uuid4().hex
        wait_s = C.FENCE_WAIT_S if wait_s is None else wait_s
        self._lock: Any = None
        if storage.local:
            self._lock = open(storage.path(LOCK_FILE), "a+b")  # noqa: SIM115 (held for the writer's life)
            if not self._take(wait_s):
                self._lock.close()
                self._lock = None
                raise StorageInUseError(
                    f"another process writes to {storage.uri} (waited {wait_s:.0f} s for it: a second rayrec "
                    "system on the same storage, or an actor of an older one still running): stop it, or give "
                    "this system its own storage"
                ) from None
        else:
            storage.write_bytes(WRITER_FILE, json.dumps({
                "token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
            }).encode())

    def _take(self, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)

    def check(self) -> None:
        """Raises FencedError if a newer writer took this directory over (an object store's case)."""
        if self.storage.local:
            return
        try:
            holder = json.loads(self.storage.read_bytes(WRITER_FILE)).get("token")
        except (OSError, ValueError):
            holder = None
        if holder != self.token:
            raise FencedError(
                f"another writer took {self.storage.uri} over: this one may no longer commit (a newer system or "
                "a restarted actor writes there now)"
            )

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # lets the flock go
            self._lock = None
