"""The plain Shard (no Ray): two-phase loads, and sharded search equal to one exact search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rayrec.actors.shard import Shard

from rayrec.catalogs.catalog import items_table
from rayrec.config import IndexConfig, RayrecConfig
from rayrec.exceptions import DimensionMismatchError, InvalidInputError
from rayrec.hashing import partition_of
from rayrec.routing.topk import SearchResult, merge_topk

from ._helpers import assert_equals_brute_force, clustered, eligible_mask, hypothesis_settings, item_ids, normalise_rows

DIM = 16
CATEGORIES = np.array(["a", "b", "c"], dtype=object)


def _config(num_shards: int = 2, factory: str = "Flat") -> RayrecConfig:
    return RayrecConfig(index=IndexConfig(dim=DIM, factory=factory), num_shards=num_shards)


def _catalog(n: int, seed: int) -> tuple[list[str], np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    return item_ids(n), clustered(rng, n, DIM, clusters=8), list(rng.choice(CATEGORIES, n))


def _write(path: Path, ids: list[str], vectors: np.ndarray, cats: list[str]) -> str:
    pq.write_table(items_table(ids, vectors, {"category": cats}), path, row_group_size=64)
    return str(path)


def test_two_phase_load_of_a_parquet_file(tmp_path: Path) -> None:
    ids, vectors, cats = _catalog(300, seed=1)
    path = _write(tmp_path / "items.parquet", ids, vectors, cats)
    shards = [Shard(_config(3), s) for s in range(3)]

    staged = [shard.stage(path, s, 3) for s, shard in enumerate(shards)]
    assert sum(staged) == 300 and all(n > 0 for n in staged)
    assert [shard.count() for shard in shards] == [0, 0, 0], "staging applies nothing"

    assert [shard.commit_staged() for shard in shards] == staged
    assert [shard.count() for shard in shards] == staged
    assert shards[0].commit_staged() == 0, "a commit empties the stage"
    for s, shard in enumerate(shards):
        for item in ids:
            assert (item in shard.index) == (partition_of(item, 3) == s)
    # Vectors and metadata arrived intact.
    pos = [ids.index(i) for i in ids if partition_of(i, 3) == 1][:20]
    records = shards[1].fetch([ids[p] for p in pos])
    np.testing.assert_allclose(np.stack([r["vector"] for r in records]), normalise_rows(vectors[pos]), atol=1e-6)
    assert [r["category"] for r in records] == [cats[p] for p in pos]
    info = shards[1].info()
    node_id = info.pop("node_id")  # None here, unless another test tier left a Ray running in this process
    assert node_id is None or isinstance(node_id, str)
    assert info == {
        "shard_id": 1, "replica": 0, "items": staged[1], "tombstones": 0, "index": "Flat", "index_ready": True,
        "durable": False, "recovered_rows": 0, "generation": 0, "retired": False, "position": 0, "out_of_sync": None,
    }


def test_abort_leaves_the_shard_as_it_was(tmp_path: Path) -> None:
    ids, vectors, cats = _catalog(100, seed=2)
    path = _write(tmp_path / "items.parquet", ids, vectors, cats)
    shard = Shard(_config(), 0)
    assert shard.stage(path, 0, 1) == 100
    shard.abort_staged()
    assert shard.commit_staged() == 0 and shard.count() == 0

    shard.upsert(["kept"], np.ones((1, DIM)))
    shard.stage(path, 0, 1)
    shard.abort_staged()
    assert shard.commit_staged() == 0 and shard.count() == 1 and "kept" in shard.index


def test_staging_a_bad_file_raises_and_applies_nothing(tmp_path: Path) -> None:
    ids, vectors, cats = _catalog(100, seed=3)
    mine = next(p for p, i in enumerate(ids) if partition_of(i, 2) == 0)
    vectors[mine, 3] = np.nan
    path = _write(tmp_path / "bad.parquet", ids, vectors, cats)
    shard = Shard(_config(), 0)
    with pytest.raises(InvalidInputError, match=rf"row {mine} \(item '{ids[mine]}'\) has NaN or infinite values"):
        shard.stage(path, 0, 2)
    assert shard.commit_staged() == 0 and shard.count() == 0

    no_ids = tmp_path / "no_ids.parquet"
    pq.write_table(items_table(ids, vectors, {"category": cats}).drop(["item_id"]), no_ids)
    with pytest.raises(InvalidInputError, match="no 'item_id' column"):
        shard.stage(str(no_ids), 1, 2)
    with pytest.raises(InvalidInputError, match="does not exist"):
        shard.stage(str(tmp_path / "missing.parquet"), 0, 2)
    assert shard.commit_staged() == 0 and shard.count() == 0


def test_a_failed_stage_keeps_earlier_batches_until_aborted(tmp_path: Path) -> None:
    ids, vectors, cats = _catalog(60, seed=4)
    good = _write(tmp_path / "good.parquet", ids, vectors, cats)
    bad = pa.table({"item_id": ["x", None], "embedding": pa.array([[1.0] * DIM] * 2, pa.list_(pa.float32(), DIM))})
    shard = Shard(_config(), 0)
    assert shard.stage(good, 0, 1) == 60
    with pytest.raises(InvalidInputError, match="row 1 has no 'item_id'"):
        shard.stage(bad, 0, 1)
    assert shard.count() == 0
    shard.abort_staged()
    assert shard.commit_staged() == 0 and shard.count() == 0


def test_stage_rejects_a_part_outside_the_layout() -> None:
    shard = Shard(_config(), 0)
    table = items_table(["a"], np.ones((1, DIM)))
    with pytest.raises(InvalidInputError, match=r"part 2 is outside 0..1"):
        shard.stage(table, 2, 2)
    with pytest.raises(InvalidInputError, match=r"part -1 is outside 0..1"):
        shard.stage(table, -1, 2)


def test_search_checks_and_normalises_queries() -> None:
    shard = Shard(_config(), 0)
    shard.upsert(["x", "y"], [[1.0] + [0.0] * (DIM - 1), [0.0, 1.0] + [0.0] * (DIM - 2)], {"category": ["a", "b"]})
    scores, ids, meta = shard.search(np.array([[5.0] + [0.0] * (DIM - 1)]), 3, with_metadata=True)
    np.testing.assert_array_equal(ids, [["x", "y", ""]])
    np.testing.assert_allclose(scores, np.array([[1.0, 0.0, -np.inf]], np.float32), atol=1e-6)
    assert meta[0, 0]["category"] == "a" and meta[0, 1]["category"] == "b" and meta[0, 2] is None
    with pytest.raises(DimensionMismatchError, match="query vector dimension is 3"):
        shard.search(np.ones((1, 3)), 2)
    assert shard.delete(["x", "zz"]) == 1 and shard.count() == 1
    np.testing.assert_allclose(shard.vector_sum()[0], [0.0, 1.0] + [0.0] * (DIM - 2), atol=1e-6)
    shard.clear()
    assert shard.count() == 0


@hypothesis_settings(12)
@given(num_shards=st.integers(1, 6), k=st.integers(1, 40), seed=st.integers(0, 2**16))
@example(num_shards=1, k=17, seed=256)  # items 172 and 303 tie to 1e-7 in 17th place
def test_sharded_search_equals_one_exact_search(num_shards: int, k: int, seed: int) -> None:
    n = 400
    ids, vectors, cats = _catalog(n, seed)
    table = items_table(ids, vectors, {"category": cats})
    shards = [Shard(_config(num_shards), s) for s in range(num_shards)]
    for s, shard in enumerate(shards):
        shard.stage(table, s, num_shards)
        shard.commit_staged()
    assert sum(shard.count() for shard in shards) == n

    rng = np.random.default_rng(seed)
    queries = normalise_rows(rng.standard_normal((4, DIM)))
    excludes = [None, [ids[i] for i in rng.choice(n, 100, replace=False)], None, [ids[0]]]
    categories = [None, None, ["b"], ["a", "c"]]
    parts = [shard.search(queries, k, excludes, categories, with_metadata=True) for shard in shards]
    scores, found, meta = merge_topk(parts, k)

    vectors_n = normalise_rows(vectors)
    for q in range(len(queries)):
        eligible = eligible_mask(ids, cats, excludes[q], categories[q])
        assert_equals_brute_force(scores[q : q + 1], found[q : q + 1], queries[q : q + 1], vectors_n, ids, k, eligible)
        for item, record in zip(found[q], meta[q]):  # metadata travelled with its id
            assert (item == "" and record is None) or record["category"] == cats[ids.index(item)]

    result = SearchResult.from_arrays(scores, found, meta)
    assert [len(r) for r in result.ids] == [min(k, n), min(k, n - 100),
                                            min(k, int((np.asarray(cats, dtype=object) == "b").sum())), k]


def test_search_results_leave_out_the_kept_text_and_records_by_id_keep_it() -> None:
    ids, vectors, cats = _catalog(40, seed=7)
    shard = Shard(_config(1), 0)
    texts = [f"the text of {i}" for i in ids]
    shard.upsert(ids, vectors, {"category": cats, "title": [f"T{i}" for i in ids], "text": texts})
    scores, found, metadata = shard.search(vectors[:2], 3, with_metadata=True)
    for q in range(2):
        for pos, item in enumerate(found[q]):
            n = ids.index(item)
            assert metadata[q][pos] == {"category": cats[n], "title": f"T{item}"}  # no text
    record = shard.fetch([ids[5]])[0]
    assert record["text"] == texts[5] and record["title"] == f"T{ids[5]}"
