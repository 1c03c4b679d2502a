"""ShardActor: one slice of the catalog in a faiss index, as a Ray actor."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import ray

from rayrec import constants as C
from rayrec.catalogs.catalog import ItemBatch
from rayrec.catalogs.ingest import TEXT_COLUMN
from rayrec.config import RayrecConfig
from rayrec.durability.replica_state import ReplicaState
from rayrec.durability.shard_journal import ShardJournal
from rayrec.durability.storage import Storage
from rayrec.exceptions import ShardRetiredError, ShardUnavailableError
from rayrec.index.faiss_kinds import omp_threads, set_process_threads
from rayrec.index.filtered_search import PerQuery
from rayrec.index.item_index import ItemIndex
from rayrec.index.metadata import check_items
from rayrec.index.staged_items import StagedItems
from rayrec.routing.wire import pack_partial, unpack_search
from rayrec.system.layout import Generation, require_layout
from rayrec.system.resharding import split_batch
from rayrec.validation import check_ids, check_vectors

# Metadata a search result leaves out: the text an item was added by, kept for model swaps (which place it
# again); an item's own record (GET /items/{id}, Rayrec.fetch) still carries it.
SEARCH_LEAVES_OUT = frozenset({TEXT_COLUMN})


class Shard:
    """One shard replica: its ItemIndex, staged loads (StagedItems), durability (ShardJournal) and write position
    (ReplicaState), composed; each call is checked (retired? in sync?), then delegated.

    Plain Python; ShardActor below is this class as a Ray actor, which runs calls one at a time, in order.
    """

    def __init__(
        self,
        config: RayrecConfig,
        shard_id: int,
        threads: int | None = None,
        replica: int = 0,
        generation: Generation | None = None,
        require_shared: bool = False,
    ) -> None:
        """require_shared: refuse to start where the storage holds no layout.json (a node that does not share
        it: see rayrec.system.layout.require_layout); deploy.py asks it of every shard actor."""
        if threads is not None:  # one OpenMP thread per actor: two make a single query ~2x slower on 2 cores
            set_process_threads(threads)
        self.config = config
        self.shard_id = shard_id
        self.replica = replica
        self.generation = generation or Generation.first(config.num_shards)
        self.retired = False
        self.index = ItemIndex(config.index, build_threads=C.SHARD_BUILD_THREADS)
        self.staged = StagedItems(self.index)
        # Batches big enough to split over threads may use more of them (a node's CPUs
        # divided by the shards it holds); a single query stays on one thread.
        self._batch_threads = C.SHARD_BATCH_THREADS if threads is not None else None
        self.storage: Storage | None = None
        if config.storage is not None:
            if require_shared:
                require_layout(config)
            self.storage = Storage(config.storage).child(self.generation.storage_name(shard_id, replica))
        # Among the shard's replicas: the position of the last sequenced write applied (write_at), out of sync.
        self.replication = ReplicaState(f"replica {replica} of shard {shard_id}", self.storage)
        self.durability = ShardJournal(config, self.storage, self.index, self.replication, shard_id, replica)
        if self.storage is not None:
            self.durability.recover()

    def _serving(self) -> None:
        if self.retired:
            raise ShardRetiredError(
                f"shard {self.shard_id} of generation {self.generation.number} was retired by a re-shard; "
                "ask the router for the current shards"
            )

    def _reading(self) -> None:
        """A read is answered only by a replica in sync."""
        self._serving()
        self.replication.check_in_sync()

    # ----- durability -----------------------------------------------------
    @property
    def recovered_rows(self) -> int:
        """Log rows replayed when this replica started (0 without storage)."""
        return self.durability.recovered_rows

    def snapshot(self, wait: bool = True) -> None:
        """ShardJournal.snapshot: this shard's state to storage, the log it covers dropped (no-op without storage)."""
        self.durability.snapshot(wait)

    def wait_snapshot(self) -> None:
        """Returns once a snapshot being written in the background is complete."""
        self.durability.wait_snapshot()

    def search(
        self,
        queries: np.ndarray,
        k: int,
        excludes: list[list[str] | None] | None = None,
        categories: list[list[str] | None] | None = None,
        with_metadata: bool = False,
    ) -> tuple[np.ndarray, ...]:
        """Partial top-k of this shard: (scores, ids) or (scores, ids, metadata)."""
        self._reading()
        queries = check_vectors(queries, self.config.index.dim, what="query vector")
        return self._search(queries, k, excludes, categories, with_metadata)

    def _search(
        self, queries: np.ndarray, k: int, excludes: PerQuery, categories: PerQuery, with_metadata: bool
    ) -> tuple[np.ndarray, ...]:
        threads = self._batch_threads if queries.shape[0] >= C.SHARD_BATCH_MIN_QUERIES else None
        with omp_threads(threads):
            scores, ids = self.index.search(queries, k, excludes, categories)
        if with_metadata:
            return scores, ids, self.index.metadata_of(ids, SEARCH_LEAVES_OUT)
        return scores, ids

    def search_packed(self, request: bytes) -> bytes:
        """search() with its arguments and answer encoded by rayrec.routing.wire (the router's hot path).

        The router has checked and normalised the queries, so they are not checked again.
        """
        self._reading()
        return pack_partial(self._search(*unpack_search(request)))

    def stage(self, source: str | pa.Table, part: int, num_parts: int) -> int:
        """Reads and checks the catalog rows whose ids hash to part (of num_parts), without applying them.

        The router owns the layout, so it says which part this shard holds.
        """
        self._serving()
        return self.staged.read(source, part, num_parts)

    def commit_staged(self, expected: int | None = None) -> int:
        """Applies every staged batch (an upsert each); returns the rows written.

        expected: the rows the load staged here; a replica holding another count (it restarted since, and
        lost them) refuses, so it is marked out of sync and repaired from a peer that committed.
        """
        self._serving()
        held = self.staged.held()
        if expected is not None and held != expected:
            raise ShardUnavailableError(
                f"replica {self.replica} of shard {self.shard_id} holds {held} staged rows, not the {expected} "
                "the load staged (it restarted during the load)"
            )
        written = self.staged.apply()
        if written:
            self.replication.applied()  # the snapshot records it
            self.snapshot()  # a bulk load is made durable by a snapshot, not row by row in the log
        return written

    def stage_batches(self, *batches: ItemBatch) -> int:
        """Stages items copied from other shards (a re-shard); commit_staged applies them."""
        self._serving()
        return self.staged.add(*batches)

    def split(self, num_parts: int) -> ItemBatch | list[ItemBatch]:
        """This shard's live items grouped by their owner among num_parts new shards (a re-shard's copy).

        Called with num_returns=num_parts, so each part is its own object that
        goes straight to the new shard that owns it (one part: the batch itself).
        """
        self._reading()
        parts = split_batch(self.index.live_items(), num_parts)
        return parts if num_parts > 1 else parts[0]

    def retire(self) -> None:
        """Stops answering (a re-shard switched to a new generation); calls after this raise ShardRetiredError.

        Waits for a background snapshot and stops writing to storage, so the
        router can delete this shard's files once the actor is stopped.
        """
        self.retired = True
        self.close()
        self.staged.drop()

    def close(self) -> None:
        """Waits for a background snapshot, then lets go of storage (its writer lock): nothing more is written."""
        self.durability.close()

    def abort_staged(self) -> None:
        """Drops staged rows (a load failed on some shard)."""
        self.staged.drop()

    def upsert(self, ids: list[str], vectors: np.ndarray, metadata: dict[str, list[Any]] | None = None) -> int:
        """ItemIndex.upsert on this shard, durable (with storage) before it returns."""
        self._serving()
        ids, vecs, meta = check_items(ids, vectors, metadata, self.config.index.dim)
        return self.durability.upsert(ids, vecs, meta) if ids else 0

    def delete(self, ids: list[str]) -> int:
        """ItemIndex.delete on this shard, durable (with storage) before it returns."""
        self._serving()
        return self.durability.delete(check_ids(ids))

    def count(self) -> int:
        """Live items on this shard."""
        self._reading()
        return len(self.index)

    def categories(self) -> dict[str, int]:
        """Live items per category on this shard."""
        self._reading()
        return self.index.category_counts()

    def fetch(self, ids: list[str]) -> list[dict[str, Any] | None]:
        """ItemIndex.fetch on this shard."""
        self._reading()
        return self.index.fetch(ids)

    def vectors_of(self, ids: list[str]) -> tuple[np.ndarray, list[bool]]:
        """ItemIndex.vectors_of on this shard."""
        self._reading()
        return self.index.vectors_of(ids)

    def vector_sum(self) -> tuple[np.ndarray, int]:
        """Sum and count of this shard's live vectors (for the catalog mean)."""
        self._reading()
        return self.index.vector_sum()

    def compact(self) -> None:
        """Rebuilds the index without tombstones."""
        self._serving()
        self.index.compact()

    def clear(self) -> None:
        """Removes every item and anything staged."""
        self._serving()
        self.durability.clear()
        self.staged.drop()

    # ----- replicas: sequenced writes, out of sync, repair ------------------
    def write_at(self, seq: int, method: str, args: tuple[Any, ...]) -> tuple[Any, int]:
        """Applies write `method(*args)` (upsert, delete, clear, commit_staged) as the write at position seq.

        The router numbers each shard's writes and sends them to every in-sync replica; seq must follow this
        replica's position (ReplicaState.begin), which travels in the log, so a restarted replica knows it.
        Returns (answer, position).
        """
        self._serving()
        self.replication.begin(seq)
        try:
            answer = getattr(self, method)(*args)
            if self.replication.position < seq:  # it changed nothing (deleted ids that were absent): the position alone
                self.durability.log_position()
        finally:
            self.replication.end()
        return answer, self.replication.position

    def sync_state(self) -> dict[str, Any]:
        """This replica's write position and why it is out of sync (None: in sync)."""
        return {**self.replication.state(), "retired": self.retired}

    def mark_out_of_sync(self, why: str) -> None:
        """The router's word that this replica missed a write a peer applied: no reads until restore_replica."""
        self.replication.mark(why)

    def export_replica(self) -> tuple[pa.Table, bytes | None, dict[str, Any], int]:
        """This replica's whole state and write position, for a lagging peer's restore_replica."""
        self._reading()
        table, blob, info = self.index.export_state()
        return table, blob, info, self.replication.position

    def restore_replica(self, state: tuple[pa.Table, bytes | None, dict[str, Any], int]) -> int:
        """Takes a peer's exported state as this replica's (a repair), durably; back in sync. Returns the position."""
        self._serving()
        self.wait_snapshot()
        table, blob, info, position = state
        self.index.import_state(table, blob, info)
        self.staged.drop()
        self.replication.position = int(position)
        self.snapshot()  # this replica's own storage holds the state before the mark goes
        self.replication.repaired()
        return self.replication.position

    def info(self) -> dict[str, Any]:
        """Id, item and tombstone counts, index kind and readiness, and the Ray node."""
        return {
            "shard_id": self.shard_id,
            "replica": self.replica,
            "items": len(self.index),
            "tombstones": self.index.tombstones,
            "index": self.config.index.factory,
            "index_ready": self.index.index_ready,
            "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
            "durable": self.durability.journal is not None,
            "recovered_rows": self.recovered_rows,
            "generation": self.generation.number,
            "retired": self.retired,
            **self.replication.state(),
        }


ShardActor = ray.remote(Shard)


