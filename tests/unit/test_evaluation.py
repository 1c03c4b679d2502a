"""The replay protocol on a hand-made dataset whose answers are worked out by hand below."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pyarrow as pa
import pytest

from rayrec.evaluation.baselines import ItemKNN, top_k
from rayrec.evaluation.data import Dataset, Event, make_events, make_items
from rayrec.evaluation.metrics import Scored, summarise
from rayrec.evaluation.replay import InRounds, run_in_order, run_in_rounds
from rayrec.exceptions import InvalidInputError

ITEMS = ["A", "B", "C", "D", "E", "F"]
INDEX = {item: i for i, item in enumerate(ITEMS)}
A, B, C, D, E, F = range(6)


def _events(rows: list[tuple[str, str, float, float | None]]) -> list[Event]:
    return [Event(u, i, t, r) for u, i, t, r in rows]


# History: u1 likes A and B and hates C; u2 likes A and B; u3 is lukewarm about D.
HISTORY = _events([("u1", "A", 1, 5), ("u1", "B", 2, 4), ("u1", "C", 3, 1), ("u2", "A", 4, 5), ("u2", "B", 5, 5),
                   ("u3", "D", 6, 3)])
# Replay: u1 likes D; u2 likes C; new user u4 likes A; u1 dislikes E (not scored); u2 likes A again (seen: a miss).
REPLAY = _events([("u1", "D", 10, 5), ("u2", "C", 11, 4), ("u4", "A", 12, 5), ("u1", "E", 13, 2), ("u2", "A", 14, 5)])


def test_event_mapping_and_the_time_split():
    assert [e.feedback for e in _events([("u", "x", 0, 5), ("u", "x", 0, 4), ("u", "x", 0, 3), ("u", "x", 0, 2),
                                         ("u", "x", 0, None)])] == [
        "like", "like", "click", "dislike", "click"]
    assert [e.positive for e in _events([("u", "x", 0, 4), ("u", "x", 0, 3), ("u", "x", 0, None)])] == [
        True, False, True]
    table = pa.table({"user_id": [7, 7, 8, 9], "item_id": ["b", "a", "c", "d"], "timestamp": [30, 10, 10, 20]})
    events = make_events(table)
    # Sorted by time, ties in file order; ids become strings; no rating: every event positive.
    assert [(e.user, e.item, e.time) for e in events] == [("7", "a", 10.0), ("8", "c", 10.0), ("9", "d", 20.0),
                                                          ("7", "b", 30.0)]
    items = make_items(pa.table({"item_id": ["a", "b", "c", "d"], "title": ["T1", "T2", "T3", "T4"],
                                 "genre": ["g", None, "g", "h"]}))
    assert items["text"].to_pylist() == ["T1. g", "T2", "T3. g", "T4. h"]
    history, replay = Dataset(events, items).split(0.75)
    assert [e.item for e in history] == ["a", "c", "d"] and [e.item for e in replay] == ["b"]
    with pytest.raises(InvalidInputError, match="timestamp"):
        make_events(pa.table({"user_id": [1], "item_id": [2]}))
    with pytest.raises(InvalidInputError, match="text"):
        make_items(pa.table({"item_id": ["a"]}))


def test_popularity_and_itemknn_by_hand():
    scored, cold = run_in_order(HISTORY, REPLAY, INDEX, [ItemKNN(INDEX, HISTORY)])
    assert scored["popularity"].users == ["u1", "u2", "u4", "u2"]
    # Popularity counts from history: A 2, B 2, C 1, D 1, E 0, F 0 (ties: lower index first).
    #  u1/D: seen A B C -> [D, E, F]: rank 1; then D counts 2.
    #  u2/C: seen A B -> D 2, C 1, E, F -> [D, C, E, F]: rank 2. Had the event been counted
    #        before scoring (peeking), C would tie D at 2 and come first.
    #  u4/A (cold, nothing seen): A 2, B 2, C 2, D 2 -> [A, B, C, D, E, F]: rank 1.
    #  u1/E rating 2: not scored (but counted: E 1).
    #  u2/A: A was seen: excluded, a miss (0); u2 has now seen A B C -> [D, E, F].
    assert scored["popularity"].ranks.tolist() == [1, 2, 1, 0]
    assert scored["popularity"].top10 == [[D, E, F], [D, C, E, F], [A, B, C, D, E, F], [D, E, F]]
    assert cold[2] == [A, B, C, D, E, F]
    # Item-kNN from the history's positives: u1 and u2 both liked A and B, so sim(A, B) = 1, all else 0.
    #  u1/D: profile {A, B}: scores A 1, B 1, rest 0; seen A B C -> [D, E, F]: rank 1; D joins u1's profile.
    #  u2/C: profile {A, B}; seen A B -> [C, D, E, F]: rank 1.
    #  u4/A: cold -> the popularity list: rank 1.   u2/A: seen, a miss.
    assert scored["itemknn"].ranks.tolist() == [1, 1, 1, 0]
    assert scored["itemknn"].top10[1] == [C, D, E, F]


def test_metrics_by_hand():
    scored = Scored(["u1", "u1", "u2"], np.array([1, 0, 3]), [[0, 1], [2], [5, 0]])
    out = summarise(scored, catalog_size=10, resamples=200)
    assert out["events"] == 3 and out["users"] == 2
    assert out["hr@10"]["value"] == pytest.approx(2 / 3, abs=1e-5)
    assert out["hr@20"]["value"] == pytest.approx(2 / 3, abs=1e-5)
    assert out["ndcg@10"]["value"] == pytest.approx((1 + 0 + 1 / math.log2(4)) / 3, abs=1e-5)
    assert out["mrr@10"]["value"] == pytest.approx((1 + 0 + 1 / 3) / 3, abs=1e-5)
    assert out["coverage@10"]["value"] == pytest.approx(4 / 10)
    for name in ("hr@10", "ndcg@10", "mrr@10"):
        low, high = out[name]["ci95"]
        assert low <= out[name]["value"] <= high
    # Resampling users: u1 alone has HR 1/2, u2 alone 1: the interval spans them.
    assert out["hr@10"]["ci95"][0] == pytest.approx(0.5, abs=1e-5) and out["hr@10"]["ci95"][1] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replay_in_rounds_equals_the_single_loop(seed):
    rng = np.random.default_rng(seed)
    items = [f"i{j}" for j in range(40)]
    index = {item: j for j, item in enumerate(items)}
    # Some users only in the replay (cold until their first event), some with no positive at all there.
    rows = [(f"u{rng.integers(0, 12 if t < 300 else 16)}", items[int(rng.integers(0, 40))], float(t),
             float(rng.integers(1, 6))) for t in range(400)]
    events = _events(rows)
    history, replay = events[:300], events[300:]
    scored, cold = run_in_order(history, replay, index, [ItemKNN(index, history)])

    class Counting(InRounds):
        calls = 0

        async def recommend_many(self, requests):
            self.calls += 1
            return await super().recommend_many(requests)

    done, policy = [], Counting(ItemKNN(index, history))
    rounds = asyncio.run(run_in_rounds(history, replay, index, policy, cold, done.append))
    assert rounds.users == scored["itemknn"].users
    np.testing.assert_array_equal(rounds.ranks, scored["itemknn"].ranks)
    assert rounds.top10 == scored["itemknn"].top10
    assert sum(done) == len(replay)
    # One call per round, not per event: rounds are bounded by the most scored events of any one user.
    most = max(sum(1 for e in replay if e.user == u and e.positive) for u in {e.user for e in replay})
    assert 0 < policy.calls <= most < len(rounds.ranks)


def test_top_k_excludes_seen_and_breaks_ties_by_index():
    assert top_k(np.array([0.0, 2.0, 2.0, 1.0]), 3, {1}) == [2, 3, 0]
    assert top_k(np.array([1.0, 1.0]), 5, {0, 1}) == []


def test_the_svd_space_recovers_planted_groups_and_places_unseen_items_by_text():
    from rayrec.evaluation.spaces import svd_space

    rng = np.random.default_rng(1)
    items = [f"a{j}" for j in range(10)] + [f"b{j}" for j in range(10)] + ["a-new", "b-new"]
    index = {item: j for j, item in enumerate(items)}
    # Two tastes: users 0-19 like a-items, users 20-39 like b-items (each a random half of them).
    history = []
    for u in range(40):
        group = "a" if u < 20 else "b"
        for j in rng.choice(10, 5, replace=False):
            history.append(Event(f"u{u}", f"{group}{j}", float(len(history)), 5.0))
    # Text: a-items share one direction, b-items another; the new items have their group's text.
    text = np.zeros((len(items), 8), dtype=np.float32)
    text[:10, 0] = 1.0
    text[10:20, 1] = 1.0
    text[20, 0] = 1.0
    text[21, 1] = 1.0
    text += 0.05 * rng.standard_normal(text.shape).astype(np.float32)
    vectors, text_map, from_text = svd_space(history, index, text, dim=4)
    assert from_text.tolist() == [False] * 20 + [True, True] and vectors.shape == (22, 4) and text_map.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    a, b = list(range(10)), list(range(10, 20))
    within = np.mean([sims[i, j] for grp in (a, b) for i in grp for j in grp if i != j])
    across = np.mean([sims[i, j] for i in a for j in b])
    assert within - across > 0.5, (within, across)
    # The unseen items land with their text's group.
    assert sims[20, a].mean() > sims[20, b].mean() + 0.5
    assert sims[21, b].mean() > sims[21, a].mean() + 0.5


def test_the_bootstrap_in_matrix_products_equals_concatenating_each_resamples_events():
    from rayrec.evaluation.metrics import _point, _resampled

    rng = np.random.default_rng(3)
    owner = rng.integers(0, 30, 400)
    owner[:30] = np.arange(30)
    ranks = rng.integers(0, 40, 400)
    shown = rng.random((30, 50)) < 0.05
    picks = [rng.integers(0, 30, 30) for _ in range(7)]
    got = _resampled(ranks, owner, shown, picks, chunk=3)
    by_user = [np.flatnonzero(owner == u) for u in range(30)]
    for n, pick in enumerate(picks):  # by hand: the resample's events, concatenated
        want = _point(ranks[np.concatenate([by_user[u] for u in pick])], shown[pick].any(axis=0), 50)
        for name, value in want.items():
            assert got[name][n] == pytest.approx(value, abs=1e-12), name
