"""Stable placement of ids on partitions, the same in every process and run."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

import numpy as np

from rayrec import constants as C


@functools.lru_cache(maxsize=C.STABLE_HASH_CACHE_SIZE)
def stable_hash(key: str) -> int:
    """A 64-bit hash of a string that never changes between processes (unlike hash()). Kept for the most
    recent keys: the same item and user ids come back in every request (a user's excluded items, say)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


def partition_of(key: str, n: int) -> int:
    """The partition (0..n-1) that owns key."""
    if n <= 0:
        raise ValueError(f"number of partitions must be >= 1, got {n}")
    return stable_hash(key) % n


def partitions_of(keys: Iterable[str], n: int) -> np.ndarray:
    """partition_of for many keys, as an int64 array."""
    if n <= 0:
        raise ValueError(f"number of partitions must be >= 1, got {n}")
    return np.fromiter((stable_hash(k) % n for k in keys), dtype=np.int64)


def group_by_partition(keys: list[str], n: int) -> dict[int, list[int]]:
    """Positions of keys grouped by owning partition (only non-empty groups)."""
    if n <= 0:
        raise ValueError(f"number of partitions must be >= 1, got {n}")
    groups: dict[int, list[int]] = {}
    for pos, key in enumerate(keys):
        groups.setdefault(stable_hash(key) % n, []).append(pos)
    return groups
