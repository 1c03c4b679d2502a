"""The plain parts of re-sharding: splitting a shard's items by their new owner, and the write gate.

A re-shard copies every item into a new generation of shards while reads go on
against the old one; writes wait at the gate for the copy, so the copy is
exact, and resume against the new generation once it is switched in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np

from rayrec.catalogs.catalog import ItemBatch
from rayrec.hashing import partitions_of


def split_batch(batch: ItemBatch, num_parts: int) -> list[ItemBatch]:
    """The rows of batch grouped by the part (of num_parts) their id hashes to, in row order.

    Args:
        batch: items with ids, vectors and metadata columns.
        num_parts: the new number of shards.

    Returns:
        num_parts batches; part j holds exactly the ids with partition_of(id, num_parts) == j.
    """
    if num_parts < 1:
        raise ValueError(f"num_parts must be at least 1, got {num_parts}")
    parts = partitions_of(batch.ids, num_parts) if batch.ids else np.empty(0, dtype=np.int64)
    out = []
    for part in range(num_parts):
        rows = np.flatnonzero(parts == part)
        out.append(
            ItemBatch(
                ids=[batch.ids[r] for r in rows],
                vectors=batch.vectors[rows],
                metadata={name: [col[r] for r in rows] for name, col in batch.metadata.items()},
            )
        )
    return out


class WriteGate:
    """Writes pass concurrently while the gate is open; close() waits for those inside, then holds new ones.

    One closer at a time. Used by the router: a re-shard closes the gate for its
    copy and switch, so no write lands on a generation being copied or retired.
    """

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._inside = 0
        self._closer = asyncio.Lock()

    @property
    def inside(self) -> int:
        """Writes in progress."""
        return self._inside

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        """Holds one write: waits while the gate is closed."""
        while not self._open.is_set():
            await self._open.wait()
        self._inside += 1  # no await between the check and here: a closer cannot slip in
        self._idle.clear()
        try:
            yield
        finally:
            self._inside -= 1
            if self._inside == 0:
                self._idle.set()

    async def hold(self) -> None:
        """Closes the gate and waits until no write is inside; it stays closed until release().

        For a holder whose end comes in another call (a model swap holds writes from its staging to its
        switch or abort); within one call, use `async with gate.closed()`. One holder at a time: a second
        hold() waits for release(). Cancelled while waiting, it leaves the gate as it found it.
        """
        await self._closer.acquire()
        self._open.clear()
        try:
            await self._idle.wait()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Reopens the gate a hold() closed; held writes go on."""
        if not self._closer.locked():
            raise RuntimeError("release() of a write gate that is not held")
        self._open.set()
        self._closer.release()

    @property
    def held(self) -> bool:
        return self._closer.locked()

    @asynccontextmanager
    async def closed(self) -> AsyncIterator[None]:
        """Closes the gate, waits until no write is inside, and reopens it on exit (hold() ... release())."""
        await self.hold()
        try:
            yield
        finally:
            self.release()
