"""Data builders and the brute-force truth the unit tests compare against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import settings


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Row-wise x / |x| in float32, computed the way rayrec.validation.check_vectors does."""
    x = np.asarray(x, dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1)[:, None]).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, dim: int, clusters: int = 32) -> np.ndarray:
    """n float32 vectors around `clusters` random centres (what embeddings look like)."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    noise = 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return centres[rng.integers(0, clusters, n)] + noise


def item_ids(n: int, prefix: str = "item") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def brute_force(
    queries: np.ndarray,
    vectors: np.ndarray,
    ids: Sequence[str],
    k: int,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product over the eligible rows (float64 scores).

    Returns (scores (nq, k), ids (nq, k) object), best first, padded with -inf and "".
    """
    ids = np.asarray(ids, dtype=object)
    rows = np.arange(len(ids)) if eligible is None else np.flatnonzero(eligible)
    sims = queries.astype(np.float64) @ vectors[rows].astype(np.float64).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    nq, width = queries.shape[0], order.shape[1]
    scores = np.full((nq, k), -np.inf)
    out = np.full((nq, k), "", dtype=object)
    scores[:, :width] = np.take_along_axis(sims, order, axis=1)
    out[:, :width] = ids[rows][order]
    return scores, out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true (non-empty) ids found per query."""
    shares = []
    for got, want in zip(found, truth):
        want_set = {w for w in want if w != ""}
        shares.append(len(want_set & set(got)) / len(want_set))
    return float(np.mean(shares))


def hypothesis_settings(max_examples: int) -> settings:
    """Modest hypothesis settings that write no .hypothesis/ example database."""
    return settings(max_examples=max_examples, deadline=None, database=None)


def assert_equals_brute_force(
    scores: np.ndarray,
    found: np.ndarray,
    queries: np.ndarray,
    vectors: np.ndarray,
    ids: Sequence[str],
    k: int,
    eligible: np.ndarray | None = None,
    atol: float = 1e-5,
) -> None:
    """Asserts a search answered exactly: the brute-force ids in the brute-force order, scores to atol.

    The one latitude is among near-ties: where two eligible items score within atol
    of each other, float32 rounding may order them either way, so the found item
    is accepted in that slot if it is eligible and truly scores what the slot holds.
    """
    want_scores, want_ids = brute_force(queries, vectors, ids, k, eligible)
    np.testing.assert_allclose(scores, want_scores.astype(np.float32), rtol=0, atol=atol)
    row_of = {item: r for r, item in enumerate(ids)}
    expected = want_ids.copy()
    for q, j in zip(*np.nonzero(found != want_ids)):
        r = row_of.get(found[q, j])
        if r is None or (eligible is not None and not eligible[r]):
            continue
        true_score = float(queries[q].astype(np.float64) @ vectors[r].astype(np.float64))
        if abs(true_score - want_scores[q, j]) <= atol:
            expected[q, j] = found[q, j]
    np.testing.assert_array_equal(found, expected)
    for row in found:
        filled = [item for item in row if item != ""]
        assert len(set(filled)) == len(filled), f"an item came back twice: {row}"


def eligible_mask(
    ids: list[str], cats: np.ndarray, exclude: list[str] | None, categories: list[str] | None
) -> np.ndarray:
    """Rows a query may return: not excluded, and in one of the categories (None: any)."""
    mask = np.ones(len(ids), dtype=bool)
    if exclude:
        mask &= ~np.isin(np.array(ids, dtype=object), exclude)
    if categories is not None:
        mask &= np.isin(np.asarray(cats, dtype=object), categories)
    return mask
