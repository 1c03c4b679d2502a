"""A shard replica's durability without Ray: each write logged before it applies, snapshots, recovery."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pyarrow as pa

from rayrec.config import RayrecConfig
from rayrec.durability import shard_log
from rayrec.durability.journal import Journal, fail_stop
from rayrec.durability.replica_state import ReplicaState
from rayrec.durability.storage import Storage
from rayrec.durability.wal import LogFailedError
from rayrec.index.item_index import ItemIndex

log = logging.getLogger(__name__)


class ShardJournal:
    """The log and snapshots of one shard replica's ItemIndex (without storage, writes just apply).

    upsert, delete and clear log a write's record before the index applies it; a bulk load or a repair is
    made durable by a snapshot instead. A restarted replica recovers its snapshot plus the log after it.
    """

    def __init__(
        self,
        config: RayrecConfig,
        storage: Storage | None,
        index: ItemIndex,
        replication: ReplicaState,
        shard_id: int,
        replica: int,
    ) -> None:
        """storage: the replica's own directory (None: not durable); replication: its write position."""
        self.index, self.replication = index, replication
        self.shard_id, self.replica = shard_id, replica
        self.journal: Journal | None = None
        if storage is not None:
            self.journal = Journal(storage, shard_log.log_schema(config.index.dim), config.snapshot_every,
                                   config.fence_wait_s)
        self.fail_stop = fail_stop  # what a failed log write does: end the process (tests pass their own)
        self.recovered_rows = 0
        self._snapshotting: threading.Thread | None = None

    def recover(self) -> None:
        """Loads the latest snapshot and replays the log after it (a restart by Ray lands here)."""
        assert self.journal is not None
        snap, logged = self.journal.recover()
        batches = list(logged)
        if snap is not None:
            blob = snap.blob("faiss") if snap.has("faiss") else None
            self.index.import_state(snap.table("rows"), blob, snap.info)
        self.recovered_rows = shard_log.replay(batches, self.index)
        start = int(snap.info.get("position", 0)) if snap is not None else 0
        self.replication.position = shard_log.position_of(batches, start)

    # ----- writes: logged, then applied -----------------------------------
    def upsert(self, ids: list[str], vectors: np.ndarray, metadata: dict[str, list[str | None]]) -> int:
        """ItemIndex.upsert of checked items, logged first; metadata the index has no room for is refused first."""
        self.index.check_room(metadata)  # before the log: a write refused here is never replayed
        self._log(shard_log.upsert_batch(ids, vectors, metadata, self.index.config.dim))
        written = self.index.upsert(ids, vectors, metadata)
        self._after_write()
        return written

    def delete(self, ids: list[str]) -> int:
        """ItemIndex.delete of checked ids; only the ids present are logged."""
        present = [i for i in ids if i in self.index]
        if present:
            self._log(shard_log.delete_batch(present, self.index.config.dim))
        deleted = self.index.delete(present)
        self._after_write()
        return deleted

    def clear(self) -> None:
        """ItemIndex.clear, logged first."""
        self._log(shard_log.clear_batch(self.index.config.dim))
        self.index.clear()

    def log_position(self) -> None:
        """Logs the position alone: a sequenced write that changed nothing (deleted ids that were absent)."""
        self._log(shard_log.clear_batch(self.index.config.dim, op=shard_log.POSITION))

    def _log(self, batch: pa.RecordBatch) -> None:
        """Makes a write's record durable (with storage); a sequenced write's position moves with it."""
        seq = self.replication.applying
        if seq is not None:
            batch = batch.set_column(batch.schema.get_field_index(shard_log.SEQ), shard_log.SEQ,
                                     pa.array([seq] * batch.num_rows, pa.int64()))
        if self.journal is not None:
            try:
                self.journal.append(batch)
            except LogFailedError as exc:  # the record may be on disk: only a recovery from the log may say
                self.fail_stop(f"shard {self.shard_id} replica {self.replica}", exc)
        self.replication.applied()

    def _after_write(self) -> None:
        """Starts a background snapshot once the log has grown by snapshot_every rows."""
        if self.journal is not None and self.journal.snapshot_due:
            self.snapshot(wait=False)

    def snapshot(self, wait: bool = True) -> None:
        """Writes the index's state to storage and drops the log it covers (no-op without storage).

        The state is captured here (rows are append-only, so the vectors are not
        copied); with wait=False the files are written by a thread while the shard
        keeps answering. Until they are complete, the previous snapshot and the
        whole log after it stay, so a crash meanwhile loses nothing.
        """
        if self.journal is None:
            return
        self.wait_snapshot()  # one at a time
        wal_from = self.journal.begin_snapshot()
        table, blob, info = self.index.export_state()
        info = {**info, "position": self.replication.position}
        blobs = {"faiss": blob} if blob is not None else {}
        journal = self.journal
        if wait:
            journal.write_snapshot(wal_from, info, {"rows": table}, blobs)
            return

        def write() -> None:
            try:
                journal.write_snapshot(wal_from, info, {"rows": table}, blobs)
            except Exception:  # the previous snapshot and the log still hold everything
                log.exception("shard %s: snapshot %s failed; the log grows until one succeeds", self.shard_id, wal_from)

        self._snapshotting = threading.Thread(target=write, name=f"snapshot-shard-{self.shard_id}", daemon=True)
        self._snapshotting.start()

    def wait_snapshot(self) -> None:
        """Returns once a snapshot being written in the background is complete."""
        if self._snapshotting is not None:
            self._snapshotting.join()
            self._snapshotting = None

    def close(self) -> None:
        """Waits for a background snapshot, then lets go of storage (its writer lock): nothing more is written."""
        self.wait_snapshot()
        if self.journal is not None:
            self.journal.close()
        self.journal = None
