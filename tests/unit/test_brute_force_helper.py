"""The brute-force oracle itself: it must reject wrong answers, or the other tests prove nothing."""

from __future__ import annotations

import numpy as np
import pytest

from ._helpers import assert_equals_brute_force, brute_force, recall


def _setup() -> tuple[np.ndarray, np.ndarray, list[str]]:
    vectors = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1], [0.8, 0.6]], np.float32)  # rows 1 and 4 tie
    return np.array([[1, 0]], np.float32), vectors, ["a", "b", "c", "d", "e"]


def test_brute_force_by_hand() -> None:
    query, vectors, ids = _setup()
    scores, found = brute_force(query, vectors, ids, 6, eligible=np.array([True, True, True, False, True]))
    np.testing.assert_array_equal(found, [["a", "b", "e", "c", "", ""]])
    np.testing.assert_allclose(scores, [[1, 0.8, 0.8, 0.6, -np.inf, -np.inf]], atol=1e-7)


def test_oracle_accepts_right_answers_and_tied_swaps() -> None:
    query, vectors, ids = _setup()
    scores = np.array([[1, 0.8, 0.8]], np.float32)
    assert_equals_brute_force(scores, np.array([["a", "b", "e"]], dtype=object), query, vectors, ids, 3)
    assert_equals_brute_force(scores, np.array([["a", "e", "b"]], dtype=object), query, vectors, ids, 3)


def test_oracle_rejects_wrong_answers() -> None:
    query, vectors, ids = _setup()
    with pytest.raises(AssertionError):  # untied swap
        assert_equals_brute_force(
            np.array([[0.8, 1, 0.8]], np.float32), np.array([["b", "a", "e"]], dtype=object), query, vectors, ids, 3
        )
    with pytest.raises(AssertionError):  # right scores, but an excluded item
        eligible = np.array([True, True, True, True, False])
        assert_equals_brute_force(
            np.array([[1, 0.8, 0.6]], np.float32),
            np.array([["a", "e", "c"]], dtype=object),
            query, vectors, ids, 3, eligible,
        )
    with pytest.raises(AssertionError):  # an item twice
        assert_equals_brute_force(
            np.array([[1, 0.8, 0.8]], np.float32), np.array([["a", "b", "b"]], dtype=object), query, vectors, ids, 3
        )
    with pytest.raises(AssertionError):  # a missing slot
        assert_equals_brute_force(
            np.array([[1, 0.8, -np.inf]], np.float32), np.array([["a", "b", ""]], dtype=object), query, vectors, ids, 3
        )


def test_recall_by_hand() -> None:
    truth = np.array([["a", "b"], ["c", ""]], dtype=object)
    assert recall(np.array([["b", "x"], ["c", ""]], dtype=object), truth) == pytest.approx(0.75)
