"""The sequential user model: its windows by hand, the numpy serving pass against torch, training on planted order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rayrec.evaluation.data import Event
from rayrec.exceptions import InvalidInputError
from rayrec.learning.sequential import (
    EVENT_TYPES,
    N_TYPES,
    PAD_ROW,
    SequenceParams,
    SequentialModel,
    inputs_of,
    next_item_hit_rate,
    train_sequential,
    user_sequences,
    windows,
)
from rayrec.users.sequence_model import SequenceModel


def test_windows_cut_each_users_events_from_the_end_and_target_the_next_positive():
    # (item row, event type, positive): u's last piece is its last 4 events, then the rest.
    seq = [(4, 1, True), (5, 3, False), (6, 1, True), (7, 2, False), (8, 1, True), (9, 1, True)]
    x, types, y = windows({"u": seq, "b": [(1, 1, True), (2, 1, True)], "c": [(3, 1, True)]}, length=3)
    assert x.tolist() == [[7, 8, 9], [PAD_ROW, 5, 6], [PAD_ROW, PAD_ROW, 2]]  # input rows: item row + 1
    assert types.tolist() == [[1, 2, 1], [0, 1, 3], [0, 0, 1]]
    assert y.tolist() == [[-1, 8, 9], [-1, -1, 6], [-1, -1, 2]]  # 7 and 5 were not positive: nothing to learn
    assert inputs_of([(1, 1), (2, 3), (3, 1), (4, 2)], 3) == ([3, 4, 5], [3, 1, 2])
    assert inputs_of([(0, 1)], 3) == ([PAD_ROW, PAD_ROW, 1], [0, 0, 1])
    events = [Event("u", "x", 0, 5), Event("u", "y", 1, 2), Event("v", "y", 2, None), Event("u", "z", 3, 3)]
    assert user_sequences(events, {"x": 0, "y": 1, "z": 2}) == {
        "u": [(0, EVENT_TYPES["like"], True), (1, EVENT_TYPES["dislike"], False), (2, EVENT_TYPES["click"], False)],
        "v": [(1, EVENT_TYPES["click"], True)],
    }


@pytest.mark.parametrize("blocks", [1, 2])
def test_the_numpy_pass_equals_torchs_for_every_history_length(blocks):
    params = SequenceParams(dim=16, length=6, blocks=blocks)
    torch.manual_seed(0)
    model = SequentialModel(20, params).eval()
    for p in model.parameters():  # far from the initialisation, so every weight matters
        torch.nn.init.normal_(p, std=0.3)
    served = SequenceModel({k: v.numpy() for k, v in model.state_dict().items()}, blocks)
    rng = np.random.default_rng(0)
    for n in [1, 2, 5, 6, 9]:  # shorter than the window (padding), equal, longer (the last 6 count)
        events = list(zip(rng.integers(0, 20, n).tolist(), rng.integers(1, N_TYPES, n).tolist()))
        rows, types = inputs_of(events, params.length)
        with torch.no_grad():
            want = model.users(torch.tensor([rows]), torch.tensor([types]))[0].numpy()
        np.testing.assert_allclose(served.user_vector(events), want, atol=2e-5)
    assert served.user_vector([]) is None and served.item_vectors.shape == (20, 16)
    # Many histories in one padded pass: each the same as alone (an empty one and unknown rows give None).
    histories = [list(zip(rng.integers(0, 20, n).tolist(), rng.integers(1, N_TYPES, n).tolist()))
                 for n in [3, 0, 9, 1, 6]] + [[(25, 1)]]
    batched = served.user_vectors(histories)
    for events, got in zip(histories, batched, strict=True):
        alone = served.user_vector(events)
        assert (got is None) == (alone is None) == (not [j for j, _ in events if j < 20])
        if got is not None:
            np.testing.assert_allclose(got, alone, atol=1e-5)


def test_the_sampled_loss_by_hand_over_the_target_and_the_drawn_items():
    params = SequenceParams(dim=8, length=4, blocks=1, dropout=0.0)
    torch.manual_seed(2)
    model = SequentialModel(9, params, sampled=4).eval()
    seq = torch.tensor([[PAD_ROW, 3, 5, 3], [2, 1, 6, 4]])  # input rows: items 2, 4, 2 / 1, 0, 5, 3
    types = torch.tensor([[0, 1, 1, 2], [1, 1, 3, 1]])
    target = torch.tensor([[-1, 4, 1, 8], [0, -1, 2, 1]])
    torch.manual_seed(7)
    got = float(model(seq, types, target).detach())
    torch.manual_seed(7)
    drawn = torch.randperm(9)[:4].tolist()
    with torch.no_grad():
        logits = (model.hidden(seq, types) @ model.outputs.weight.T).numpy().astype(np.float64)
    losses = []
    for b in range(2):
        for t in range(4):
            y = int(target[b, t])
            if y < 0:
                continue
            seen = {int(r) - 1 for r in seq[b, : t + 1] if r != PAD_ROW}
            others = [j for j in drawn if j != y and j not in seen]  # the target once; seen items never
            row = logits[b, t]
            scores = [row[y]] + [row[j] + np.log(8 / 4) for j in others]
            losses.append(np.log(np.exp(scores).sum()) - row[y])
    assert got == pytest.approx(float(np.mean(losses)), rel=1e-5)


def test_the_softmax_is_sampled_only_where_an_epoch_would_score_too_many_pairs():
    index = {f"i{j}": j for j in range(10)}
    events = [Event(f"u{u}", f"i{(u + s) % 10}", float(8 * u + s), 5.0) for u in range(40) for s in range(8)]
    params = SequenceParams(dim=8, length=4, blocks=1, epochs=1, batch_size=32, negatives=4)
    full, _ = train_sequential(events, index, params)  # 80 windows x 4 slots x 10 items = 3,200 pairs
    sampled, _ = train_sequential(events, index, dataclasses.replace(params, max_logits=3_199))
    assert full.sampled is None and sampled.sampled == 4


def test_training_learns_the_order_a_bag_cannot_see():
    """Items form a cycle 0 -> 1 -> ... -> 9 -> 0; each user walks it from a random start. Only order tells
    the next item: the trained model ranks it first for most held-out walks."""
    rng = np.random.default_rng(1)
    index = {f"i{j}": j for j in range(10)}
    events, t = [], 0.0
    for u in range(150):
        start = int(rng.integers(10))
        for step in range(8):
            events.append(Event(f"u{u}", f"i{(start + step) % 10}", t, 5.0))
            t += 1
    params = SequenceParams(dim=16, length=8, blocks=1, dropout=0.0, epochs=30, batch_size=32, learning_rate=1e-2)
    model, history = train_sequential(events, index, params)
    assert history[-1]["loss"] < history[0]["loss"]
    served = SequenceModel({k: v.detach().numpy() for k, v in model.state_dict().items()}, params.blocks)
    hits = 0
    for _ in range(50):
        start, n = int(rng.integers(10)), int(rng.integers(2, 7))
        walk = [((start + s) % 10, EVENT_TYPES["like"]) for s in range(n)]
        scores = served.item_vectors @ served.user_vector(walk)
        hits += int(np.argmax(scores) == (start + n) % 10)
    assert hits >= 45, hits
    # The validation figure agrees: held-out walks' next items, seen ones excluded.
    held = [Event(f"h{u}", f"i{(first + s) % 10}", 1000.0 + 10 * u + s, 5.0)
            for u, first in enumerate([0, 3, 7]) for s in range(4)]
    assert next_item_hit_rate(model, events, held, index, k=1) > 0.8
    with pytest.raises(InvalidInputError, match="nothing to train"):
        train_sequential([Event("u", "i0", 0, 5)], index, params)


def _loss_by_hand(model: SequentialModel, seq: torch.Tensor, types: torch.Tensor, target: torch.Tensor) -> float:
    """The mean softmax loss over the slots with a target, each slot's earlier items (but its target) left out."""
    with torch.no_grad():
        logits = (model.hidden(seq, types) @ model.outputs.weight.T).numpy().astype(np.float64)
    losses = []
    for b in range(seq.shape[0]):
        for t in range(seq.shape[1]):
            if target[b, t] < 0:
                continue
            seen = {int(r) - 1 for r in seq[b, : t + 1] if r != PAD_ROW} - {int(target[b, t])}
            allowed = [j for j in range(logits.shape[2]) if j not in seen]
            row = logits[b, t]
            losses.append(np.log(np.exp(row[allowed]).sum()) - row[int(target[b, t])])
    return float(np.mean(losses))


