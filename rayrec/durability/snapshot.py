"""Snapshots: Parquet tables (and raw faiss bytes) named by the first log segment they do not cover.

A snapshot is its data files plus a JSON manifest written last: a crash while
writing leaves no manifest, so the previous snapshot stays the latest. Nothing
here unpickles: reading a snapshot from an untrusted location cannot run code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from rayrec.durability import wal
from rayrec.durability.storage import Storage
from rayrec.exceptions import RayrecError

MANIFEST_PREFIX = "snapshot-"
MANIFEST_SUFFIX = ".json"
FORMAT_VERSION = 1


class SnapshotError(RayrecError):
    """A snapshot in storage cannot be read (missing file, other format, other layout)."""


def _manifest_name(wal_from: int) -> str:
    return f"{MANIFEST_PREFIX}{wal_from:012d}{MANIFEST_SUFFIX}"


def _data_name(wal_from: int, key: str, binary: bool) -> str:
    return f"snap-{wal_from:012d}-{key}.{'bin' if binary else 'parquet'}"


@dataclass(slots=True)
class Snapshot:
    """One snapshot's manifest: replay the log from segment wal_from on top of it."""

    storage: Storage
    wal_from: int
    info: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def table(self, key: str) -> pa.Table:
        return self.storage.read_parquet(self._file(key))

    def blob(self, key: str) -> bytes:
        return self.storage.read_bytes(self._file(key))

    def has(self, key: str) -> bool:
        return key in self.files

    def _file(self, key: str) -> str:
        if key not in self.files:
            raise SnapshotError(f"snapshot {self.wal_from} in {self.storage.uri} has no {key!r} part")
        return self.files[key]


def write_snapshot(
    storage: Storage, wal_from: int, info: dict[str, Any], tables: dict[str, pa.Table], blobs: dict[str, bytes]
) -> None:
    """Writes a snapshot (data first, manifest last), then drops older snapshots and covered log segments."""
    files = {}
    for key, table in tables.items():
        files[key] = _data_name(wal_from, key, binary=False)
        storage.write_parquet(files[key], table)
    for key, blob in blobs.items():
        files[key] = _data_name(wal_from, key, binary=True)
        storage.write_bytes(files[key], blob)
    manifest = {"format": FORMAT_VERSION, "wal_from": wal_from, "info": info, "files": files}
    storage.write_bytes(_manifest_name(wal_from), json.dumps(manifest).encode())
    _prune(storage, wal_from, set(files.values()))


def _number_in(name: str, prefix: str) -> int | None:
    digits = name[len(prefix) : len(prefix) + 12]
    return int(digits) if name.startswith(prefix) and digits.isdigit() else None


def _prune(storage: Storage, wal_from: int, keep: set[str]) -> None:
    """Deletes what this snapshot replaces: older snapshots, the log they needed, leftover temp files.

    Only older ones: a newer snapshot, written meanwhile, stays whole.
    """
    for name in storage.names():
        number = _number_in(name, MANIFEST_PREFIX)
        if number is None:
            number = _number_in(name, "snap-")
        if number is not None and number < wal_from and name not in keep:
            storage.delete(name)
    for name in storage.temp_names():
        if name.startswith("snap"):  # a snapshot's own; a log upload's may be in flight
            storage.delete(name)
    wal.truncate(storage, wal_from)
    storage.sync()  # the deletions too: what a snapshot replaced (an erased user's records) stays gone


def latest_snapshot(storage: Storage) -> Snapshot | None:
    """The newest complete snapshot in storage, or None if there is none."""
    manifests = sorted(n for n in storage.names() if n.startswith(MANIFEST_PREFIX) and n.endswith(MANIFEST_SUFFIX))
    if not manifests:
        return None
    name = manifests[-1]
    try:
        data = json.loads(storage.read_bytes(name))
    except ValueError as exc:
        raise SnapshotError(f"{storage.uri}/{name} is not a snapshot manifest: {exc}") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != FORMAT_VERSION:
        raise SnapshotError(f"{storage.uri}/{name}: snapshot format {fmt!r} is not {FORMAT_VERSION}")
    return Snapshot(storage, int(data["wal_from"]), dict(data.get("info", {})), dict(data.get("files", {})))
