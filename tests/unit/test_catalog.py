"""Catalog reading: round trips through Arrow and Parquet, and errors that name the bad row."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayrec.catalogs.catalog import items_table, iter_items
from rayrec.exceptions import InvalidInputError

from ._helpers import normalise_rows

DIM = 4


def _table(rows: list[tuple], emb_type: pa.DataType | None = None, id_type: pa.DataType = pa.string()) -> pa.Table:
    """A catalog table from (item_id, embedding) rows, embedding as a list type of choice."""
    ids = [r[0] for r in rows]
    embs = [r[1] for r in rows]
    emb_type = emb_type or pa.list_(pa.float32())
    return pa.table({"item_id": pa.array(ids, id_type), "embedding": pa.array(embs, emb_type)})


def _read(source: str | pa.Table, dim: int = DIM, keep=None) -> tuple[list[str], np.ndarray, dict]:
    batches = list(iter_items(source, dim, keep=keep))
    ids = [i for b in batches for i in b.ids]
    vectors = np.vstack([b.vectors for b in batches]) if batches else np.empty((0, dim), np.float32)
    meta: dict[str, list] = {}
    for b in batches:
        for name, col in b.metadata.items():
            meta.setdefault(name, []).extend(col)
    return ids, vectors, meta


def test_items_table_round_trip() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((5, DIM)).astype(np.float32)
    ids = [f"i{n}" for n in range(5)]
    table = items_table(ids, vectors, {"category": ["a", None, "b", "a", "c"], "brand": list("vwxyz")})
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    got_ids, got_vectors, meta = _read(table)
    assert got_ids == ids
    np.testing.assert_allclose(got_vectors, normalise_rows(vectors), rtol=0, atol=1e-6)
    assert meta == {"category": ["a", None, "b", "a", "c"], "brand": list("vwxyz")}


def test_parquet_round_trip_with_keep_across_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 50
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    ids = [f"i{k}" for k in range(n)]
    path = tmp_path / "catalog.parquet"
    pq.write_table(items_table(ids, vectors, {"category": [f"c{k % 3}" for k in range(n)]}), path, row_group_size=7)

    got_ids, got_vectors, meta = _read(str(path))
    assert got_ids == ids
    np.testing.assert_allclose(got_vectors, normalise_rows(vectors), rtol=0, atol=1e-6)
    assert meta["category"] == [f"c{k % 3}" for k in range(n)]

    even = lambda batch_ids: np.array([int(i[1:]) % 2 == 0 for i in batch_ids])  # noqa: E731
    got_ids, got_vectors, meta = _read(str(path), keep=even)
    assert got_ids == ids[::2]
    np.testing.assert_allclose(got_vectors, normalise_rows(vectors[::2]), rtol=0, atol=1e-6)
    assert meta["category"] == [f"c{k % 3}" for k in range(0, n, 2)]

    assert _read(str(path), keep=lambda batch_ids: np.zeros(len(batch_ids), bool))[0] == []


def test_integer_ids_and_float64_lists_are_accepted() -> None:
    table = _table([(10, [1.0, 0, 0, 0]), (11, [0, 2.0, 0, 0])], emb_type=pa.list_(pa.float64()), id_type=pa.int64())
    ids, vectors, meta = _read(table)
    assert ids == ["10", "11"] and meta == {}
    np.testing.assert_array_equal(vectors, np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32))


def test_dictionary_and_large_types_are_accepted() -> None:
    table = pa.table(
        {
            "item_id": pa.array(["a", "b", "c"]).dictionary_encode(),
            "embedding": pa.array([[2.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 3.0, 0]], pa.large_list(pa.float32())),
            "category": pa.array(["x", "y", "x"]).dictionary_encode(),
            "brand": pa.array(["p", None, "q"], pa.large_string()),
            "price": [1, 2, 3],  # not a string column: not metadata
        }
    )
    ids, vectors, meta = _read(table, keep=lambda batch_ids: np.array([i != "b" for i in batch_ids]))
    assert ids == ["a", "c"]
    np.testing.assert_array_equal(vectors, np.array([[1, 0, 0, 0], [0, 0, 1, 0]], np.float32))
    assert meta == {"category": ["x", "x"], "brand": ["p", "q"]}


# ----- errors -----------------------------------------------------------------
GOOD = [0.5, 0.5, 0.5, 0.5]
LIST = pa.list_(pa.float32())


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            pa.table({"id": ["a"], "embedding": pa.array([GOOD], LIST)}),
            r"no 'item_id' column \(columns: \['id', 'embedding'\]\)",
        ),
        (
            pa.table({"item_id": ["a"], "vec": pa.array([GOOD], LIST)}),
            "no 'embedding' column; a catalog needs item vectors as a fixed-size list of 4 float32",
        ),
        (
            pa.table({"item_id": ["a"], "embedding": pa.array([[1, 2, 3, 4]], pa.list_(pa.int32()))}),
            "'embedding' values must be floats, got int32",
        ),
        (pa.table({"item_id": ["a"], "embedding": ["1,2,3,4"]}), "'embedding' must be a list of floats, got string"),
        (
            pa.table({"item_id": pa.array([1.5]), "embedding": pa.array([GOOD], LIST)}),
            "'item_id' must be strings or integers, got double",
        ),
        (
            pa.table({"item_id": ["a"], "embedding": pa.array([GOOD], LIST), "category": [3]}),
            "'category' must be strings, got int64",
        ),
    ],
)
def test_schema_errors(table: pa.Table, message: str) -> None:
    with pytest.raises(InvalidInputError, match=f"catalog table: {message}"):
        list(iter_items(table, DIM))


def test_fixed_size_dimension_mismatch_is_caught_from_the_schema() -> None:
    table = items_table(["a", "b"], np.ones((2, 8)))
    with pytest.raises(InvalidInputError, match="'embedding' holds 8-d vectors, but the index holds 4-d vectors"):
        list(iter_items(table, DIM))


def test_wrong_dimension_row_is_named() -> None:
    table = _table([("a", GOOD), ("b", GOOD), ("c", [1.0, 2.0, 3.0]), ("d", [1.0] * 5)])
    with pytest.raises(InvalidInputError, match=r"row 2 \(item 'c'\) has a 3-d embedding, but the index holds 4-d"):
        list(iter_items(table, DIM))


def test_nan_embedding_row_is_named() -> None:
    table = _table([("a", GOOD), ("b", [0.1, float("nan"), 0.2, 0.3])])
    with pytest.raises(InvalidInputError, match=r"row 1 \(item 'b'\) has NaN or infinite values in 'embedding'"):
        list(iter_items(table, DIM))
    table = _table([("a", [float("inf"), 0, 0, 0])])
    with pytest.raises(InvalidInputError, match=r"row 0 \(item 'a'\) has NaN or infinite values"):
        list(iter_items(table, DIM))


def test_zero_embedding_row_is_named() -> None:
    table = _table([("a", GOOD), ("b", GOOD), ("z", [0.0, 0.0, 0.0, 0.0])])
    with pytest.raises(InvalidInputError, match=r"row 2 \(item 'z'\) has an all-zero embedding"):
        list(iter_items(table, DIM))


def test_null_and_empty_ids_are_named() -> None:
    with pytest.raises(InvalidInputError, match="catalog table: row 1 has no 'item_id'"):
        list(iter_items(_table([("a", GOOD), (None, GOOD)]), DIM))
    with pytest.raises(InvalidInputError, match="catalog table: row 2 has an empty 'item_id'"):
        list(iter_items(_table([("a", GOOD), ("b", GOOD), ("", GOOD)]), DIM))
    with pytest.raises(InvalidInputError, match="row 0 has an empty 'item_id'"):
        list(iter_items(_table([("   ", GOOD)]), DIM))


@pytest.mark.parametrize("bad,needle", [("a\x00", "'\\x00' at position 1"), ("a/b", "'/' at position 1"),
                                        ("x" * 513, "513 characters long; at most 512")])
def test_ids_with_control_characters_slashes_or_too_long_are_refused(bad, needle) -> None:
    with pytest.raises(InvalidInputError, match=f"row 1 has a bad 'item_id'.*{re.escape(needle)}"):
        list(iter_items(_table([("a", GOOD), (bad, GOOD)]), DIM))


def test_null_embedding_and_null_values() -> None:
    with pytest.raises(InvalidInputError, match=r"row 1 \(item 'b'\) has no 'embedding'"):
        list(iter_items(_table([("a", GOOD), ("b", None)]), DIM))
    with pytest.raises(InvalidInputError, match="'embedding' contains null values"):
        list(iter_items(_table([("a", GOOD), ("b", [0.1, None, 0.2, 0.3])]), DIM))


def test_bad_rows_are_named_by_their_row_in_the_whole_catalog() -> None:
    """Rows are counted across batches, not from the start of each batch."""
    good = _table([(f"i{k}", GOOD) for k in range(3)])
    bad_nan = _table([("i3", GOOD), ("i4", [float("nan")] * 4), ("i5", GOOD)])
    with pytest.raises(InvalidInputError, match=r"row 4 \(item 'i4'\) has NaN"):
        list(iter_items(pa.concat_tables([good, bad_nan]), DIM))
    more = _table([(f"i{k}", GOOD) for k in range(3, 6)])
    bad_dim = _table([("i6", GOOD), ("i7", GOOD), ("i8", [1.0])])
    with pytest.raises(InvalidInputError, match=r"row 8 \(item 'i8'\) has a 1-d embedding"):
        not_i6_i7 = lambda ids: np.array([i not in ("i6", "i7") for i in ids])  # noqa: E731
        list(iter_items(pa.concat_tables([good, more, bad_dim]), DIM, keep=not_i6_i7))
    bad_id = _table([("i3", GOOD), (None, GOOD)])
    with pytest.raises(InvalidInputError, match="row 4 has no 'item_id'"):
        list(iter_items(pa.concat_tables([good, bad_id]), DIM))


def test_keep_checks_only_kept_vectors_but_every_id() -> None:
    table = _table([("a", GOOD), ("b", [float("nan")] * 4), ("c", GOOD)])
    not_b = lambda ids: np.array([i != "b" for i in ids])  # noqa: E731
    ids, vectors, _ = _read(table, keep=not_b)
    assert ids == ["a", "c"]
    np.testing.assert_allclose(vectors, np.full((2, DIM), 0.5, np.float32), atol=1e-7)
    only_b = lambda ids: np.array([i == "b" for i in ids])  # noqa: E731
    with pytest.raises(InvalidInputError, match=r"row 1 \(item 'b'\) has NaN"):
        _read(table, keep=only_b)
    with pytest.raises(InvalidInputError, match="row 1 has an empty 'item_id'"):
        _read(_table([("a", GOOD), ("", GOOD)]), keep=lambda ids: np.array([i == "a" for i in ids]))


def test_source_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(InvalidInputError, match="catalog file .*nope.parquet' does not exist"):
        list(iter_items(str(missing), DIM))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet")
    with pytest.raises(InvalidInputError, match="catalog file .*garbage.parquet' is not a readable Parquet file"):
        list(iter_items(str(garbage), DIM))
    with pytest.raises(InvalidInputError, match="a catalog is a Parquet path or a pyarrow Table, got dict"):
        list(iter_items({"item_id": ["a"]}, DIM))  # type: ignore[arg-type]
    path = tmp_path / "no_ids.parquet"
    pq.write_table(pa.table({"embedding": pa.array([GOOD], pa.list_(pa.float32()))}), path)
    with pytest.raises(InvalidInputError, match=r"catalog '.*no_ids.parquet': no 'item_id' column"):
        list(iter_items(str(path), DIM))
