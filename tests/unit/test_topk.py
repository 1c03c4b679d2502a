"""merge_topk against a sort of the concatenation and against one exact search; SearchResult."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayrec.routing.topk import MISSING_ID, MISSING_SCORE, SearchResult, merge_topk

from ._helpers import brute_force, hypothesis_settings, normalise_rows


def _shard_part(scores: np.ndarray, ids: np.ndarray, extra: np.ndarray | None = None) -> list[np.ndarray]:
    part = [scores.astype(np.float32), ids.astype(object)]
    if extra is not None:
        part.append(extra.astype(object))
    return part


def _sorted_concatenation(parts: list[list[np.ndarray]], k: int) -> list[list[tuple]]:
    """Per query, the first k (score, id, *extra) of all shards in shard order, stably sorted."""
    nq = parts[0][0].shape[0]
    out = []
    for q in range(nq):
        rows = [tuple(col[q, j] for col in part) for part in parts for j in range(part[0].shape[1])]
        rows.sort(key=lambda r: -r[0])  # list.sort is stable: ties keep shard order
        rows = rows[:k]
        width = len(parts[0])
        rows += [(MISSING_SCORE, MISSING_ID) + (None,) * (width - 2)] * (k - len(rows))
        out.append(rows)
    return out


@hypothesis_settings(60)
@given(
    nq=st.integers(1, 4),
    widths=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_merge_equals_sorted_concatenation(nq: int, widths: list[int], k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    parts = []
    for s, width in enumerate(widths):
        # Few distinct integer scores, so ties across shards are common.
        scores = -np.sort(-rng.integers(0, 4, size=(nq, width)), axis=1).astype(np.float32)
        ids = np.array([[f"s{s}-q{q}-{j}" for j in range(width)] for q in range(nq)], dtype=object).reshape(nq, width)
        extra = np.array([[{"of": i} for i in row] for row in ids], dtype=object).reshape(nq, width)
        parts.append(_shard_part(scores, ids, extra))
    merged = merge_topk(parts, k)
    expected = _sorted_concatenation(parts, k)

    assert len(merged) == 3
    assert merged[0].dtype == np.float32
    assert all(col.shape == (nq, k) for col in merged)
    for q in range(nq):
        np.testing.assert_array_equal(merged[0][q], np.array([r[0] for r in expected[q]], np.float32))
        np.testing.assert_array_equal(merged[1][q], np.array([r[1] for r in expected[q]], dtype=object))
        assert list(merged[2][q]) == [r[2] for r in expected[q]]
        # Extra arrays travel with their ids.
        for item, meta in zip(merged[1][q], merged[2][q]):
            assert (item == MISSING_ID and meta is None) or meta == {"of": item}


@hypothesis_settings(25)
@given(num_shards=st.integers(1, 7), k=st.integers(1, 30), seed=st.integers(0, 2**32 - 1))
def test_merge_of_exact_shards_equals_one_exact_search(num_shards: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, dim, nq = 120, 8, 5
    vectors = normalise_rows(rng.standard_normal((n, dim)))
    queries = normalise_rows(rng.standard_normal((nq, dim)))
    ids = [f"x{i}" for i in range(n)]
    owner = rng.integers(0, num_shards, n)
    parts = []
    for s in range(num_shards):
        mine = owner == s
        scores, found = brute_force(queries, vectors, ids, k, eligible=mine)
        parts.append(_shard_part(scores, found))
    scores, found = merge_topk(parts, k)
    want_scores, want_ids = brute_force(queries, vectors, ids, k)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores.astype(np.float32), rtol=0, atol=1e-6)


def test_ties_keep_shard_order_then_each_shards_order() -> None:
    a = _shard_part(np.array([[0.5, 0.5, 0.1]]), np.array([["a1", "a2", "a3"]]))
    b = _shard_part(np.array([[0.9, 0.5]]), np.array([["b1", "b2"]]))
    c = _shard_part(np.array([[0.5]]), np.array([["c1"]]))
    scores, ids = merge_topk([a, b, c], 5)
    np.testing.assert_array_equal(ids, [["b1", "a1", "a2", "b2", "c1"]])
    np.testing.assert_array_equal(scores, np.array([[0.9, 0.5, 0.5, 0.5, 0.5]], np.float32))


def test_fewer_than_k_results_are_padded() -> None:
    a = _shard_part(np.array([[0.3], [0.7]]), np.array([["a"], ["b"]]), np.array([["ma"], ["mb"]]))
    b = _shard_part(np.array([[0.6], [MISSING_SCORE]]), np.array([["c"], [MISSING_ID]]), np.array([["mc"], [None]]))
    scores, ids, meta = merge_topk([a, b], 4)
    inf = np.inf
    np.testing.assert_array_equal(scores, np.array([[0.6, 0.3, -inf, -inf], [0.7, -inf, -inf, -inf]], np.float32))
    np.testing.assert_array_equal(ids, np.array([["c", "a", "", ""], ["b", "", "", ""]], dtype=object))
    np.testing.assert_array_equal(meta, np.array([["mc", "ma", None, None], ["mb", None, None, None]], dtype=object))


def test_more_than_k_results_are_cut() -> None:
    a = _shard_part(np.array([[0.9, 0.2]]), np.array([["a", "b"]]))
    b = _shard_part(np.array([[0.8, 0.7]]), np.array([["c", "d"]]))
    scores, ids = merge_topk([a, b], 2)
    np.testing.assert_array_equal(ids, [["a", "c"]])
    np.testing.assert_array_equal(scores, np.array([[0.9, 0.8]], np.float32))


def test_merge_rejects_no_parts_and_disagreeing_shapes() -> None:
    with pytest.raises(ValueError, match="at least one partial result"):
        merge_topk([], 3)
    one_query = _shard_part(np.zeros((1, 2)), np.array([["a", "b"]]))
    two_queries = _shard_part(np.zeros((2, 2)), np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="disagree on the number of queries"):
        merge_topk([one_query, two_queries], 2)
    ragged = [np.zeros((1, 2), np.float32), np.array([["a", "b", "c"]], dtype=object)]
    with pytest.raises(ValueError, match="disagree"):
        merge_topk([ragged], 2)


def test_search_result_keeps_only_filled_slots() -> None:
    scores = np.array([[0.9, 0.4, -np.inf], [-np.inf, -np.inf, -np.inf]], np.float32)
    ids = np.array([["a", "b", ""], ["", "", ""]], dtype=object)
    meta = np.array([[{"category": "x"}, {"category": None, "brand": "z"}, None], [None, None, None]], dtype=object)
    result = SearchResult.from_arrays(scores, ids, meta, failed_shards=[2])
    assert result.ids == [["a", "b"], []]
    assert result.scores == [pytest.approx([0.9, 0.4]), []]
    assert result.partial is True
    assert result.failed_shards == [2]
    assert result.query(0) == [
        {"item_id": "a", "score": pytest.approx(0.9), "category": "x"},
        {"item_id": "b", "score": pytest.approx(0.4), "category": None, "brand": "z"},
    ]
    assert result.query(1) == []
    plain = SearchResult.from_arrays(scores, ids)
    assert plain.partial is False and plain.metadata is None
    assert plain.query(0) == [
        {"item_id": "a", "score": pytest.approx(0.9)},
        {"item_id": "b", "score": pytest.approx(0.4)},
    ]
