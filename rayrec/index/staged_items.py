"""A shard's two-phase bulk load: item rows read and checked first (staged), applied to its ItemIndex together."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rayrec.catalogs.catalog import ItemBatch, iter_items
from rayrec.exceptions import InvalidInputError
from rayrec.hashing import partitions_of
from rayrec.index.item_index import ItemIndex
from rayrec.index.metadata import check_items


class StagedItems:
    """The item batches a load or a re-shard has staged for one ItemIndex and not yet applied."""

    def __init__(self, index: ItemIndex) -> None:
        self.index = index
        self._batches: list[ItemBatch] = []

    def held(self) -> int:
        """Rows staged."""
        return sum(len(b) for b in self._batches)

    def read(self, source: str | pa.Table, part: int, num_parts: int) -> int:
        """Reads and checks the catalog rows whose ids hash to part (of num_parts) and stages them.

        Args:
            source: a catalog file's path or a table (rayrec.catalogs.catalog.iter_items).
            part: which of num_parts this index holds (the router, owning the layout, says).

        Returns:
            The rows staged. Metadata that would bring the index over its field-name limit is refused first.
        """
        if not 0 <= part < num_parts:
            raise InvalidInputError(f"part {part} is outside 0..{num_parts - 1}")

        def mine(ids: list[str]) -> np.ndarray:
            return partitions_of(ids, num_parts) == part

        batches = list(iter_items(source, self.index.config.dim, keep=mine))
        names = {name for b in [*self._batches, *batches] for name, col in (b.metadata or {}).items()
                 if any(v is not None for v in col)}
        self.index.check_room({name: [name] for name in names})  # before anything is applied
        self._batches.extend(batches)
        return sum(len(b) for b in batches)

    def add(self, *batches: ItemBatch) -> int:
        """Checks and stages items copied from other shards (a re-shard); returns the rows staged."""
        for batch in batches:
            ids, vectors, metadata = check_items(batch.ids, batch.vectors, batch.metadata, self.index.config.dim,
                                                 what="copied vector")
            self._batches.append(ItemBatch(ids, vectors, metadata))
        return sum(len(b) for b in batches)

    def apply(self) -> int:
        """Upserts every staged batch into the index, in order, and forgets them; returns the rows written."""
        staged, self._batches = self._batches, []
        return sum(self.index.upsert(b.ids, b.vectors, b.metadata) for b in staged)

    def drop(self) -> None:
        """Forgets every staged batch (a load failed, the shard was retired or repaired)."""
        self._batches = []
