"""The item vectors a user actor keeps for feedback, so an event on an item it has seen needs no shard call.

Exact under item writes: the router drops a written item from every user actor's cache (forget) before it
acknowledges the write, and a vector read from a shard is kept only if no forget came while it was read
(an epoch taken before the read): a read that raced a write is used once, never kept.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np


class ItemVectorCache:
    """Least recently used item vectors, each kept at most ttl_s."""

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.ttl_s, self._clock = size, ttl_s, clock
        self._vectors: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()
        self.epoch = 0  # bumped by every forget
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, item_id: str) -> np.ndarray | None:
        """The kept vector of item_id, or None (never kept, forgotten, or older than ttl_s)."""
        kept = self._vectors.get(item_id)
        if kept is None or self._clock() - kept[1] >= self.ttl_s:
            if kept is not None:
                del self._vectors[item_id]
            self.misses += 1
            return None
        self._vectors.move_to_end(item_id)
        self.hits += 1
        return kept[0]

    def put(self, item_id: str, vector: np.ndarray, epoch: int) -> bool:
        """Keeps a vector read from its shard since `epoch` (self.epoch before the read); False if a forget
        came meanwhile (the read may predate a write), or the cache holds nothing."""
        if epoch != self.epoch or self.size <= 0:
            return False
        self._vectors[item_id] = (vector, self._clock())
        self._vectors.move_to_end(item_id)
        while len(self._vectors) > self.size:
            self._vectors.popitem(last=False)
        return True

    def forget(self, item_ids: Iterable[str] | None) -> int:
        """Drops the given items (None: every item); returns how many were kept."""
        self.epoch += 1
        if item_ids is None:
            dropped = len(self._vectors)
            self._vectors.clear()
            return dropped
        return sum(self._vectors.pop(i, None) is not None for i in item_ids)
