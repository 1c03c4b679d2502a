"""The two-tower model, its examples and its files, without Ray: planted structure, the text path, no pickle."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rayrec.evaluation.data import Event
from rayrec.exceptions import InvalidInputError
from rayrec.learning import store
from rayrec.learning.examples import make_examples, next_item_hit_rate, pooled
from rayrec.learning.model import PAD, TrainParams, TwoTower
from rayrec.learning.spaces import ridge_map, two_tower, validated_two_tower
from rayrec.users.feedback_rule import history_vector

GROUPS, PER_GROUP = 3, 12


def _planted(text_signal: float, seed: int = 0) -> tuple[list[Event], dict[str, int], np.ndarray]:
    """3 tastes of 12 items each; 90 users each like 8 items of their group in a random order.

    Two more items per group ("g<k>-new") nobody interacts with. Text: each item's
    group direction times text_signal, plus noise.
    """
    rng = np.random.default_rng(seed)
    items = [f"g{g}-{j}" for g in range(GROUPS) for j in range(PER_GROUP)] + [
        f"g{g}-new{j}" for g in range(GROUPS) for j in range(2)
    ]
    index = {item: r for r, item in enumerate(items)}
    events: list[Event] = []
    for u in range(90):
        g = u % GROUPS
        for j in rng.choice(PER_GROUP, 8, replace=False):
            events.append(Event(f"u{u}", f"g{g}-{j}", float(len(events)), 5.0))
    text = 0.1 * rng.standard_normal((len(items), 16)).astype(np.float32)
    for item, r in index.items():
        text[r, int(item[1])] += text_signal
    return events, index, text


def _group_rows(index: dict[str, int], g: int, new: bool = False) -> list[int]:
    return [r for item, r in index.items() if item.startswith(f"g{g}-") and ("new" in item) == new]


SMALL = TrainParams(dim=8, context=8, epochs=40, batch_size=32, temperature=0.2, learning_rate=1e-2)


def test_two_tower_recovers_planted_groups_from_interactions_alone():
    events, index, text = _planted(text_signal=0.0)  # the text says nothing: only interactions can
    space = two_tower(events, index, text, SMALL)
    v = space.vectors
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    within = np.mean([sims[i, j] for g in range(GROUPS)
                      for i in _group_rows(index, g) for j in _group_rows(index, g) if i != j])
    across = np.mean([sims[i, j] for g in range(GROUPS) for h in range(GROUPS) if g != h
                      for i in _group_rows(index, g) for j in _group_rows(index, h)])
    assert within - across > 0.5, (within, across)
    assert space.from_text.tolist() == [False] * (GROUPS * PER_GROUP) + [True] * (GROUPS * 2)
    # The pooled user vector of a group's items ranks its own group's other items first (among the items
    # with interactions: the unseen ones have only noise for text here, so nothing can place them).
    for g in range(GROUPS):
        seen = _group_rows(index, g)[:4]
        scores = v @ pooled(v, seen, SMALL.recency, SMALL.context)
        scores[seen] = -np.inf
        scores[space.from_text] = -np.inf
        top = set(np.argsort(-scores)[:8].tolist())
        assert top <= set(_group_rows(index, g)), (g, top)


def test_validated_two_tower_stops_on_the_held_slice_and_trains_every_event_for_its_best_epochs(monkeypatch):
    events, index, text = _planted(text_signal=0.0)
    params = dataclasses.replace(SMALL, patience=2)
    lines: list[str] = []
    first, every = validated_two_tower(events, index, text, params, 0.2, lines.append)
    scores = [e["validation"]["hr@10"] for e in first.history]
    best = first.history[-1]["best_epoch"]
    assert best == 1 + scores.index(max(scores))  # the first of equals
    assert len(first.history) == min(params.epochs, best + params.patience)
    assert len(every.history) == best and all("validation" not in e for e in every.history)
    assert sum(line.startswith("two-tower epoch") for line in lines) == len(first.history) + best
    # A held slice cut to VALIDATION_MAX_EVENTS leaves nearly every event before it: that training is kept.
    from rayrec.evaluation import ease

    monkeypatch.setattr(ease, "VALIDATION_MAX_EVENTS", 50)
    first, every = validated_two_tower(events, index, text, params, 0.2, lines.append)
    assert every is first and first.from_text.sum() == GROUPS * 2 and "kept as trained on the 670" in lines[-1]


@pytest.mark.parametrize("text_map", ["trained", "ridge"])
def test_the_text_path_places_unseen_items_near_items_with_similar_text(text_map):
    events, index, text = _planted(text_signal=1.0)
    space = two_tower(events, index, text, dataclasses.replace(SMALL, text_map=text_map))
    sims = space.vectors @ space.vectors.T
    for g in range(GROUPS):
        for new in _group_rows(index, g, new=True):
            own = sims[new, _group_rows(index, g)].mean()
            other = max(sims[new, _group_rows(index, h)].mean() for h in range(GROUPS) if h != g)
            assert own > other + 0.3, (g, own, other)
    # The saved text path reproduces the unseen items' vectors from their text alone.
    new_rows = [r for g in range(GROUPS) for r in _group_rows(index, g, new=True)]
    w, b = space.text_weight, space.text_bias
    placed = text[new_rows] @ w.T + b
    placed /= np.linalg.norm(placed, axis=1, keepdims=True)
    np.testing.assert_allclose(placed, space.vectors[new_rows], atol=1e-5)


@pytest.mark.parametrize("negatives", ["catalog", "auto"])
def test_the_catalog_loss_is_the_softmax_over_every_unseen_item_by_hand(negatives):
    import torch

    rng = np.random.default_rng(3)
    n, e = 7, 5
    params = TrainParams(dim=4, context=3, id_dropout=0.0, text_loss=0.5, temperature=0.3, negatives=negatives)
    model = TwoTower(rng.standard_normal((n, e)).astype(np.float32), np.array([1, 1, 1, 1, 1, 0, 1], bool), params)
    context = torch.tensor([[PAD, 2, 4], [1, 1, 3], [PAD, PAD, 6]])
    sign = torch.tensor([[0.0, 1.0, -1.0], [0.4, 1.0, 1.0], [0.0, 0.0, 1.0]])
    target = torch.tensor([0, 3, 5])  # the second user's target is in their context: it stays the label
    got = float(model(context, sign, target, torch.zeros(n)).detach())
    with torch.no_grad():
        users = model.users(context, sign).numpy().astype(np.float64)
        full = model.items(torch.arange(n)).numpy().astype(np.float64)
        text = model.text_items(torch.arange(n)).numpy().astype(np.float64)
    # Item 5 has no interactions: never a negative (but the label where it is the target).
    allowed = [[j for j in range(n) if j == t or (j not in ctx and j != 5)]
               for ctx, t in ([[2, 4], 0], [[1, 3], 3], [[6], 5])]

    def loss(items: np.ndarray) -> float:
        total = 0.0
        for u, (t, ok) in enumerate(zip([0, 3, 5], allowed)):
            logits = items[ok] @ users[u] / params.temperature
            total += np.log(np.exp(logits).sum()) - float(items[t] @ users[u]) / params.temperature
        return total / 3

    assert model.whole_catalog
    assert got == pytest.approx(loss(full) + 0.5 * loss(text), rel=1e-5)
    # `batch` scores only the batch's targets: another loss on the same examples.
    batch = TwoTower(model.text.numpy(), model.has_id.numpy(), dataclasses.replace(params, negatives="batch"))
    batch.load_state_dict(model.state_dict())
    assert not batch.whole_catalog
    log_q = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.05, 0.15, 0.1, 0.1]))
    in_batch = float(batch(context, sign, target, log_q).detach())
    assert in_batch != pytest.approx(got, rel=1e-3)
    # By hand: each user's target against the batch's other targets, each logQ-corrected.
    q = log_q.numpy().astype(np.float64)
    by_hand = np.mean([
        np.log(sum(np.exp(full[t] @ users[u] / params.temperature - q[t]) for t in [0, 3, 5]))
        - (full[target[u]] @ users[u] / params.temperature - q[target[u]])
        for u in range(3)
    ]) + 0.5 * np.mean([
        np.log(sum(np.exp(text[t] @ users[u] / params.temperature - q[t]) for t in [0, 3, 5]))
        - (text[target[u]] @ users[u] / params.temperature - q[target[u]])
        for u in range(3)
    ])
    assert in_batch == pytest.approx(by_hand, rel=1e-5)


def test_training_stops_when_validation_stalls_and_keeps_the_best_epochs_weights():
    from rayrec.learning.fit import fit

    events, index, text = _planted(text_signal=0.0)
    examples = make_examples(events, index, SMALL.context)
    params = dataclasses.replace(SMALL, epochs=10, patience=2)
    model = TwoTower(text, examples.has_history, params)
    scores = iter([0.1, 0.3, 0.3, 0.2, 0.9])  # epoch 2 is the best; 3 and 4 do not beat it
    kept = {}

    def on_epoch(stats):
        stats["validation"] = {"hr@10": next(scores)}
        kept[stats["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    history = fit(model, examples, params, on_epoch=on_epoch)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and history[-1]["best_epoch"] == 2
    for name, value in model.state_dict().items():
        assert torch.equal(value, kept[2][name]), name
    assert not torch.equal(model.state_dict()["ids.weight"], kept[4]["ids.weight"])
    with pytest.raises(InvalidInputError, match="patience"):
        TrainParams(patience=-1)


def test_a_larger_log_trains_each_epoch_on_a_sample_in_larger_batches():
    from rayrec.learning.fit import epoch_shape, fit

    params = TrainParams(batch_size=256, max_steps=600)
    assert epoch_shape(params, 60_000) == (256, 235)  # MovieLens-sized: every example once, batches of 256
    assert epoch_shape(params, 600 * 256) == (256, 600)
    assert epoch_shape(params, 652_000) == (1087, 142)  # 1M interactions: a sample of ~153,600 in batches of 1,087
    events, index, text = _planted(text_signal=0.0)  # 630 examples
    small = dataclasses.replace(SMALL, epochs=2, max_steps=5)  # 5 x 32 = 160 examples an epoch: 2 batches of 126
    examples = make_examples(events, index, small.context)
    history = fit(TwoTower(text, examples.has_history, small), examples, small)
    assert [(h["batch_size"], h["examples"]) for h in history] == [(126, 252), (126, 252)]


def test_examples_are_each_positive_after_the_users_earlier_interactions_signed_by_the_rule():
    index = {x: i for i, x in enumerate("ABCDE")}
    events = [Event("u", "A", 1, 5), Event("v", "B", 2, 5), Event("u", "C", 3, 2),  # C: a dislike, not a target
              Event("u", "B", 4, 4), Event("u", "D", 5, 3), Event("u", "A", 6, 5), Event("w", "A", 7, None)]
    ex = make_examples(events, index, length=2)
    # u: A like, C dislike, B like, D click (rating 3: not a target), A like. Targets: B after [A, C]; A after [B, D].
    assert ex.context.tolist() == [[0, 2], [1, 3]] and ex.target.tolist() == [1, 0]
    # Slot weights are the default rule's rates relative to like's: like 1, dislike -1, click 0.10 / 0.25.
    np.testing.assert_allclose(ex.sign, [[1.0, -1.0], [1.0, 0.4]])
    assert ex.counts.tolist() == [1, 1, 0, 0, 0] and ex.has_history.tolist() == [True, True, True, True, False]
    short = make_examples([Event("u", "A", 1, 5), Event("u", "B", 2, 5), Event("x", "C", 3, 5), Event("x", "D", 4, 5)],
                          index, length=3)
    assert short.context.tolist() == [[PAD, PAD, 0], [PAD, PAD, 2]] and short.sign[:, :2].sum() == 0
    with pytest.raises(InvalidInputError, match="at least two interactions, the later one positive"):
        make_examples(events[:2], index, length=2)


def test_the_user_tower_is_the_servers_history_rule():
    """Training pools a user exactly as rayrec's set_history does, so the space fits the server's users."""
    rng = np.random.default_rng(3)
    text = rng.standard_normal((10, 6)).astype(np.float32)
    params = TrainParams(dim=5, context=4, recency=0.7)
    model = TwoTower(text, np.ones(10, bool), params)
    import torch

    table = model.item_table()
    users = model.users(torch.tensor([[PAD, 2, 5, 7], [1, 2, 3, 4]])).detach().numpy()
    np.testing.assert_allclose(users[0], history_vector(table[[2, 5, 7]], 0.7), atol=1e-5)
    np.testing.assert_allclose(users[1], history_vector(table[[1, 2, 3, 4]], 0.7), atol=1e-5)
    np.testing.assert_allclose(users[1], pooled(table, [0, 1, 2, 3, 4], 0.7, 4), atol=1e-5)
    # A disliked item (sign -1) is subtracted: newest 1 * x4 - 0.7 * x3 + 0.49 * x2 ...
    signed = model.users(torch.tensor([[PAD, PAD, 3, 4]]), torch.tensor([[0.0, 0.0, -1.0, 1.0]])).detach().numpy()[0]
    want = table[4] - 0.7 * table[3]
    np.testing.assert_allclose(signed, want / np.linalg.norm(want), atol=1e-5)


def test_next_item_hit_rate_by_hand():
    index = {x: i for i, x in enumerate("ABC")}
    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32)
    before = [Event("u", "A", 1, 5)]
    # u likes B (nearest to A after A itself, which is seen): hit at k=1; then C: u = pooled(A, B), C ranks
    # 1st of the unseen; new user x has no vector: not scored; u's dislike of nothing else is not scored.
    after = [Event("u", "B", 2, 5), Event("x", "A", 3, 5), Event("u", "C", 4, 5)]
    assert next_item_hit_rate(vectors, before, after, index, 0.9, 10, k=1) == {"hr@1": 1.0, "events": 2}
    far = np.array([[1, 0], [0, 1], [0.9, 0.1]], dtype=np.float32)  # now C beats B after A: a miss, then C hits
    assert next_item_hit_rate(far, before, after, index, 0.9, 10, k=1) == {"hr@1": 0.5, "events": 2}


def test_next_item_hit_rate_in_chunks_equals_one_block(monkeypatch):
    from rayrec.learning import held_out

    events, index, text = _planted(text_signal=1.0)
    vectors = np.random.default_rng(3).standard_normal((len(index), 8)).astype(np.float32)
    whole = next_item_hit_rate(vectors, events[:500], events[500:], index, 0.8, 8, k=5)
    monkeypatch.setattr(held_out, "HIT_RATE_CHUNK", 7)  # 193 scored events in 28 blocks, the last one short
    assert next_item_hit_rate(vectors, events[:500], events[500:], index, 0.8, 8, k=5) == whole
    assert whole["events"] == 193 and 0 < whole["hr@5"] < 1


def _save(root: Path, kind: str = "two-tower", n: int = 4, dim: int = 3) -> str:
    rng = np.random.default_rng(n)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return store.save(root, kind, [f"i{j}" for j in range(n)], v, np.arange(n) % 2 == 0,
                      rng.standard_normal((dim, 5)), rng.standard_normal(dim), {"params": {"dim": dim}})


def test_model_files_round_trip_without_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = _save(tmp_path)
    second = _save(tmp_path, n=6)
    assert [Path(first).name, Path(second).name] == ["v1", "v2"]
    assert sorted(p.name for p in Path(second).iterdir()) == ["items.parquet", "manifest.json", "text_map.safetensors"]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model file was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    latest = store.load("latest", tmp_path)
    assert latest.version == "v2" and latest.item_ids == [f"i{j}" for j in range(6)] and latest.dim == 3
    rng = np.random.default_rng(6)
    v = rng.standard_normal((6, 3)).astype(np.float32)
    np.testing.assert_allclose(latest.vectors, v / np.linalg.norm(v, axis=1, keepdims=True), atol=1e-6)
    assert latest.from_text.tolist() == [True, False] * 3
    w, b = rng.standard_normal((3, 5)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    want = x @ w.T + b
    np.testing.assert_allclose(latest.place(x), want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)
    assert store.load("v1", tmp_path).version == "v1" and store.load(first).item_ids == ["i0", "i1", "i2", "i3"]
    with pytest.raises(InvalidInputError, match="5-d text embeddings"):
        latest.place(np.zeros((1, 4), np.float32))


def test_latest_skips_unfinished_versions_and_bad_folders_are_named(tmp_path: Path):
    with pytest.raises(InvalidInputError, match="run `rayrec train` first"):
        store.load("latest", tmp_path)
    _save(tmp_path)
    (tmp_path / "v7").mkdir()  # a folder without a manifest: never `latest`, and its number is not reused
    (tmp_path / "v7" / "items.parquet").write_bytes(b"half a model")
    (tmp_path / ".staging-x").mkdir()
    assert store.load("latest", tmp_path).version == "v1"
    assert Path(_save(tmp_path)).name == "v8" and store.versions(tmp_path) == [1, 8]
    with pytest.raises(InvalidInputError, match="not a rayrec model folder"):
        store.load(str(tmp_path / "v7"))
    (tmp_path / "v8" / "items.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidInputError, match="unreadable or incomplete"):
        store.load("v8", tmp_path)
    manifest = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    del manifest["text_dim"], manifest["kind"]
    (tmp_path / "v1" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInputError, match="manifest.json lacks kind, text_dim"):
        store.load("v1", tmp_path)
    # rows of 2 and 4 numbers: 6 in all, a multiple of dim 3, yet no row is a 3-d vector
    pq.write_table(pa.table({"item_id": ["a", "b"], "vector": [[1.0, 0.0], [0.0, 1.0, 0.0, 0.0]],
                             "from_text": [False, False]}), tmp_path / "v8" / "items.parquet")
    with pytest.raises(InvalidInputError, match="items.parquet has vectors that are not 3-d"):
        store.load("v8", tmp_path)
    with pytest.raises(InvalidInputError, match="id_dropout"):
        TrainParams(id_dropout=1.0)


def test_next_item_hit_rate_equals_the_loop_over_top_k_on_random_data():
    from rayrec.evaluation.baselines import top_k
    from rayrec.learning.examples import positives_by_user

    rng = np.random.default_rng(0)
    n = 50
    v = rng.standard_normal((n, 4))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    index = {str(i): i for i in range(n)}
    events = [Event(f"u{rng.integers(8)}", str(rng.integers(n)), t, float(rng.integers(1, 6))) for t in range(400)]
    before, after = events[:200], events[200:]
    positives = positives_by_user(before, index)
    seen: dict[str, set[int]] = {}
    for e in before:
        seen.setdefault(e.user, set()).add(index[e.item])
    hits = scored = 0
    for e in after:
        mine = seen.setdefault(e.user, set())
        if e.positive:
            if positives.get(e.user):
                scored += 1
                hits += index[e.item] in top_k(v @ pooled(v, positives[e.user], 0.8, 5), 10, mine)
            positives.setdefault(e.user, []).append(index[e.item])
        mine.add(index[e.item])
    assert scored > 50
    assert next_item_hit_rate(v, before, after, index, 0.8, 5) == {"hr@10": hits / scored, "events": scored}


def test_durable_state_is_only_served_in_the_item_space_it_was_written_in(tmp_path: Path):
    from rayrec.learning.placement import check_stored_space

    fresh = str(tmp_path / "fresh")
    check_stored_space(fresh, "v2", holds_items=False)  # an empty system takes the space it is started with
    check_stored_space(fresh, "v2", holds_items=True)
    with pytest.raises(InvalidInputError, match="item space 'v2', not 'v3'.*--model v2"):
        check_stored_space(fresh, "v3", holds_items=True)
    with pytest.raises(InvalidInputError, match="item space 'v2', not 'text'"):
        check_stored_space(fresh, "text", holds_items=True)
    old = str(tmp_path / "old")  # state from before learned spaces: no marker, items in the text space
    check_stored_space(old, "text", holds_items=True)
    with pytest.raises(InvalidInputError, match="item space 'text', not 'v1'.*--model text"):
        check_stored_space(old, "v1", holds_items=True)
    # A model swap records the new space in layout.json (its commit point): that record wins over the marker.
    from rayrec.config import IndexConfig, RayrecConfig
    from rayrec.system.layout import Generation, write_layout

    config = RayrecConfig(index=IndexConfig(dim=4), storage=fresh)
    write_layout(config, Generation(1, "abc", 1), item_space={"version": "v5", "path": "/models/v5"})
    check_stored_space(fresh, "v5", holds_items=True)
    with pytest.raises(InvalidInputError, match="item space 'v5', not 'v2'.*POST /model"):
        check_stored_space(fresh, "v2", holds_items=True)
    write_layout(config, Generation(2, "def", 2))  # a later re-shard keeps the recorded space
    check_stored_space(fresh, "v5", holds_items=True)


def test_ridge_map_recovers_an_exact_linear_map_and_its_offset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    w, b = rng.normal(size=(3, 6)), rng.normal(size=3)
    got_w, got_b = ridge_map(x, x @ w.T + b, alpha=1e-9)
    np.testing.assert_allclose(got_w, w, atol=1e-4)
    np.testing.assert_allclose(got_b, b, atol=1e-4)
    # Regularised, the map shrinks towards zero, never the offset: on centred data the offset is y's mean.
    shrunk_w, shrunk_b = ridge_map(x - x.mean(0), x @ w.T + b, alpha=1e6)
    assert np.abs(shrunk_w).max() < 0.1
    np.testing.assert_allclose(shrunk_b, (x @ w.T + b).mean(0), atol=1e-4)


def test_ridge_text_map_places_the_items_without_history_from_those_with():
    from rayrec.learning.spaces import from_model

    rng = np.random.default_rng(3)
    text = rng.standard_normal((12, 6)).astype(np.float32)
    has = np.arange(12) % 3 != 0  # rows 0, 3, 6, 9 have no history
    torch.manual_seed(0)
    model = TwoTower(text, has, TrainParams(dim=4, text_map="ridge"))
    table = model.item_table()
    space = from_model(model, has, [])
    np.testing.assert_array_equal(space.vectors[has], table[has])
    w, b = ridge_map(text[has], table[has])
    want = text[~has] @ w.T + b
    np.testing.assert_allclose(space.vectors[~has], want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(space.text_weight, w, atol=1e-6)
    assert space.from_text.tolist() == (~has).tolist()
