"""The feedback rule, history vectors and UserStore (versions, idempotent replay, bounded history)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayrec.config import FeedbackRule
from rayrec.constants import DEFAULT_LEARNING_RATES
from rayrec.exceptions import InvalidInputError
from rayrec.users.feedback_rule import decay_factor, history_vector, normalise, rederive, update_vector
from rayrec.users.user_state import UserStore

from ._helpers import hypothesis_settings

DIM = 8


class Clock:
    """A settable clock for UserStore (time in seconds)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    x = rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1)[:, None]).astype(np.float32)


# ----- the rule ---------------------------------------------------------------
@hypothesis_settings(60)
@given(seed=st.integers(0, 2**32 - 1), rate=st.floats(0.01, 0.99), decay=st.floats(0.05, 1.0))
def test_positive_rate_raises_dot_negative_lowers_it(seed: int, rate: float, decay: float) -> None:
    rng = np.random.default_rng(seed)
    v, x = _unit(rng, 2)
    before = float(v @ x)
    if abs(before) > 0.999:
        return  # v = ±x: the dot cannot move
    toward = update_vector(v, x, rate, decay)
    away = update_vector(v, x, -rate, decay)
    assert float(toward @ x) > before
    assert float(away @ x) < before
    for out in (toward, away):
        assert out.dtype == np.float32
        assert float(np.linalg.norm(out)) == pytest.approx(1.0, abs=1e-6)
    want = decay * v.astype(np.float64) + rate * x.astype(np.float64)
    np.testing.assert_allclose(toward, want / np.linalg.norm(want), rtol=0, atol=1e-6)


def test_update_by_hand() -> None:
    v = np.array([1.0, 0.0], np.float32)
    x = np.array([0.0, 1.0], np.float32)
    np.testing.assert_allclose(update_vector(v, x, 0.25), np.array([4, 1]) / np.sqrt(17), atol=1e-7)
    np.testing.assert_allclose(update_vector(v, x, -0.25), np.array([4, -1]) / np.sqrt(17), atol=1e-7)
    # Decay 0.5 halves the old vector's pull: normalise(0.5 v + 0.25 x) = (2, 1) / sqrt(5).
    np.testing.assert_allclose(update_vector(v, x, 0.25, decay=0.5), np.array([2, 1]) / np.sqrt(5), atol=1e-7)
    with pytest.raises(InvalidInputError, match="zero learning rate cannot give a user without a vector"):
        update_vector(np.zeros(2, np.float32), x, 0.0)
    # decay * v and rate * x cancel exactly: the event alone decides the direction
    np.testing.assert_allclose(update_vector(x, x, -0.25, decay=0.25), -x, atol=1e-7)
    np.testing.assert_allclose(update_vector(x, x, -0.5, decay=0.5), -x, atol=1e-7)


def test_a_history_whose_vectors_cancel_is_refused() -> None:
    from rayrec.users.feedback_rule import history_vector

    x = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    with pytest.raises(InvalidInputError, match="cancel out"):
        history_vector(x, 1.0)


def test_decay_factor_values() -> None:
    assert decay_factor(10.0, 10.0) == pytest.approx(0.5)
    assert decay_factor(30.0, 10.0) == pytest.approx(0.125)
    assert decay_factor(5.0, 10.0) == pytest.approx(2**-0.5)
    assert decay_factor(0.0, 10.0) == 1.0
    assert decay_factor(-3.0, 10.0) == 1.0  # a clock step backwards never amplifies
    assert decay_factor(100.0, 0.0) == 1.0  # half-life 0: decay off


def test_history_vector_weights_by_hand() -> None:
    items = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)  # oldest first
    # recency 0.5: weights 0.25, 0.5, 1 -> (0.25, 0.5, 1) / |.|
    want = np.array([0.25, 0.5, 1.0]) / np.sqrt(0.25**2 + 0.5**2 + 1)
    np.testing.assert_allclose(history_vector(items, 0.5), want, atol=1e-7)
    # recency 1: the plain mean direction.
    np.testing.assert_allclose(history_vector(items, 1.0), np.ones(3) / np.sqrt(3), atol=1e-7)
    # Repeating an item: [x, y, x] with recency 0.5 -> 0.25 x + 0.5 y + 1 x = (1.25, 0.5, 0).
    rep = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]], np.float32)
    np.testing.assert_allclose(history_vector(rep, 0.5), np.array([1.25, 0.5, 0]) / np.hypot(1.25, 0.5), atol=1e-7)
    with pytest.raises(InvalidInputError, match="at least one item"):
        history_vector(np.empty((0, 3), np.float32), 0.5)


