"""ItemIndex against brute force: exact for Flat, high recall for HNSW/IVF, never an ineligible item."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayrec import constants as C
from rayrec.config import IndexConfig
from rayrec.exceptions import DimensionMismatchError, InvalidInputError
from rayrec.index.item_index import ItemIndex
from rayrec.routing.topk import SearchResult

from ._helpers import (
    assert_equals_brute_force,
    brute_force,
    clustered,
    eligible_mask,
    hypothesis_settings,
    item_ids,
    normalise_rows,
    recall,
)

DIM = 24
APPROXIMATE = {
    # efSearch 256: at the default 64, HNSW through a 10%-selective IDSelector finds only ~80%.
    "HNSW32": IndexConfig(dim=DIM, factory="HNSW32", ef_search=256),
    "IVF16,Flat": IndexConfig(dim=DIM, factory="IVF16,Flat", nprobe=8),
}


@pytest.fixture(params=["exact-subset", "faiss-selector"])
def selector_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Filtered queries either go to exact search over the subset, or through faiss with an IDSelector."""
    if request.param == "faiss-selector":
        monkeypatch.setattr(C, "EXACT_SUBSET_MAX_ROWS", 0)
    return request.param


def _filled(index: ItemIndex, n: int, seed: int, categories: list[str | None] | None = None):
    rng = np.random.default_rng(seed)
    vectors = clustered(rng, n, index.config.dim)
    ids = item_ids(n)
    index.upsert(ids, vectors, None if categories is None else {"category": categories})
    return rng, ids, normalise_rows(vectors)


# ----- exact search -----------------------------------------------------------
@pytest.mark.parametrize("nq", [1, 37])  # faiss switches to BLAS at 20 queries
@pytest.mark.parametrize("k", [1, 10, 100])
def test_flat_equals_faiss_index_flat_ip(nq: int, k: int) -> None:
    index = ItemIndex(IndexConfig(dim=DIM, factory="Flat"))
    rng, ids, vectors = _filled(index, 2000, seed=1)
    queries = normalise_rows(rng.standard_normal((nq, DIM)))

    truth = faiss.IndexFlatIP(DIM)
    truth.add(vectors)
    want_scores, want_rows = truth.search(queries, k)
    scores, found = index.search(queries, k)

    np.testing.assert_array_equal(found, np.array(ids, dtype=object)[want_rows])
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)
    assert scores.dtype == np.float32 and found.shape == (nq, k)


def test_flat_with_excludes_and_categories_equals_brute_force(selector_path: str) -> None:
    n = 3000
    rng = np.random.default_rng(2)
    cats = rng.choice(np.array(["books", "games", "music", "toys"], dtype=object), n)
    cats[rng.random(n) < 0.05] = None  # some items have no category
    index = ItemIndex(IndexConfig(dim=DIM, factory="Flat"))
    _, ids, vectors = _filled(index, n, seed=3, categories=list(cats))
    queries = normalise_rows(rng.standard_normal((6, DIM)))
    excludes = [
        None,
        [ids[i] for i in range(0, n, 3)] + ["not-an-item"],
        None,
        [ids[i] for i in range(n) if i % 10],  # 90% excluded
        [],
        [ids[5], ids[6]],
    ]
    categories = [None, None, ["games"], ["books", "toys"], ["no-such-category"], ["music"]]
    k = 15
    scores, found = index.search(queries, k, excludes, categories)

    for q in range(len(queries)):
        eligible = eligible_mask(ids, cats, excludes[q], categories[q])
        assert_equals_brute_force(scores[q : q + 1], found[q : q + 1], queries[q : q + 1], vectors, ids, k, eligible)
    assert (found[4] == "").all() and np.isneginf(scores[4]).all()  # unknown category matches nothing


def test_fewer_eligible_than_k_pads_with_missing() -> None:
    index = ItemIndex(IndexConfig(dim=4, factory="Flat"))
    index.upsert(["a", "b", "c"], [[4, 3, 0, 0], [0, 1, 0, 0], [3, 0, 4, 0]], {"category": ["x", "y", "x"]})
    query = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    scores, found = index.search(query, 5)
    np.testing.assert_array_equal(found, [["a", "c", "b", "", ""]])
    np.testing.assert_allclose(scores, np.array([[0.8, 0.6, 0, -np.inf, -np.inf]], np.float32), atol=1e-6)
    scores, found = index.search(query, 5, categories=[["x"]], excludes=[["a"]])
    np.testing.assert_array_equal(found, [["c", "", "", "", ""]])
    np.testing.assert_allclose(scores, np.array([[0.6, -np.inf, -np.inf, -np.inf, -np.inf]], np.float32), atol=1e-6)


