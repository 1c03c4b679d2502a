"""EASE with recency decay against brute force: per-column ridge regressions, explicit decayed rows, the grid."""

from __future__ import annotations

import numpy as np
import pytest

from rayrec.evaluation.baselines import top_k
from rayrec.evaluation.data import Event
from rayrec.evaluation.ease import EaseDecay, ease_weights, tune
from rayrec.evaluation.replay import run_in_order


def _random_history(rng: np.random.Generator, users: int, items: int, events: int) -> list[Event]:
    return [
        Event(f"u{rng.integers(users)}", f"i{rng.integers(items)}", float(t), float(rng.choice([1, 3, 4, 5])))
        for t in range(events)
    ]


@pytest.mark.parametrize("click", [0.0, 0.5])
def test_ease_weights_solve_each_items_ridge_regression_with_a_zero_diagonal(click):
    """B's column j is the ridge regression of item j's column on every other item's (Steck's closed form),
    in the matrix of 1 for a positive (rating >= 4), `click` for a click (3), nothing for a dislike (1)."""
    rng = np.random.default_rng(0)
    items = 12
    index = {f"i{j}": j for j in range(items)}
    history = _random_history(rng, 30, items, 200)
    lam = 7.0
    b = ease_weights(history, index, lam, click)
    weight = {1.0: 0.0, 3.0: click, 4.0: 1.0, 5.0: 1.0}
    users = sorted({e.user for e in history if weight[e.rating] > 0})
    x = np.zeros((len(users), items))
    for e in history:
        if weight[e.rating] > 0:
            x[users.index(e.user), index[e.item]] = max(x[users.index(e.user), index[e.item]], weight[e.rating])
    for j in range(items):
        others = [i for i in range(items) if i != j]
        xo = x[:, others]
        want = np.linalg.solve(xo.T @ xo + lam * np.eye(items - 1), xo.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], want, rtol=1e-4, atol=1e-5)
        assert b[j, j] == 0.0
    with pytest.raises(ValueError, match="lambda"):
        ease_weights(history, index, 0.0)
    with pytest.raises(ValueError, match="click"):
        ease_weights(history, index, lam, 1.5)


@pytest.mark.parametrize("click", [0.0, 0.25])
def test_scores_are_the_decayed_row_of_positives_and_clicks_times_b(click):
    rng = np.random.default_rng(1)
    items = 9
    index = {f"i{j}": j for j in range(items)}
    history = _random_history(rng, 5, items, 60)
    replay = _random_history(rng, 6, items, 30)  # u5 is new
    b = ease_weights(history, index, 3.0, click)
    decay = 0.7
    policy = EaseDecay(index, history, b, decay, click)
    for e in replay:
        policy.observe(e)
    weight = {1.0: 0.0, 3.0: click, 4.0: 1.0, 5.0: 1.0}  # a dislike neither adds nor decays
    for user in {e.user for e in history + replay}:
        counted = [(index[e.item], weight[e.rating]) for e in history + replay
                   if e.user == user and weight[e.rating] > 0]
        if not counted:
            assert policy.recommend(user, 3, set()) is None
            continue
        row = np.zeros(items)
        for n, (j, w) in enumerate(counted):  # the i-th of n counted events weighs w * decay^(n-1-i)
            row[j] += w * decay ** (len(counted) - 1 - n)
        want = row @ b.astype(np.float64)
        np.testing.assert_allclose(policy.scores[user], want, rtol=1e-4, atol=1e-5)
        assert policy.recommend(user, 4, {0, 1}) == top_k(want.astype(np.float32), 4, {0, 1})
    with pytest.raises(ValueError, match="decay"):
        EaseDecay(index, history, b, 1.5)