def test_normalise_leaves_zero_alone() -> None:
    np.testing.assert_array_equal(normalise(np.zeros(3)), np.zeros(3, np.float32))
    np.testing.assert_allclose(normalise(np.array([3.0, 4.0])), [0.6, 0.8], atol=1e-7)


# ----- UserStore --------------------------------------------------------------
def test_apply_follows_the_rule_with_cold_start() -> None:
    rng = np.random.default_rng(1)
    clock = Clock()
    store = UserStore(DIM, FeedbackRule(), clock)
    x1, x2, start = _unit(rng, 3)

    version, applied = store.apply("u1", "i1", "like", x1 * 3)  # item vector is normalised on the way in
    assert (version, applied) == (1, True)
    np.testing.assert_allclose(store.get("u1").vector, x1, atol=1e-6)  # from zero: normalise(0.25 x) = x

    version, applied = store.apply("u2", "i1", "dislike", x1)
    np.testing.assert_allclose(store.get("u2").vector, -x1, atol=1e-6)

    # With a cold-start vector: a first positive event still starts from nowhere (the user becomes the
    # item); a first negative one pushes away from the cold-start vector.
    store.apply("u3", "i1", "click", x1, start=start * 2)
    np.testing.assert_allclose(store.get("u3").vector, x1, atol=1e-6)
    store.apply("u4", "i1", "skip", x1, start=start * 2)
    want = start.astype(np.float64) + DEFAULT_LEARNING_RATES["skip"] * x1
    np.testing.assert_allclose(store.get("u4").vector, want / np.linalg.norm(want), atol=1e-6)

    version, _ = store.apply("u1", "i2", "purchase", x2)
    assert version == 2
    want = x1.astype(np.float64) + DEFAULT_LEARNING_RATES["purchase"] * x2
    np.testing.assert_allclose(store.get("u1").vector, want / np.linalg.norm(want), atol=1e-6)
    assert [(i, e) for i, e, _ in store.get("u1").history] == [("i1", "like"), ("i2", "purchase")]
    assert len(store) == 4


def test_apply_decays_with_elapsed_time() -> None:
    rng = np.random.default_rng(2)
    clock = Clock(50.0)
    store = UserStore(DIM, FeedbackRule(decay_half_life_s=10.0), clock)
    v0, x = _unit(rng, 2)
    store.set_vector("u", v0)
    clock.now = 70.0  # two half-lives
    store.apply("u", "i", "like", x)
    want = 0.25 * v0.astype(np.float64) + 0.25 * x
    np.testing.assert_allclose(store.get("u").vector, want / np.linalg.norm(want), atol=1e-6)
    assert store.get("u").updated_at == 70.0
    clock.now = 70.0  # no time passed: no decay
    store.apply("u", "j", "skip", v0)
    prev = want / np.linalg.norm(want)
    want = prev + DEFAULT_LEARNING_RATES["skip"] * v0.astype(np.float64)
    np.testing.assert_allclose(store.get("u").vector, want / np.linalg.norm(want), atol=1e-6)


def test_replayed_event_id_changes_nothing() -> None:
    rng = np.random.default_rng(3)
    store = UserStore(DIM, FeedbackRule(), Clock())
    x, y = _unit(rng, 2)
    assert store.apply("u", "i1", "like", x, event_id="e1") == (1, True)
    vector = store.get("u").vector.copy()
    assert store.apply("u", "i2", "dislike", y, event_id="e1") == (1, False)
    np.testing.assert_array_equal(store.get("u").vector, vector)
    assert store.get("u").version == 1 and len(store.get("u").history) == 1
    assert store.applied("u", "e1") and not store.applied("u", "e2") and not store.applied("other", "e1")
    # The same event id for another user is that user's own event.
    assert store.apply("v", "i1", "like", x, event_id="e1") == (1, True)
    assert store.apply("u", "i2", "dislike", y, event_id="e2") == (2, True)
    # No event id: every call applies.
    assert store.apply("u", "i3", "click", x) == (3, True)
    assert store.apply("u", "i3", "click", x) == (4, True)