def test_the_loss_by_hand_with_seen_items_masked_up_to_each_slot():
    params = SequenceParams(dim=8, length=4, blocks=1, dropout=0.0)
    torch.manual_seed(2)
    model = SequentialModel(6, params).eval()
    seq = torch.tensor([[PAD_ROW, 3, 5, 3], [2, 1, 6, 4]])  # input rows: items 2, 4, 2 / 1, 0, 5, 3
    types = torch.tensor([[0, 1, 1, 2], [1, 1, 3, 1]])
    target = torch.tensor([[-1, 4, 1, 5], [0, -1, 2, 1]])  # the last: item 1, seen before, stays the label
    got = float(model(seq, types, target).detach())
    assert got == pytest.approx(_loss_by_hand(model, seq, types, target), rel=1e-5)
    plain = SequentialModel(6, dataclasses.replace(params, mask_seen=False)).eval()
    plain.load_state_dict(model.state_dict())
    assert float(plain(seq, types, target).detach()) > got  # the seen items took probability there
    # Random windows, padded, with repeats and targets seen before: the same loss.
    rng = np.random.default_rng(4)
    seq = torch.as_tensor(rng.integers(1, 7, (16, 4)) * (rng.random((16, 4)) > 0.2))
    target = torch.as_tensor(np.where(rng.random((16, 4)) > 0.3, rng.integers(0, 6, (16, 4)), -1))
    types = torch.as_tensor(rng.integers(1, 4, (16, 4))) * (seq != PAD_ROW)
    assert float(model(seq, types, target).detach()) == pytest.approx(_loss_by_hand(model, seq, types, target),
                                                                      rel=1e-5)