def test_empty_index_and_no_queries() -> None:
    index = ItemIndex(IndexConfig(dim=4, factory="Flat"))
    scores, found = index.search(np.eye(4, dtype=np.float32)[:2], 3)
    assert found.shape == (2, 3) and (found == "").all() and np.isneginf(scores).all()
    index.upsert(["a"], np.ones((1, 4)))
    scores, found = index.search(np.empty((0, 4), np.float32), 3)
    assert scores.shape == (0, 3) and found.shape == (0, 3)


# ----- approximate indexes ----------------------------------------------------
@pytest.mark.parametrize("factory", list(APPROXIMATE))
def test_approximate_recall_and_eligibility(factory: str, selector_path: str) -> None:
    n, k = 3000, 10
    index = ItemIndex(APPROXIMATE[factory])
    rng, ids, vectors = _filled(index, n, seed=4)
    ids_arr = np.array(ids, dtype=object)
    assert index.index_ready
    queries = normalise_rows(clustered(rng, 40, DIM))

    _, found = index.search(queries, k)
    assert recall(found, brute_force(queries, vectors, ids, k)[1]) >= 0.9

    # Deleted items never come back; recall holds over the live ones.
    dead = rng.choice(n, size=300, replace=False)
    assert index.delete(list(ids_arr[dead])) == 300
    live = np.ones(n, dtype=bool)
    live[dead] = False
    _, found = index.search(queries, k)
    assert not np.isin(found, ids_arr[dead]).any()
    assert (found != "").all()
    assert recall(found, brute_force(queries, vectors, ids, k, live)[1]) >= 0.9

    # 90% excluded: still k results, all eligible, close to the truth.
    keep = live & (np.arange(n) % 10 == 0)
    exclude = list(ids_arr[~keep & live])
    _, found = index.search(queries, k, excludes=[exclude] * len(queries))
    assert (found != "").all(), "k eligible items exist, so k must come back"
    assert np.isin(found, ids_arr[keep]).all()
    assert recall(found, brute_force(queries, vectors, ids, k, keep)[1]) >= 0.9


@pytest.mark.parametrize("factory", list(APPROXIMATE))
def test_approximate_category_filter_returns_only_allowed(factory: str, selector_path: str) -> None:
    n, k = 3000, 20
    rng = np.random.default_rng(5)
    cats = np.where(rng.random(n) < 0.1, "rare", "common").astype(object)
    index = ItemIndex(APPROXIMATE[factory])
    _, ids, vectors = _filled(index, n, seed=6, categories=list(cats))
    queries = normalise_rows(clustered(rng, 20, DIM))
    _, found = index.search(queries, k, categories=[["rare"]] * len(queries))
    rare = np.array(ids, dtype=object)[cats == "rare"]
    assert (found != "").all()
    assert np.isin(found, rare).all()
    assert recall(found, brute_force(queries, vectors, ids, k, cats == "rare")[1]) >= 0.9


def test_ivf_probing_too_few_items_falls_back_to_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """nprobe=1 over a 2% category: the probed list holds only a few eligible items, so the
    shard must complete the answer by exact search (k results, equal to brute force)."""
    monkeypatch.setattr(C, "EXACT_SUBSET_MAX_ROWS", 0)
    n, k = 3000, 20
    rng = np.random.default_rng(14)
    cats = np.where(rng.random(n) < 0.02, "rare", "common").astype(object)
    index = ItemIndex(IndexConfig(dim=DIM, factory="IVF16,Flat", nprobe=1))
    _, ids, vectors = _filled(index, n, seed=15, categories=list(cats))
    assert index.index_ready
    queries = normalise_rows(clustered(rng, 20, DIM))
    scores, found = index.search(queries, k, categories=[["rare"]] * len(queries))
    assert (found != "").all()
    assert_equals_brute_force(scores, found, queries, vectors, ids, k, cats == "rare")