def test_set_vector_and_set_history_are_idempotent_too() -> None:
    rng = np.random.default_rng(4)
    store = UserStore(DIM, FeedbackRule(), Clock())
    v, w = _unit(rng, 2)
    assert store.set_vector("u", v * 5, event_id="s1") == (1, True)
    np.testing.assert_allclose(store.get("u").vector, v, atol=1e-6)
    assert store.set_vector("u", w, event_id="s1") == (1, False)
    np.testing.assert_allclose(store.get("u").vector, v, atol=1e-6)

    items = _unit(rng, 3)
    assert store.set_history("u", ["a", "b", "c"], items, event_id="h1") == (2, True)
    np.testing.assert_allclose(store.get("u").vector, history_vector(items, FeedbackRule().history_recency), atol=1e-6)
    assert [(i, e) for i, e, _ in store.get("u").history] == [("a", "history"), ("b", "history"), ("c", "history")]
    assert store.set_history("u", ["d"], items[:1], event_id="h1") == (2, False)
    assert store.seen("u") == ["a", "b", "c"]


def test_history_is_bounded_and_seen_deduplicates() -> None:
    rng = np.random.default_rng(5)
    store = UserStore(DIM, FeedbackRule(history_len=3), Clock())
    x = _unit(rng)
    for item in ["a", "b", "a", "c", "d"]:
        store.apply("u", item, "click", x)
    assert [i for i, _, _ in store.get("u").history] == ["a", "c", "d"]
    assert store.get("u").version == 5
    store.apply("u", "d", "like", x)
    assert store.seen("u") == ["c", "d"]
    assert store.seen("nobody") == []
    store.set_history("w", list("pqrst"), _unit(rng, 5))
    assert store.seen("w") == ["r", "s", "t"]  # the newest history_len items


def test_event_id_memory_is_bounded() -> None:
    rng = np.random.default_rng(6)
    store = UserStore(DIM, FeedbackRule(event_id_memory=2), Clock())
    x = _unit(rng)
    for n, event_id in enumerate(["e1", "e2", "e3"], start=1):
        assert store.apply("u", "i", "click", x, event_id=event_id) == (n, True)
    assert not store.applied("u", "e1") and store.applied("u", "e2") and store.applied("u", "e3")
    assert store.apply("u", "i", "click", x, event_id="e1") == (4, True)  # forgotten, so applied again
    assert store.apply("u", "i", "click", x, event_id="e3") == (4, False)


def test_bad_input_leaves_the_store_unchanged() -> None:
    store = UserStore(DIM, FeedbackRule(), Clock())
    x = np.ones(DIM, np.float32)
    with pytest.raises(InvalidInputError, match="unknown event type 'share'"):
        store.apply("u", "i", "share", x)
    with pytest.raises(InvalidInputError, match="user id must be a non-empty string"):
        store.apply("", "i", "like", x)
    with pytest.raises(InvalidInputError, match="item vector dimension is 3"):
        store.apply("u", "i", "like", np.ones(3))
    with pytest.raises(InvalidInputError, match="all zeros"):
        store.apply("u", "i", "like", np.zeros(DIM))
    with pytest.raises(InvalidInputError, match="one vector, got 2"):
        store.set_vector("u", np.ones((2, DIM)))
    with pytest.raises(InvalidInputError, match="got 2 history items but 1 vectors"):
        store.set_history("u", ["a", "b"], np.ones((1, DIM)))
    assert len(store) == 0 and store.get("u") is None


def test_as_dict_snapshot() -> None:
    clock = Clock(12.5)
    store = UserStore(2, FeedbackRule(), clock)
    store.apply("u", "i", "like", np.array([0.0, 1.0]))
    snap = store.get("u").as_dict("u")
    assert snap["user_id"] == "u" and snap["version"] == 1 and snap["updated_at"] == 12.5
    np.testing.assert_allclose(snap["vector"], [0.0, 1.0], atol=1e-7)
    assert snap["history"] == [{"item_id": "i", "event": "like", "timestamp": 12.5}]
    snap["vector"][0] = 9.0  # a copy, not the live vector
    assert store.get("u").vector[0] == 0.0