def test_tune_finds_recency_where_the_latest_events_predict_the_next():
    """Four groups of 15 items; each user likes 3 items of one group, then 5 of another. A bag (decay 1)
    keeps ranking the first group's items; recency ranks the second's, where the next ones are, and tune
    chooses it on the validation slice alone (over seeds 0-4 the gap is 0.15-0.21 at lambda 100)."""
    rng = np.random.default_rng(2)
    index = {f"i{j}": j for j in range(60)}
    events, t = [], 0.0
    for u in range(400):
        first, second = rng.choice(4, 2, replace=False)
        for group, n in ((first, 3), (second, 5)):
            for j in 15 * group + rng.choice(15, n, replace=False):
                events.append(Event(f"u{u}", f"i{j}", t, 5.0))
                t += 1
    # Validation = the last 10%: the last 40 users' whole sequences, fitted on the first 360's.
    choice = tune(events, index, lambdas=(10.0, 100.0), decays=(1.0, 0.5, 0.2))
    by_decay = {g["decay"]: g["hr@10"] for g in choice.grid if g["lambda"] == choice.lam}
    assert choice.lam == 100.0 and choice.decay < 1.0 and by_decay[choice.decay] > by_decay[1.0] + 0.1
    assert choice.validation_hr10 == max(g["hr@10"] for g in choice.grid)
    # Both lambdas at decay 0.5 and click 0.5, the 2 other decays at the better lambda, then the 3 other clicks
    # (no event here is a click: every click weight scores the same, and the first of equals, 0.5, is kept).
    assert len(choice.grid) == 7 and choice.click == 0.5
    # The grid's figure is the replay's: recompute the chosen candidate by hand.
    cut = int(round(len(events) * 0.9))
    fit = events[:cut]
    policy = EaseDecay(index, fit, ease_weights(fit, index, choice.lam, choice.click), choice.decay, choice.click)
    scored, _ = run_in_order(fit, events[cut:], index, [policy])
    assert round(float(np.mean((scored["ease"].ranks > 0) & (scored["ease"].ranks <= 10))), 5) == choice.validation_hr10


def test_tune_counts_clicks_where_what_users_watched_predicts_what_they_like_next():
    """Four groups of 15 items; each user likes 3 items of one group, then clicks 5 of another (rating 3)
    and likes 3 more of that one. Without clicks the row holds only the first group; with them the second,
    where the next positives are, and tune chooses a click weight above 0 on the validation slice."""
    rng = np.random.default_rng(4)
    index = {f"i{j}": j for j in range(60)}
    events, t = [], 0.0
    for u in range(400):
        first, second = rng.choice(4, 2, replace=False)
        picks = 15 * second + rng.choice(15, 8, replace=False)
        for j, rating in [*((j, 5.0) for j in 15 * first + rng.choice(15, 3, replace=False)),
                          *((j, 3.0) for j in picks[:5]), *((j, 5.0) for j in picks[5:])]:
            events.append(Event(f"u{u}", f"i{j}", t, rating))
            t += 1
    choice = tune(events, index, lambdas=(100.0,), decays=(1.0,), clicks=(0.0, 0.5, 1.0))
    by_click = {g["click"]: g["hr@10"] for g in choice.grid}
    assert choice.click > 0 and by_click[choice.click] > by_click[0.0] + 0.1
    assert choice.policy(events, index).click == choice.click


def test_top_k_equals_a_full_sort_with_ties_by_index():
    rng = np.random.default_rng(3)
    for _ in range(2000):
        n = int(rng.integers(1, 40))
        scores = rng.integers(0, 4, n).astype(np.float32)
        seen = set(rng.integers(0, n, int(rng.integers(0, n + 1))).tolist())
        k = int(rng.integers(1, 12))
        want = sorted((j for j in range(n) if j not in seen), key=lambda j: (-scores[j], j))[:k]
        assert top_k(scores, k, seen) == want


def test_the_validation_slice_is_the_last_tenth_at_most_twenty_thousand_events():
    from rayrec.evaluation.ease import VALIDATION_MAX_EVENTS, validation_cut

    assert validation_cut(80_000) == 72_000  # MovieLens 100K's history: its last 10%, as before the cap
    assert validation_cut(80_003) == int(round(80_003 * 0.9))  # ml-latest-small's: the same cut as before
    assert validation_cut(800_000) == 800_000 - VALIDATION_MAX_EVENTS == 780_000  # 1M interactions: capped
    assert validation_cut(100, 0.2) == 80
    from rayrec.evaluation.ease import validation_capped

    assert not validation_capped(80_000) and not validation_capped(200_000) and validation_capped(800_000)


@pytest.mark.parametrize("click", [0.0, 0.5, 0.3])
def test_the_gram_matrix_equals_the_float64_product(click):
    from rayrec.evaluation.ease import event_weight, gram

    rng = np.random.default_rng(2)
    items = [f"i{j}" for j in range(30)]
    index = {item: j for j, item in enumerate(items)}
    history = [Event(f"u{rng.integers(0, 40)}", items[int(rng.integers(0, 30))], float(t), float(rng.integers(1, 6)))
               for t in range(600)]
    users = sorted({e.user for e in history})
    x = np.zeros((len(users), 30))
    for e in history:
        x[users.index(e.user), index[e.item]] = max(x[users.index(e.user), index[e.item]], event_weight(e, click))
    if click in (0.0, 0.5):  # CLICKS' weights: float32 holds every sum, so the same numbers exactly
        np.testing.assert_array_equal(gram(history, index, click), x.T @ x)
    else:  # float64, summed in another order
        np.testing.assert_allclose(gram(history, index, click), x.T @ x, rtol=1e-12)
