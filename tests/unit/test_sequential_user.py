"""The model-based user in the serving shape: one dot product ranks as the blended z-scores do."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rayrec.exceptions import InvalidInputError
from rayrec.learning.sequential import SequenceParams, SequentialModel
from rayrec.learning.sequential_space import low_rank
from rayrec.users.sequence_model import EVENT_TYPES, SequenceModel
from rayrec.users.sequential_user import SequentialUser, equal_norms, spread


def _user(rng: np.random.Generator, n: int = 30, weight: float = 0.7, decay: float = 0.8, click: float = 0.0):
    params = SequenceParams(dim=8, length=5, blocks=1)
    torch.manual_seed(1)
    model = SequentialModel(n, params).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    sequence = SequenceModel({k: v.detach().numpy() for k, v in model.state_dict().items()}, params.blocks)
    context = rng.standard_normal((n, 4)).astype(np.float32)
    target = rng.standard_normal((n, 4)).astype(np.float32)
    rows = {f"i{j}": j for j in range(n)}
    user = SequentialUser(sequence, rows, context, decay, weight, spread(sequence.item_vectors), spread(target), click)
    return user, sequence, context, target, rows


@pytest.mark.parametrize("click", [0.0, 0.5])
def test_the_user_vector_ranks_items_as_the_blend_of_z_scores(click):
    rng = np.random.default_rng(0)
    user, sequence, context, target, rows = _user(rng, click=click)
    events = [("i3", "like"), ("i7", "click"), ("nobody-knows", "like"), ("i1", "dislike"), ("i9", "like"),
              ("i4", "history")]
    u = user.vector(events)
    items = equal_norms(np.concatenate([sequence.item_vectors, target], axis=1))
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), np.linalg.norm(items, axis=1).max(), rtol=1e-5)
    items = items / np.linalg.norm(items, axis=1, keepdims=True)  # as the index holds them
    # By hand: the sequential part's scores over every item, and EASE's (the decayed sum of the positives'
    # context vectors, and the click's at weight `click`: i3, i7, i9, i4, newest weighing 1; the dislike is
    # left out), each z-scored over the catalog, mixed 0.7 / 0.3.
    known = [(rows[i], EVENT_TYPES[e]) for i, e in events if i in rows]
    s1 = sequence.item_vectors.astype(np.float64) @ sequence.user_vector(known)
    if click:
        c = 0.8**3 * context[3] + 0.8**2 * click * context[7] + 0.8 * context[9] + context[4]
    else:
        c = 0.8**2 * context[3] + 0.8 * context[9] + context[4]
    s2 = target.astype(np.float64) @ c
    blend = 0.7 * (s1 - s1.mean()) / s1.std() + 0.3 * (s2 - s2.mean()) / s2.std()
    got = items.astype(np.float64) @ u
    assert np.argsort(-got).tolist() == np.argsort(-blend).tolist()
    # The same up to one positive scale and shift per user: a dot product ranks exactly like the blend.
    slope, offset = np.polyfit(blend, got, 1)
    np.testing.assert_allclose(got, slope * blend + offset, atol=1e-5)
    assert slope > 0 and abs(float(np.linalg.norm(u)) - 1) < 1e-5 and u.dtype == np.float32
    assert user.vector([("nobody-knows", "like")]) is None and user.dim == 13 and u[-1] == 0


def test_a_user_with_no_positive_yet_is_ranked_by_the_sequential_part_alone():
    rng = np.random.default_rng(1)
    user, sequence, _, target, rows = _user(rng)
    u = user.vector([("i2", "click"), ("i5", "skip")])
    items = equal_norms(np.concatenate([sequence.item_vectors, target], axis=1))
    s1 = sequence.item_vectors @ sequence.user_vector([(2, EVENT_TYPES["click"]), (5, EVENT_TYPES["skip"])])
    assert np.argsort(-(items @ u)).tolist() == np.argsort(-s1).tolist()


def test_low_rank_recovers_a_matrix_of_that_rank():
    rng = np.random.default_rng(2)
    b = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 40))
    context, target = low_rank(b.astype(np.float32), 6)
    np.testing.assert_allclose(context @ target.T, b, atol=1e-3)
    context, target = low_rank(b.astype(np.float32), 3)  # the best rank-3 approximation (Eckart-Young)
    u, s, vt = np.linalg.svd(b)
    np.testing.assert_allclose(context @ target.T, (u[:, :3] * s[:3]) @ vt[:3], atol=1e-2 * s[0])


def test_a_store_with_the_model_moves_users_by_their_events_and_the_files_round_trip(tmp_path):
    from rayrec.config import FeedbackRule
    from rayrec.users import model_files
    from rayrec.users.user_state import UserStore

    rng = np.random.default_rng(3)
    user, *_ = _user(rng, click=0.25)
    model_files.save(user, tmp_path / "m")
    loaded = model_files.load(tmp_path / "m")
    events = [("i3", "like"), ("i7", "click"), ("i9", "like")]
    np.testing.assert_array_equal(loaded.vector(events), user.vector(events))
    assert loaded.rows == user.rows and loaded.weight == user.weight and loaded.dim == user.dim
    assert loaded.click == 0.25

    store = UserStore(user.dim, FeedbackRule(), clock=lambda: 1.0, model=loaded)
    store.commit(store.plan_history("u", ["i3"], np.zeros((1, user.dim), np.float32)))
    np.testing.assert_allclose(store.get("u").vector, user.vector([("i3", "history")]), atol=1e-6)
    for item, event in events[1:]:
        vector = store.by_model.vector("u", [(item, event)])
        store.commit(store.plan_feedback("u", item, event, None, f"e-{item}", model_vector=vector))
    # The vector after each event is the model's over the whole kept history, oldest first.
    np.testing.assert_allclose(store.get("u").vector, user.vector([("i3", "history"), *events[1:]]), atol=1e-6)
    assert [i for i, _, _ in store.get("u").history] == ["i3", "i7", "i9"] and store.get("u").version == 3
    assert store.plan_feedback("u", "i9", "like", None, "e-i9") is None  # its event id was applied
    assert store.by_model.vector("nobody", [("unknown", "like")]) is None  # the rule takes over
    with pytest.raises(InvalidInputError, match="no readable user model"):
        model_files.load(tmp_path / "missing")


def test_feedback_batches_group_per_user_in_order_and_name_bad_events():
    from rayrec.users.feedback_batch import group_by_user

    by_user, errors = group_by_user([("u", "a", "like", "e1"), ("v", "b", "click", None), ("u", "c", "poke", None),
                                     ("u", "d", "skip", "e4"), ("too", "short")])
    assert by_user == {"u": [(0, "a", "like", "e1"), (3, "d", "skip", "e4")], "v": [(1, "b", "click", None)]}
    assert set(errors) == {2, 4} and "poke" in str(errors[2])
    assert "(user_id, item_id, event, event_id)" in str(errors[4])


@pytest.mark.parametrize("fails_at", [None, 3])
def test_a_users_events_planned_in_one_batch_equal_applying_them_one_at_a_time(fails_at):
    from rayrec.config import FeedbackRule
    from rayrec.users.feedback_batch import UserEvents
    from rayrec.users.user_state import UserStore

    rng = np.random.default_rng(5)
    user, *_ = _user(rng, click=0.5)
    x = np.ones(user.dim, np.float32) / np.sqrt(user.dim)  # the rule's item vector for an item the model lacks

    def store() -> UserStore:  # history_len 6 < the 9 events below: the kept history is cut as they come
        s = UserStore(user.dim, FeedbackRule(history_len=6), clock=lambda: 1.0, model=user)
        s.commit(s.plan_history("u", ["i3", "i4", "i5"], np.zeros((3, user.dim), np.float32), "h"))
        return s

    # A known event id, one repeated within the call, an item only the rule can place, clicks and dislikes.
    mine = [(0, "i1", "like", "h"), (1, "i2", "click", "a"), (2, "i8", "like", "b"), (3, "i9", "dislike", "c"),
            (4, "i2", "like", "a"), (5, "unknown", "like", "d"), (6, "i6", "like", None), (7, "i7", "click", "e"),
            (8, "i0", "like", "f"), (9, "i11", "like", None)]
    one, batched = store(), store()
    want = []
    for n, item, event, event_id in mine:  # what feedback does, event by event
        if n == fails_at or one.applied("u", event_id):
            want.append(None)
            continue
        vector = one.by_model.vector("u", [(item, event)])
        one.commit(one.plan_feedback("u", item, event, None if vector is not None else x, event_id,
                                     model_vector=vector))
        want.append(one.get("u").vector.copy())
    plan = UserEvents(batched, "u", mine)
    got = []
    for (n, item, event, event_id), new, vector in plan:
        if n == fails_at:  # this one is not committed (its write failed, say): the rest are planned anew
            plan.failed()
            got.append(None)
            continue
        if new:
            batched.commit(batched.plan_feedback("u", item, event, None if vector is not None else x, event_id,
                                                 model_vector=vector))
        got.append(batched.get("u").vector.copy() if new else None)
    assert [g is None for g in got] == [w is None for w in want]
    for g, w in zip(got, want, strict=True):
        if w is not None:
            np.testing.assert_allclose(g, w, atol=1e-6)
    assert batched.get("u").history == one.get("u").history and len(one.get("u").history) == 6
    assert batched.get("u").version == one.get("u").version


def _with_tower(rng: np.random.Generator, weight: float = 0.5, tower_share: float = 0.2):
    user, sequence, context, target, rows = _user(rng, weight=weight, click=0.5)
    tower = rng.standard_normal((len(rows), 3)).astype(np.float32)
    return dataclasses.replace(user, tower=tower, spread_tower=spread(tower), tower_share=tower_share), target


def test_a_tower_part_is_a_third_decayed_sum_in_the_same_dot_product(tmp_path):
    from rayrec.users import model_files

    rng = np.random.default_rng(5)
    user, target = _with_tower(rng)
    events = [("i3", "like"), ("i7", "click"), ("i1", "dislike"), ("i9", "like")]
    u = user.vector(events)
    items = equal_norms(np.concatenate([user.sequence.item_vectors, target, user.tower], axis=1))
    assert user.dim == 8 + 4 + 3 + 1 == len(u) == items.shape[1]
    known = [(user.rows[i], EVENT_TYPES[e]) for i, e in events]
    s1 = user.sequence.item_vectors.astype(np.float64) @ user.sequence.user_vector(known)
    c = 0.8**2 * user.context[3] + 0.8 * 0.5 * user.context[7] + user.context[9]
    g = 0.8**2 * user.tower[3] + 0.8 * 0.5 * user.tower[7] + user.tower[9]
    parts = [(s1, 0.5), (target.astype(np.float64) @ c, 0.3), (user.tower.astype(np.float64) @ g, 0.2)]
    blend = sum(share * (s - s.mean()) / s.std() for s, share in parts)
    got = items.astype(np.float64) @ u
    slope, offset = np.polyfit(blend, got, 1)
    np.testing.assert_allclose(got, slope * blend + offset, atol=1e-5)
    assert slope > 0
    model_files.save(user, tmp_path / "m")
    loaded = model_files.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.vector(events), u)
    assert loaded.tower_share == 0.2 and loaded.dim == user.dim and loaded.tower_decay is None

    # The tower part at its own decay (0.5), EASE's still at 0.8: only the tower's sum changes.
    quick = dataclasses.replace(user, tower_decay=0.5)
    g = 0.5**2 * user.tower[3] + 0.5 * 0.5 * user.tower[7] + user.tower[9]
    parts[2] = (user.tower.astype(np.float64) @ g, 0.2)
    blend = sum(share * (s - s.mean()) / s.std() for s, share in parts)
    got = items.astype(np.float64) @ quick.vector(events)
    slope, offset = np.polyfit(blend, got, 1)
    np.testing.assert_allclose(got, slope * blend + offset, atol=1e-5)
    assert slope > 0 and not np.allclose(quick.vector(events), u)
    model_files.save(quick, tmp_path / "q")
    assert model_files.load(tmp_path / "q").tower_decay == 0.5
    np.testing.assert_array_equal(model_files.load(tmp_path / "q").vector(events), quick.vector(events))


def test_choose_blend_scores_every_candidate_as_its_own_replay_would():
    """The grid's one replay over cached z-scored parts equals a replay per candidate of the user's dot product."""
    from rayrec.evaluation.data import Event
    from rayrec.evaluation.replay import run_in_order
    from rayrec.learning.blend_choice import COLD_WEIGHTS, TOWER_DECAYS, WEIGHTS, choose_blend
    from rayrec.learning.sequential_space import Policy, item_vectors

    rng = np.random.default_rng(6)
    user, target = _with_tower(rng)
    tables = [user.sequence.item_vectors, target, user.tower]
    # Items 24-29 only in held: cold, ranked as the tables hold them or by their tower z-score alone.
    events = [Event(f"u{rng.integers(12)}", f"i{rng.integers(24 if t < 300 else 30)}", float(t),
                    float(rng.choice([2, 3, 4, 5]))) for t in range(400)]
    fit, held = events[:300], events[300:]
    cold = np.arange(30) >= 24
    grid = choose_blend(user, tables, fit, held, user.rows, (0.0, 0.2), cold)
    on_cold = np.asarray([cold[user.rows[e.item]] for e in held if e.positive])
    assert 0 < on_cold.sum() < len(on_cold)
    decays = (user.decay, *TOWER_DECAYS)  # EASE's first
    assert [(g["weight"], g["tower"], g["tower_decay"], g["cold"]) for g in grid] == [
        (w, t, d, c) for w in WEIGHTS for t in (0.0, 0.2) if w + t <= 1 for d in (decays if t else (user.decay,))
        for c in ((*COLD_WEIGHTS, None) if t else (None,))]
    for g in grid:
        one = dataclasses.replace(user, weight=g["weight"], tower_share=g["tower"], tower_decay=g["tower_decay"])
        vectors = item_vectors(tables, cold, g["tower"], g["cold"])  # what the index holds with this choice
        scored, _ = run_in_order(fit, held, user.rows, [Policy(one, vectors, fit)])
        hit = (scored["sequential"].ranks > 0) & (scored["sequential"].ranks <= 10)
        assert g["hr@10"] == round(float(np.mean(hit)), 5)
        assert g["cold_hr@10"] == round(float(np.mean(hit[on_cold])), 5)  # the targets that are cold items
    assert len({g["hr@10"] for g in grid}) > 1 and len({g["cold_hr@10"] for g in grid}) > 1  # candidates differ
    assert len({g["hr@10"] for g in grid if g["weight"] == 0.5 and g["tower"] == 0.2}) > 1  # and by cold weight
    by_decay = {g["hr@10"] for g in grid if g["weight"] == 0.5 and g["tower"] == 0.2 and g["cold"] is None}
    assert len(by_decay) > 1  # and by the tower's decay
    # Equal on validation, EASE's decay and the tower's ranking of cold items come first (the first of equals wins).
    assert [(g["tower_decay"], g["cold"]) for g in grid if g["weight"] == 0.5 and g["tower"] == 0.2][:3] == [
        (user.decay, c) for c in (*COLD_WEIGHTS, None)]


def test_the_best_blend_is_the_highest_overall_then_on_cold_items_then_the_first():
    from rayrec.learning.blend_choice import best_blend

    grid = [{"weight": 0.1, "hr@10": 0.2, "cold_hr@10": 0.0}, {"weight": 0.2, "hr@10": 0.3, "cold_hr@10": 0.0},
            {"weight": 0.3, "hr@10": 0.3, "cold_hr@10": 0.05}, {"weight": 0.4, "hr@10": 0.3, "cold_hr@10": 0.05},
            {"weight": 0.5, "hr@10": 0.29, "cold_hr@10": 0.5}]
    assert best_blend(grid)["weight"] == 0.3
    assert best_blend(grid[:2])["weight"] == 0.2


@pytest.mark.parametrize("last_only", [False, True])
def test_many_users_planned_in_one_pass_equal_each_alone_and_a_user_changed_meanwhile_is_planned_again(last_only):
    from rayrec.config import FeedbackRule
    from rayrec.users.feedback_batch import UserEvents, group_by_user
    from rayrec.users.user_state import UserStore

    rng = np.random.default_rng(9)
    user, *_ = _user(rng, click=0.5)
    x = np.ones(user.dim, np.float32) / np.sqrt(user.dim)

    def store() -> UserStore:
        s = UserStore(user.dim, FeedbackRule(history_len=4), clock=lambda: 1.0, model=user)
        s.commit(s.plan_history("a", ["i3", "i4", "i5", "i6"], np.zeros((4, user.dim), np.float32)))
        s.commit(s.plan_history("b", ["i1"], np.zeros((1, user.dim), np.float32)))
        return s

    def apply(s: UserStore, uid: str, item: str, event: str, event_id: str | None) -> None:
        vector = s.by_model.vector(uid, [(item, event)])
        s.commit(s.plan_feedback(uid, item, event, None if vector is not None else x, event_id, model_vector=vector))

    events = [("a", "i1", "like", "1"), ("b", "i2", "click", None), ("c", "i9", "like", None),
              ("a", "unknown", "like", None), ("b", "i8", "skip", None), ("a", "i7", "click", "2"),
              ("c", "i0", "purchase", None), ("c", "i4", "skip", None), ("a", "i2", "like", None),
              ("a", "i11", "dislike", None)]
    one, batched = store(), store()
    for uid, item, event, event_id in events:  # one event at a time, as feedback does
        if uid == "b" and item == "i2":
            apply(one, "b", "i12", "like", "x")  # what another call does to b first (below)
        apply(one, uid, item, event, event_id)
    by_user, errors = group_by_user(events)
    # a, b and c in one pass of the model (4 + 2 + 3 windows; last_only: a bulk import, one window for c, and
    # a and b event by event: a has an item the model lacks, b changes meanwhile)
    plans = UserEvents.many(batched, by_user, last_only)
    apply(batched, "b", "i12", "like", "x")  # another call changes b after the plan: b is planned again
    for uid, plan in plans.items():
        for (_, item, event, event_id), new, vector in plan:
            assert new
            batched.commit(batched.plan_feedback(uid, item, event, None if vector is not None else x, event_id,
                                                 model_vector=vector))
        assert plan.exact == (uid != "b") and plan.last_only == (last_only and uid != "a")
    assert not errors
    for uid in "abc":
        np.testing.assert_allclose(batched.get(uid).vector, one.get(uid).vector, atol=1e-6)
        assert batched.get(uid).history == one.get(uid).history and batched.get(uid).version == one.get(uid).version
    assert len(one.get("a").history) == 4  # the windows were cut to the kept history as the events came


def test_without_cold_items_the_grid_has_no_cold_weights_to_try():
    from rayrec.learning.blend_choice import COLD_WEIGHTS, TOWER_DECAYS, WEIGHTS, candidates

    full, plain = candidates((0.0, 0.2), 0.8), candidates((0.0, 0.2), 0.8, ())
    assert {c for *_, c in plain} == {None} and {c for *_, c in full} == {*COLD_WEIGHTS, None}
    assert [g[:3] for g in plain] == list(dict.fromkeys(g[:3] for g in full))  # every share and decay, once
    assert len(plain) == len(WEIGHTS) + (len(WEIGHTS) - 1) * (1 + len(TOWER_DECAYS))  # w + 0.2 <= 1 but for w = 1