def test_ivf_answers_exactly_until_trained() -> None:
    config = IndexConfig(dim=DIM, factory="IVF16,Flat", nprobe=1)
    need = 16 * C.IVF_TRAIN_POINTS_PER_LIST
    index = ItemIndex(config)
    rng = np.random.default_rng(7)
    first = clustered(rng, 100, DIM)
    index.upsert(item_ids(100), first)
    assert not index.index_ready
    queries = normalise_rows(rng.standard_normal((8, DIM)))
    scores, found = index.search(queries, 10)
    assert_equals_brute_force(scores, found, queries, normalise_rows(first), item_ids(100), 10)

    more = clustered(rng, need, DIM)
    index.upsert(item_ids(need, prefix="more"), more)
    assert index.index_ready and len(index) == 100 + need
    _, found = index.search(queries, 10)
    assert (found != "").all()


# ----- writes -----------------------------------------------------------------
def test_deleted_item_is_never_returned(selector_path: str) -> None:
    index = ItemIndex(IndexConfig(dim=DIM, factory="Flat"))
    _, ids, vectors = _filled(index, 500, seed=8)
    target = ids[17]
    assert index.delete([target, "never-existed"]) == 1
    assert index.delete([target]) == 0
    assert target not in index and len(index) == 499 and index.tombstones == 1
    assert index.fetch([target]) == [None]
    # Querying with the deleted item's own vector: it would be first if it were alive.
    scores, found = index.search(vectors[17:18], 499)
    assert target not in set(found[0])
    live = np.array([i != 17 for i in range(500)])
    assert_equals_brute_force(scores, found, vectors[17:18], vectors, ids, 499, live)

    # Later deletes and inserts are seen by the next search (no stale live-row bitmap).
    index.delete([ids[18]])
    index.upsert(["fresh"], vectors[18:19])
    live[18] = False
    _, found = index.search(vectors[18:19], 3)
    assert found[0, 0] == "fresh" and ids[18] not in set(found[0])
    scores, found = index.search(vectors[:5], 10)
    everything = np.vstack([vectors, vectors[18:19]])
    assert_equals_brute_force(scores, found, vectors[:5], everything, ids + ["fresh"], 10, np.append(live, True))


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF16,Flat"])
def test_upsert_same_id_replaces_it(factory: str) -> None:
    index = ItemIndex(IndexConfig(dim=DIM, factory=factory))
    rng, ids, vectors = _filled(index, 1000, seed=9)
    new = rng.standard_normal(DIM).astype(np.float32)
    assert index.upsert([ids[3]], new[None, :]) == 1
    assert index.upsert([ids[3]], new[None, :] * 2) == 1  # same direction, written again
    assert len(index) == 1000 and index.tombstones == 2
    record = index.fetch([ids[3]])[0]
    np.testing.assert_allclose(record["vector"], normalise_rows(new[None, :])[0], rtol=0, atol=1e-6)
    scores, found = index.search(normalise_rows(new[None, :]), 5)
    assert found[0, 0] == ids[3] and list(found[0]).count(ids[3]) == 1
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    # Searched with its old vector, it scores by the new one.
    scores, found = index.search(vectors[3:4], 1000)
    (pos,) = np.flatnonzero(found[0] == ids[3])
    assert scores[0, pos] == pytest.approx(float(vectors[3] @ record["vector"]), abs=1e-5)


def test_duplicate_ids_in_one_batch_keep_the_last() -> None:
    index = ItemIndex(IndexConfig(dim=3, factory="Flat"))
    written = index.upsert(["a", "b", "a"], [[1, 0, 0], [0, 1, 0], [0, 0, 2]], {"category": ["x", "y", "z"]})
    assert written == 2 and len(index) == 2 and index.tombstones == 0
    a = index.fetch(["a"])[0]
    np.testing.assert_array_equal(a["vector"], np.array([0, 0, 1], np.float32))
    assert a["category"] == "z"


