"""ItemIndex under random sequences of writes, compared after every step with a plain dict model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rayrec import constants as C
from rayrec.config import IndexConfig
from rayrec.index.item_index import ItemIndex

from ._helpers import assert_equals_brute_force, hypothesis_settings, normalise_rows

DIM = 8
POOL = [f"id{i}" for i in range(120)]
CATS = ["p", "q", "r", None]

operation = st.one_of(
    st.tuples(st.just("upsert"), st.lists(st.sampled_from(POOL), min_size=1, max_size=40), st.booleans()),
    st.tuples(st.just("delete"), st.lists(st.sampled_from(POOL + ["ghost"]), min_size=1, max_size=40), st.just(False)),
    st.tuples(st.just("compact"), st.just([]), st.just(False)),
)


Model = dict[str, tuple[np.ndarray, str | None, str | None]]  # id -> (unit vector, category, brand)


def _check_approximate(
    scores: np.ndarray,
    found: np.ndarray,
    query: np.ndarray,
    vectors: np.ndarray,
    ids: list[str],
    k: int,
    eligible: np.ndarray,
) -> None:
    """An approximate answer: min(k, eligible) distinct eligible items, each with its true score, best first."""
    want = min(k, int(eligible.sum()))
    filled = [item for item in found if item != ""]
    assert len(filled) == want and len(set(filled)) == want
    assert all(item == "" for item in found[want:])
    row_of = {item: r for r, item in enumerate(ids)}
    rows = [row_of[item] for item in filled]
    assert eligible[rows].all()
    np.testing.assert_allclose(scores[:want], vectors[rows] @ query, rtol=0, atol=1e-5)
    assert np.all(np.diff(scores[:want]) <= 1e-6)


def _check(index: ItemIndex, model: Model, rng: np.random.Generator) -> None:
    """Everything the index answers equals what the model says."""
    assert len(index) == len(model)
    assert index.tombstones >= 0
    for item in POOL[:20]:
        assert (item in index) == (item in model)
    fetched = index.fetch(list(model)[:15])
    for record, (item, (vector, cat, brand)) in zip(fetched, list(model.items())[:15]):
        assert record["item_id"] == item and record["category"] == cat and record.get("brand") == brand
        np.testing.assert_allclose(record["vector"], vector, rtol=0, atol=1e-6)
    total, count = index.vector_sum()
    assert count == len(model)
    want_total = np.sum([v for v, _, _ in model.values()], axis=0, dtype=np.float64) if model else np.zeros(DIM)
    np.testing.assert_allclose(total, want_total, rtol=0, atol=1e-4)

    ids = list(model)
    vectors = np.stack([v for v, _, _ in model.values()]) if model else np.empty((0, DIM), np.float32)
    cats = np.array([c for _, c, _ in model.values()], dtype=object)
    queries = normalise_rows(rng.standard_normal((3, DIM)))
    excludes = [None, list(rng.choice(POOL, 30)), None]
    categories = [None, None, ["q", "r"]]
    k = 12
    scores, found = index.search(queries, k, excludes, categories)
    for q in range(3):
        eligible = np.ones(len(ids), dtype=bool)
        if excludes[q]:
            eligible &= ~np.isin(np.array(ids, dtype=object), excludes[q])
        if categories[q] is not None:
            eligible &= np.isin(cats, categories[q])
        if not ids:
            assert (found[q] == "").all() and np.isneginf(scores[q]).all()
            continue
        if index.config.factory.startswith("HNSW"):
            _check_approximate(scores[q], found[q], queries[q], vectors, ids, k, eligible)
        else:
            one = slice(q, q + 1)
            assert_equals_brute_force(scores[one], found[one], queries[one], vectors, ids, k, eligible)


@pytest.mark.parametrize("factory", ["Flat", "IVF2,Flat", "HNSW8"])
@pytest.mark.parametrize("subset_max_rows", [4096, 0])
@hypothesis_settings(25)
@given(ops=st.lists(operation, min_size=1, max_size=12), seed=st.integers(0, 2**16))
@example(ops=[("upsert", POOL[:100], True), ("delete", POOL[:40], False), ("upsert", POOL[50:70], False)], seed=3)
def test_random_writes_match_a_dict_model(factory: str, subset_max_rows: int, ops: list, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(C, "COMPACT_MIN_ROWS", 8)  # so automatic compaction happens at this size
        mp.setattr(C, "EXACT_SUBSET_MAX_ROWS", subset_max_rows)
        mp.setattr(C, "IVF_TRAIN_POINTS_PER_LIST", 4)  # IVF2 trains from 8 live items on
        # nprobe = nlist: a trained IVF probes every list, so it must answer exactly.
        index = ItemIndex(IndexConfig(dim=DIM, factory=factory, nprobe=2, compact_ratio=0.25))
        model: Model = {}
        for kind, items, with_brand in ops:
            if kind == "upsert":
                raw = rng.standard_normal((len(items), DIM)).astype(np.float32)
                vectors = normalise_rows(raw)
                cats = [CATS[i] for i in rng.integers(0, len(CATS), len(items))]
                meta: dict[str, list[str | None]] = {"category": cats}
                if with_brand:
                    meta["brand"] = [f"b{i}" for i in rng.integers(0, 3, len(items))]
                assert index.upsert(items, raw, meta) == len(set(items))
                for pos, item in enumerate(items):  # the last of duplicates wins
                    model[item] = (vectors[pos], cats[pos], meta["brand"][pos] if with_brand else None)
            elif kind == "delete":
                assert index.delete(items) == len(set(items) & set(model))
                for item in items:
                    model.pop(item, None)
            else:
                index.compact()
                assert index.tombstones == 0
            _check(index, model, rng)