@pytest.mark.parametrize("capped", [False, True])
def test_the_space_is_trained_again_on_every_event_unless_the_validation_slice_was_capped(capped, monkeypatch):
    from rayrec.evaluation import ease
    from rayrec.learning.sequential_space import train_space

    index = {f"i{j}": j for j in range(10)}
    events = [Event(f"u{u}", f"i{(u + s) % 10}", float(8 * u + s), 5.0) for u in range(40) for s in range(8)]
    if capped:  # 32 events is 10% of these 320: cut to 20, the 300 before them are nearly all
        monkeypatch.setattr(ease, "VALIDATION_MAX_EVENTS", 20)
    params = SequenceParams(dim=8, length=4, blocks=1, epochs=3, patience=1, batch_size=32, tower=False)
    lines: list[str] = []
    space = train_space(events, index, np.eye(10, dtype=np.float32), params, log=lines.append)
    assert space.info["retrained_on_every_event"] is not capped
    assert ("kept as trained on the 300 events" in lines[-1]) is capped
    assert space.vectors.shape[0] == 10 and space.user.vector([("i1", "like")]) is not None


def test_the_prepared_check_equals_the_loop_over_each_scored_event():
    from rayrec.learning.sequential import NextItemCheck

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = SequentialModel(30, SequenceParams(dim=8, length=5, blocks=1)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    index = {f"i{j}": j for j in range(30)}
    events = [Event(f"u{rng.integers(8)}", f"i{rng.integers(30)}", float(t), float(rng.integers(1, 6)))
              for t in range(600)]
    before, after = events[:400], events[400:]

    def by_hand(k: int) -> float:  # each scored event alone: its window's scores, its seen items at -inf
        sequences: dict[str, list[tuple[int, int]]] = {}
        seen: dict[str, set[int]] = {}
        hits = scored = 0
        for n, e in enumerate(events):
            mine = sequences.setdefault(e.user, [])
            if n >= 400 and e.positive and mine:
                rows, types = inputs_of(mine, 5)
                with torch.no_grad():
                    row = (model.users(torch.tensor([rows]), torch.tensor([types])) @ model.outputs.weight.T)[0]
                scored += 1
                target = index[e.item]
                if target not in seen[e.user]:
                    row[sorted(seen[e.user])] = float("-inf")
                    hits += int(int((row > row[target]).sum()) + int((row[:target] == row[target]).sum()) < k)
            mine.append((index[e.item], EVENT_TYPES[e.feedback]))
            seen.setdefault(e.user, set()).add(index[e.item])
        return hits / scored

    check = NextItemCheck(before, after, index, 5)
    for k in (1, 3, 10):
        assert check.hit_rate(model, k, batch=7) == check.hit_rate(model, k) == by_hand(k)
    assert check.hit_rate(model, 10) > check.hit_rate(model, 1)