def test_bad_batch_writes_nothing() -> None:
    index = ItemIndex(IndexConfig(dim=3, factory="Flat"))
    index.upsert(["a"], [[1, 0, 0]])
    with pytest.raises(InvalidInputError, match="position 1 contains NaN"):
        index.upsert(["b", "c"], [[0, 1, 0], [np.nan, 0, 0]])
    with pytest.raises(InvalidInputError, match="position 0 is all zeros"):
        index.upsert(["b"], [[0, 0, 0]])
    with pytest.raises(DimensionMismatchError, match="dimension is 4"):
        index.upsert(["b"], [[0, 1, 0, 0]])
    with pytest.raises(InvalidInputError, match="got 2 ids but 1 vectors"):
        index.upsert(["b", "c"], [[0, 1, 0]])
    with pytest.raises(InvalidInputError, match="must be a non-empty string"):
        index.upsert([""], [[0, 1, 0]])
    with pytest.raises(InvalidInputError, match="metadata column 'brand' must hold strings"):
        index.upsert(["b"], [[0, 1, 0]], {"brand": [3]})
    with pytest.raises(InvalidInputError, match="must be a list of 1 values, got 2"):
        index.upsert(["b"], [[0, 1, 0]], {"brand": ["p", "q"]})
    with pytest.raises(InvalidInputError, match="'embedding' is reserved"):
        index.upsert(["b"], [[0, 1, 0]], {"embedding": ["p"]})
    assert len(index) == 1 and "b" not in index and index.tombstones == 0
    np.testing.assert_array_equal(index.fetch(["a"])[0]["vector"], np.array([1, 0, 0], np.float32))


def test_integer_ids_are_strings() -> None:
    index = ItemIndex(IndexConfig(dim=2, factory="Flat"))
    index.upsert([7, np.int64(8)], [[1, 0], [0, 1]])
    assert "7" in index and "8" in index
    _, found = index.search(np.array([[0, 1]], np.float32), 1)
    assert found[0, 0] == "8"


# ----- compaction -------------------------------------------------------------
@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
def test_compaction_keeps_results_equal_to_brute_force(factory: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "COMPACT_MIN_ROWS", 1024)  # the default, whatever the environment says
    n = 3000
    config = IndexConfig(dim=DIM, factory=factory, nprobe=16, compact_ratio=0.3)  # nprobe = nlist: exhaustive
    index = ItemIndex(config)
    rng = np.random.default_rng(10)
    cats = list(rng.choice(np.array(["p", "q"], dtype=object), n))
    _, ids, vectors = _filled(index, n, seed=11, categories=cats)
    queries = normalise_rows(clustered(rng, 12, DIM))

    dead = rng.choice(n, size=800, replace=False)  # below both compaction thresholds
    index.delete([ids[i] for i in dead])
    assert index.tombstones == 800
    live = np.ones(n, dtype=bool)
    live[dead] = False
    assert_equals_brute_force(*index.search(queries, 20), queries, vectors, ids, 20, live)

    more = rng.choice(np.flatnonzero(live), size=400, replace=False)  # 1200 dead > 1024 and > 30%
    index.delete([ids[i] for i in more])
    live[more] = False
    assert index.tombstones == 0, "crossing compact_ratio and COMPACT_MIN_ROWS must compact"
    assert len(index) == live.sum()
    assert_equals_brute_force(*index.search(queries, 20), queries, vectors, ids, 20, live)
    if factory != "Flat":
        assert index.index_ready, "compaction keeps the trained IVF quantizer"

    # Metadata and filters still line up with their items after rows moved.
    keep = live & (np.array(cats, dtype=object) == "q")
    scores, found = index.search(queries[:3], 20, categories=[["q"]] * 3)
    assert_equals_brute_force(scores, found, queries[:3], vectors, ids, 20, keep)
    alive_ids = [ids[i] for i in np.flatnonzero(live)[:50]]
    assert [r["category"] for r in index.fetch(alive_ids)] == [cats[i] for i in np.flatnonzero(live)[:50]]

    # An explicit compact() of a clean index changes nothing.
    before = index.search(queries, 20)
    index.compact()
    after = index.search(queries, 20)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])