# ----- re-deriving a user in another item space (a model swap) -------------------
def _two_spaces(rng: np.random.Generator, items: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return {i: _unit(rng)[0] for i in items}, {i: _unit(rng)[0] for i in items}


@pytest.mark.parametrize("half_life", [0.0, 30.0])
@pytest.mark.parametrize("first", ["like", "dislike"])  # a new user starts from nowhere, or from the cold start
def test_rederive_gives_what_the_same_events_would_have_given_in_the_new_space(half_life: float, first: str) -> None:
    """A store that saw the events in space A, re-derived in space B, equals a store that saw them in B."""
    rng = np.random.default_rng(3)
    items = [f"i{n}" for n in range(12)]
    a, b = _two_spaces(rng, items)
    rule = FeedbackRule(decay_half_life_s=half_life)
    mean_a, mean_b = _unit(rng)[0], _unit(rng)[0]
    events = [("i3", first), ("i4", "click"), ("i7", "dislike"), ("i4", "skip"), ("i9", "purchase")]
    for starts_with_history in (True, False):
        clock_a, clock_b = Clock(), Clock()
        in_a, in_b = UserStore(DIM, rule, clock_a), UserStore(DIM, rule, clock_b)
        if starts_with_history:
            base = ["i1", "i2", "i5"]
            in_a.set_history("u", base, np.stack([a[i] for i in base]))
            in_b.set_history("u", base, np.stack([b[i] for i in base]))
        for step, (item, event) in enumerate(events):
            clock_a.now = clock_b.now = 1000.0 + 10 * (step + 1)
            in_a.apply("u", item, event, a[item], start=mean_a)
            in_b.apply("u", item, event, b[item], start=mean_b)
        state = in_a.get("u")
        got = rederive(list(state.history), b, rule, mean_b)
        np.testing.assert_allclose(got, in_b.get("u").vector, atol=1e-5)
        assert abs(float(got @ in_a.get("u").vector)) < 0.99  # it did move: the spaces differ


def test_rederive_after_a_set_vector_replays_only_later_events_and_skips_deleted_items() -> None:
    rng = np.random.default_rng(4)
    a, b = _two_spaces(rng, ["x", "y", "z"])
    rule = FeedbackRule()
    clock = Clock()
    store = UserStore(DIM, rule, clock)
    store.apply("u", "x", "like", a["x"], start=a["y"])  # before the vector was set: no longer counts
    clock.now += 5
    placed_b = _unit(rng)[0]
    store.set_vector("u", _unit(rng)[0])
    since = store.get("u").updated_at
    clock.now += 5
    store.apply("u", "z", "like", a["z"])
    expected = update_vector(placed_b, b["z"], rule.learning_rates["like"])
    np.testing.assert_allclose(rederive(list(store.get("u").history), b, rule, placed_b, since), expected, atol=1e-6)
    # An item deleted since (absent from the new space) is left out; with nothing left, there is nothing to derive.
    without_z = {k: v for k, v in b.items() if k != "z"}
    np.testing.assert_allclose(rederive(list(store.get("u").history), without_z, rule, placed_b, since), placed_b,
                               atol=1e-6)
    assert rederive([("gone", "like", 1.0)], without_z, rule, placed_b) is None


def test_a_user_is_exported_whole_and_forgotten_whole() -> None:
    store = UserStore(DIM, FeedbackRule(), Clock())
    store.set_vector("u", np.ones(DIM), "e-1")
    out = store.get("u").export("u")  # type: ignore[union-attr]
    assert out["version"] == 1 and out["event_ids"] == ["e-1"] and len(out["vector"]) == DIM
    assert out["placed_from"]["text_embedding"] is None  # a raw vector, not placed from a text
    assert store.delete("u") is True and store.get("u") is None and len(store) == 0
    assert store.delete("u") is False
    assert store.set_vector("u", np.ones(DIM), "e-1") == (1, True)  # its event ids went with it
