"""The faiss index over one shard's item rows: faiss ids are row numbers, added in order, trained when it can be."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from rayrec.config import IndexConfig
from rayrec.index import faiss_kinds
from rayrec.index.item_rows import ItemRows


class RowIndex:
    """A faiss index of one ItemRows' vectors; rows it has not added yet are searched exactly by the caller."""

    def __init__(self, config: IndexConfig, build_threads: int | None = None) -> None:
        self.config = config
        self.build_threads = build_threads
        self.faiss = self._new()
        self.indexed = 0  # rows already added to the faiss index

    def _new(self) -> faiss.Index:
        cfg = self.config
        return faiss_kinds.new_index(cfg.dim, cfg.factory, cfg.ef_search, cfg.nprobe)

    def ready(self, rows: ItemRows) -> bool:
        """Whether it is trained and holds every used row (an untrained IVF is searched exactly instead)."""
        return bool(self.faiss.is_trained) and self.indexed == rows.n

    @property
    def is_hnsw(self) -> bool:
        return faiss_kinds.is_hnsw(self.faiss)

    def sync(self, rows: ItemRows) -> None:
        """Trains the index when it needs and can, then adds rows not yet indexed."""
        with faiss_kinds.omp_threads(self.build_threads):
            if not self.faiss.is_trained:
                live = rows.live()
                need, most = faiss_kinds.train_sizes(self.faiss)
                if live.size < need:
                    return  # too few vectors to train: searched exactly until then
                rng = np.random.default_rng(0)
                sample = rng.choice(live, size=min(live.size, most), replace=False)
                self.faiss.train(rows.vectors[np.sort(sample)])
            if self.indexed < rows.n:
                self.faiss.add(rows.vectors[self.indexed : rows.n])
                self.indexed = rows.n

    def rebuild(self, rows: ItemRows) -> None:
        """Indexes rows afresh (they were just compacted)."""
        if self.faiss.is_trained and faiss_kinds.ivf_of(self.faiss) is not None:
            index = faiss.clone_index(self.faiss)  # keep the trained coarse quantizer; only the lists are rebuilt
            index.reset()
        else:
            index = self._new()
        self.faiss = index
        self.indexed = 0
        self.sync(rows)

    def search(
        self, q: np.ndarray, want: int, keep: np.ndarray | None, selectivity: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """faiss's top-want of q over the rows set in the bitmap keep (None: every row).

        selectivity: the share of rows keep lets through, which widens efSearch / nprobe.
        """
        selector = None if keep is None else faiss.IDSelectorBitmap(keep.size, faiss.swig_ptr(keep))
        cfg = self.config
        params = faiss_kinds.search_params(self.faiss, cfg.ef_search, cfg.nprobe, selector, selectivity)
        return self.faiss.search(q, want, params=params)  # the selector points into keep, held by this frame

    # ----- snapshots --------------------------------------------------------
    def export_state(self) -> tuple[bytes | None, dict[str, Any]]:
        """The index bytes and what restore() checks them by.

        A flat index is left out (rebuilt from the vectors in a memcpy); others are
        kept whole, so recovery never retrains or rebuilds a graph.
        """
        blob = None if isinstance(self.faiss, faiss.IndexFlat) else faiss.serialize_index(self.faiss).tobytes()
        info = {
            "indexed": self.indexed if blob is not None else 0,
            "dim": self.config.dim,
            "factory": self.config.factory,
        }
        return blob, info

    def restore(self, blob: bytes | None, info: dict[str, Any]) -> None:
        """Takes exported index bytes, when there are some of this config's kind (else it stays as it is)."""
        same_kind = info.get("dim") == self.config.dim and info.get("factory") == self.config.factory
        if blob is not None and same_kind:
            index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
            faiss_kinds.set_knobs(index, self.config.ef_search, self.config.nprobe)
            self.faiss = index
            self.indexed = int(info["indexed"])