def test_explicit_compact_then_writes_continue() -> None:
    index = ItemIndex(IndexConfig(dim=4, factory="Flat"))
    index.upsert(["a", "b", "c"], np.eye(4)[:3], {"category": ["x", "y", "z"], "brand": ["p", None, "r"]})
    index.delete(["b"])
    index.compact()
    assert index.tombstones == 0 and len(index) == 2
    index.upsert(["d"], np.eye(4)[3:], {"category": ["x"]})
    assert [r["item_id"] for r in index.fetch(["a", "c", "d"])] == ["a", "c", "d"]
    assert index.fetch(["c"])[0]["brand"] == "r"
    assert "brand" not in index.fetch(["d"])[0]  # sparse: an item answers only the fields it was given
    _, found = index.search(np.eye(4, dtype=np.float32), 1)
    np.testing.assert_array_equal(found[:, 0], ["a", "a", "c", "d"])
    _, found = index.search(np.eye(4, dtype=np.float32)[3:], 4, categories=[["x"]])
    np.testing.assert_array_equal(found, [["d", "a", "", ""]])


# ----- reads ------------------------------------------------------------------
def test_metadata_fetch_and_vectors_of() -> None:
    index = ItemIndex(IndexConfig(dim=3, factory="Flat"))
    index.upsert(["a", "b"], [[3, 0, 0], [0, 2, 0]], {"category": ["shoes", None], "brand": ["acme", "zeta"]})
    index.upsert(["c"], [[0, 0, 5]], {"colour": ["red"]})  # a new field: the older items do not get it
    a, b, c, missing = index.fetch(["a", "b", "c", "zzz"])
    assert missing is None
    fields = lambda record: {k: v for k, v in record.items() if k != "vector"}  # noqa: E731
    assert fields(a) == {"item_id": "a", "category": "shoes", "brand": "acme"}
    assert fields(b) == {"item_id": "b", "category": None, "brand": "zeta"}
    assert fields(c) == {"item_id": "c", "category": None, "colour": "red"}
    np.testing.assert_array_equal(a["vector"], np.array([1, 0, 0], np.float32))

    meta = index.metadata_of(np.array([["b", ""], ["a", "c"]], dtype=object))
    assert meta[0, 0] == {"category": None, "brand": "zeta"} and meta[0, 1] is None
    assert meta[1, 0]["category"] == "shoes" and meta[1, 1]["colour"] == "red"

    vectors, found = index.vectors_of(["c", "nope", "a"])
    assert found == [True, False, True]
    np.testing.assert_array_equal(vectors, np.array([[0, 0, 1], [0, 0, 0], [1, 0, 0]], np.float32))


def test_category_filter_semantics() -> None:
    index = ItemIndex(IndexConfig(dim=2, factory="Flat"))
    index.upsert(
        ["a", "b", "c", "d"],
        [[1, 0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3]],
        {"category": ["x", "y", None, "x"]},
    )
    q = np.array([[1, 0]], np.float32)
    assert list(index.search(q, 4, categories=[["x"]])[1][0]) == ["a", "d", "", ""]
    assert list(index.search(q, 4, categories=[["y", "x"]])[1][0]) == ["a", "b", "d", ""]
    assert list(index.search(q, 4, categories=[["w"]])[1][0]) == ["", "", "", ""]
    assert list(index.search(q, 4, categories=[[]])[1][0]) == ["", "", "", ""]
    assert list(index.search(q, 4)[1][0]) == ["a", "b", "c", "d"]  # no filter: uncategorised items too


def test_vector_sum_tracks_live_items() -> None:
    index = ItemIndex(IndexConfig(dim=DIM, factory="Flat"))
    rng, ids, vectors = _filled(index, 400, seed=12)
    index.delete(ids[:100])
    replacement = rng.standard_normal((50, DIM)).astype(np.float32)
    index.upsert(ids[100:150], replacement)
    total, count = index.vector_sum()
    want = normalise_rows(replacement).sum(axis=0, dtype=np.float64) + vectors[150:].sum(axis=0, dtype=np.float64)
    assert count == 300
    np.testing.assert_allclose(total, want, rtol=0, atol=1e-4)


