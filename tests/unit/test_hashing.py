"""Stable placement: the same partition for an id in every process, for any hash seed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayrec.hashing import group_by_partition, partition_of, partitions_of, stable_hash

from ._helpers import hypothesis_settings

KEYS = ["item-0", "item-1", "user-42", "", "ünïcødé", "a" * 300, "0", "17"]


def test_stable_hash_is_blake2b_64_little_endian() -> None:
    for key in KEYS:
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
        assert stable_hash(key) == int.from_bytes(digest, "little")
        assert 0 <= stable_hash(key) < 2**64


def test_partitions_identical_in_other_processes_with_other_hash_seeds() -> None:
    here = {n: [partition_of(k, n) for k in KEYS] for n in (1, 2, 3, 7, 64)}
    code = (
        "import json, sys\n"
        "from rayrec.hashing import partition_of, stable_hash\n"
        "keys = json.loads(sys.argv[1])\n"
        "print(json.dumps({'hash': [stable_hash(k) for k in keys], "
        "'parts': {n: [partition_of(k, n) for k in keys] for n in (1, 2, 3, 7, 64)}}))\n"
    )
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(KEYS)], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.returncode == 0, out.stderr
        there = json.loads(out.stdout)
        assert there["hash"] == [stable_hash(k) for k in KEYS]
        assert {int(n): parts for n, parts in there["parts"].items()} == here


@hypothesis_settings(100)
@given(keys=st.lists(st.text(max_size=20), max_size=30), n=st.integers(1, 50))
def test_partition_functions_agree(keys: list[str], n: int) -> None:
    single = [partition_of(k, n) for k in keys]
    assert all(0 <= p < n for p in single)
    many = partitions_of(keys, n)
    assert many.dtype == np.int64
    np.testing.assert_array_equal(many, np.array(single, dtype=np.int64))
    groups = group_by_partition(keys, n)
    assert sorted(pos for positions in groups.values() for pos in positions) == list(range(len(keys)))
    for part, positions in groups.items():
        assert positions == sorted(positions)
        assert all(single[pos] == part for pos in positions)


def test_partitions_are_balanced() -> None:
    keys = [f"item-{i}" for i in range(20_000)]
    counts = np.bincount(partitions_of(keys, 4), minlength=4)
    assert counts.sum() == 20_000
    assert np.all(np.abs(counts - 5_000) < 250), counts  # a few standard deviations (~61)


@pytest.mark.parametrize("n", [0, -3])
def test_partition_count_must_be_positive(n: int) -> None:
    with pytest.raises(ValueError, match="number of partitions must be >= 1"):
        partition_of("a", n)
    with pytest.raises(ValueError, match="number of partitions must be >= 1"):
        partitions_of(["a"], n)


@pytest.mark.parametrize("n", [0, -3])
def test_group_by_partition_rejects_non_positive_counts(n: int) -> None:
    """Like its siblings: n = 0 used to raise ZeroDivisionError, n < 0 gave negative partitions."""
    with pytest.raises(ValueError, match="number of partitions must be >= 1"):
        group_by_partition(["a", "b", "c"], n)
