"""bench/cold_items.py's pieces: the in-process realtime rule equals rayrec's, and the centring hits its target."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cold_items import RealtimeRule, centred, placements
from rayrec.evaluation.data import Event
from rayrec.users.feedback_rule import normalise


def _unit(rng, n, d):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _norm(v):
    return v / np.linalg.norm(v)


def test_realtime_rule_follows_the_feedback_rule_by_hand():
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 12, 6)
    index = {str(i): i for i in range(12)}
    history = [Event("a", "0", 1, 5.0), Event("a", "3", 2, 1.0), Event("a", "4", 3, 4.0)]
    rule = RealtimeRule(vectors, history, index)
    a = _norm(0.9 * vectors[0] + vectors[4])  # the history's positives, the newest weighing 1, the one before 0.9
    np.testing.assert_allclose(rule.store.get("a").vector, a, atol=1e-6)
    assert rule.recommend("new", 3, set()) is None
    scores = vectors @ a
    scores[[0, 4]] = -np.inf
    assert rule.recommend("a", 3, {0, 4}) == [int(i) for i in np.argsort(-scores)[:3]]
    rule.observe(Event("a", "7", 4, 2.0))  # a dislike (rating <= 2): -0.25
    np.testing.assert_allclose(rule.store.get("a").vector, _norm(a - 0.25 * vectors[7]), atol=1e-6)
    rule.observe(Event("b", "5", 5, 5.0))  # a new user's first like makes them that item
    np.testing.assert_allclose(rule.store.get("b").vector, vectors[5], atol=1e-6)
    rule.observe(Event("c", "5", 6, 1.0))  # a first dislike pushes away from the catalog mean
    mean = _norm(vectors.sum(axis=0))
    np.testing.assert_allclose(rule.store.get("c").vector, _norm(mean - 0.25 * vectors[5]), atol=1e-6)
    rule.observe(Event("c", "6", 7, 3.0))  # a 3 is a click: +0.10
    np.testing.assert_allclose(rule.store.get("c").vector, _norm(_norm(mean - 0.25 * vectors[5]) + 0.1 * vectors[6]),
                               atol=1e-6)


def test_centred_vectors_sit_at_the_warm_items_mean_cosine():
    rng = np.random.default_rng(1)
    warm = _unit(rng, 200, 8) + 0.5  # a catalog with a clear mean direction
    warm /= np.linalg.norm(warm, axis=1, keepdims=True)
    m = normalise(warm.astype(np.float64).sum(axis=0))
    placed = np.vstack([m + 0.05 * _unit(rng, 1, 8)[0], -m + 0.1, _unit(rng, 3, 8)]).astype(np.float32)
    out = centred(placed / np.linalg.norm(placed, axis=1, keepdims=True), warm)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out @ m, float((warm @ m).mean()), atol=1e-5)


def test_placements_change_only_the_cold_rows():
    rng = np.random.default_rng(2)
    vectors, text = _unit(rng, 30, 4), rng.standard_normal((30, 10)).astype(np.float32)
    cold = np.zeros(30, bool)
    cold[[3, 17]] = True
    tables = placements(["trained", "knn1", "ridge-centred"], vectors, text, cold)
    for name, table in tables.items():
        np.testing.assert_array_equal(table[~cold], vectors[~cold], err_msg=name)
    np.testing.assert_array_equal(tables["trained"], vectors)
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)
    nearest = [int(np.argmax(np.where(cold, -np.inf, unit @ unit[r]))) for r in (3, 17)]  # knn1: the nearest warm item
    np.testing.assert_allclose(tables["knn1"][cold], vectors[nearest], atol=1e-6)
    warm = np.flatnonzero(~cold)
    sims = unit[warm] @ unit[17]
    two = warm[np.argsort(-sims)[:2]]  # knn2: the two nearest, each weighted by its text cosine
    want = _norm(sum(float(unit[j] @ unit[17]) * vectors[j] for j in two))
    np.testing.assert_allclose(placements(["knn2"], vectors, text, cold)["knn2"][17], want, atol=1e-6)
    with pytest.raises(ValueError, match="unknown placement 'mean'"):
        placements(["mean"], vectors, text, cold)