def test_category_counts_follow_upserts_deletes_and_compaction(monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import Counter

    monkeypatch.setattr(C, "COMPACT_MIN_ROWS", 10)  # compactions happen along the way
    rng = np.random.default_rng(5)
    index = ItemIndex(IndexConfig(dim=DIM, factory="Flat"))
    live: dict[str, str | None] = {}
    for step in range(30):
        ids = [f"i{j}" for j in rng.choice(200, size=20, replace=False)]
        if step % 3 == 2:
            index.delete(ids)
            for i in ids:
                live.pop(i, None)
        else:
            cats = [None if c == 3 else "abcd"[c] for c in rng.integers(0, 4, size=20)]
            index.upsert(ids, rng.standard_normal((20, DIM)).astype(np.float32), {"category": cats})
            live.update(zip(ids, cats))
        want = Counter(c for c in live.values() if c is not None)
        assert index.category_counts() == dict(want)


def test_clear_removes_everything() -> None:
    index = ItemIndex(IndexConfig(dim=DIM, factory="IVF16,Flat"))
    _filled(index, 1000, seed=13, categories=["x"] * 1000)
    assert index.index_ready
    index.clear()
    assert len(index) == 0 and index.tombstones == 0 and not index.index_ready
    scores, found = index.search(normalise_rows(np.ones((1, DIM))), 3)
    assert (found == "").all() and np.isneginf(scores).all()
    assert index.vector_sum()[1] == 0


def test_metadata_cannot_shadow_the_result_score() -> None:
    """A string column named 'score' must not replace the similarity in SearchResult.query().

    'vector' and 'item_id' are reserved for the same reason (fetch() and query() add them);
    either 'score' is refused at upsert, or query() keeps the similarity.
    """
    index = ItemIndex(IndexConfig(dim=2, factory="Flat"))
    try:
        index.upsert(["a"], [[1.0, 0.0]], {"score": ["high"]})
    except InvalidInputError as exc:
        assert "'score'" in str(exc)
        return
    scores, found = index.search(np.array([[0.6, 0.8]], np.float32), 1)
    row = SearchResult.from_arrays(scores, found, index.metadata_of(found)).query(0)[0]
    assert row["item_id"] == "a"
    assert row["score"] == pytest.approx(0.6, abs=1e-6)


@given(
    factory=st.sampled_from(["Flat", "HNSW8", "IVF4,Flat"]), n=st.integers(1, 400), k=st.integers(1, 30),
    seed=st.integers(0, 2**16), shares=st.lists(st.floats(0, 1), min_size=1, max_size=6),
    overfetch=st.sampled_from([0, 5, 256]), dead=st.integers(0, 50),
)
@hypothesis_settings(80)
def test_exclusions_give_k_whenever_k_are_eligible(
    factory: str, n: int, k: int, seed: int, shares: list[float], overfetch: int, dead: int
) -> None:
    """Seen-item exclusion by over-fetching (or, past the cap, by a mask): every row holds min(k, eligible)
    items, none excluded or deleted, none twice; Flat answers exactly."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(C, "EXCLUDE_OVERFETCH_MAX_ROWS", overfetch)
        _check_exclusions(factory, n, k, seed, shares, dead)


def _check_exclusions(factory: str, n: int, k: int, seed: int, shares: list[float], dead: int) -> None:
    # nprobe 1 of 4 lists: an IVF query often sees fewer than k + excluded items (the exact fallback).
    index = ItemIndex(IndexConfig(dim=DIM, factory=factory, ef_search=16, nprobe=1))
    rng, ids, vectors = _filled(index, n, seed)
    gone = list(rng.choice(ids, size=min(dead, n - 1), replace=False)) if n > 1 else []
    index.delete(gone)
    live = ~np.isin(np.array(ids, dtype=object), gone)
    excludes = [list(rng.choice(ids, size=int(s * n), replace=False)) + ["elsewhere"] for s in shares]
    queries = normalise_rows(clustered(rng, len(shares), DIM))
    scores, found = index.search(queries, k, excludes)
    for q, exclude in enumerate(excludes):
        eligible = live & ~np.isin(np.array(ids, dtype=object), exclude)
        filled = [i for i in found[q] if i != ""]
        assert len(filled) == min(k, int(eligible.sum())), "k results whenever k are eligible"
        assert len(set(filled)) == len(filled) and set(filled) <= set(np.array(ids, dtype=object)[eligible])
        if factory == "Flat":
            assert_equals_brute_force(scores[q : q + 1], found[q : q + 1], queries[q : q + 1], vectors, ids, k,
                                      eligible)
