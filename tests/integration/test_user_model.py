"""A system whose user actors hold the sequential user model: real actors, a real model folder, real storage."""

from __future__ import annotations

import numpy as np
import ray
import torch

from rayrec import Rayrec
from rayrec.learning.sequential import SequenceParams, SequentialModel
from rayrec.users import model_files
from rayrec.users.sequence_model import SequenceModel
from rayrec.users.sequential_user import SequentialUser, equal_norms, spread
from tests.integration.conftest import make_config

N = 12


def _model(folder) -> tuple[SequentialUser, np.ndarray]:
    params = SequenceParams(dim=8, length=6, blocks=1)
    torch.manual_seed(0)
    net = SequentialModel(N, params).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    rng = np.random.default_rng(0)
    sequence = SequenceModel({k: v.detach().numpy() for k, v in net.state_dict().items()}, params.blocks)
    context, target = rng.standard_normal((N, 4)).astype(np.float32), rng.standard_normal((N, 4)).astype(np.float32)
    user = SequentialUser(sequence, {f"i{j}": j for j in range(N)}, context, 0.8, 0.6,
                          spread(sequence.item_vectors), spread(target))
    model_files.save(user, folder)
    items = equal_norms(np.concatenate([sequence.item_vectors, target], axis=1))
    return user, items / np.linalg.norm(items, axis=1, keepdims=True)


def test_feedback_recomputes_the_user_from_their_events_and_survives_a_restart(ray_session, tmp_path):
    user, items = _model(tmp_path / "model")
    config = make_config(user.dim, num_shards=2, num_user_actors=1, storage=str(tmp_path / "state"),
                         user_model=str(tmp_path / "model"))
    ids = [f"i{j}" for j in range(N)] + ["new"]  # "new" came after training: the model does not know it
    vectors = np.vstack([items, items[:1]])
    with Rayrec.start(config) as system:
        system.upsert(ids, vectors)
        actor = system.users[0]
        assert ray.get(actor.info.remote())["user_model"] == "sequential"
        system.set_histories({"u": ["i1", "i2"]})
        events = [("u", "i3", "like", "e1"), ("u", "i4", "skip", "e2"), ("v", "i5", "click", "e3"),
                  ("u", "i6", "purchase", "e4"), ("u", "nope", "like", "e5")]
        answers = ray.get(actor.feedback_many.remote(events))
        assert [a["applied"] for a in answers[:4]] == [True] * 4 and "nope" in str(answers[4])
        want = user.vector([("i1", "history"), ("i2", "history"), ("i3", "like"), ("i4", "skip"), ("i6", "purchase")])
        np.testing.assert_allclose(system.get_user("u")["vector"], want, atol=1e-5)
        np.testing.assert_allclose(system.get_user("v")["vector"], user.vector([("i5", "click")]), atol=1e-5)
        # The answer is the dot product over the shards, and says which model moved the user.
        out = ray.get(actor.recommend.remote("u", 3, True))
        scores = items @ want
        for seen in (1, 2, 3, 4, 6):
            scores[seen] = -np.inf
        assert [i["item_id"] for i in out["items"]] == [f"i{j}" for j in np.argsort(-scores)[:3]]
        assert out["user_model"] == "sequential"
        # An item the model does not know moves the user by the rule (its vector asked of its shard).
        before = system.get_user("u")
        assert system.feedback("u", "new", "like", event_id="e6")["applied"] is True
        after = system.get_user("u")
        assert after["version"] == before["version"] + 1 and not np.allclose(after["vector"], before["vector"])
        assert system.feedback("u", "i7", "like", event_id="e6")["applied"] is False  # a resent event id
        # A bulk import: every event kept and logged, the vector computed once, at the user's last event.
        past = [("w", f"i{j}", kind, f"w{n}") for n, (j, kind) in enumerate(
            [(1, "like"), (7, "skip"), (2, "click"), (9, "purchase"), (3, "dislike"), (4, "like")])]
        answers = ray.get(actor.feedback_many.remote(past, last_only=True))
        assert [a["version"] for a in answers] == [1, 2, 3, 4, 5, 6]
        imported = system.get_user("w")
        np.testing.assert_allclose(imported["vector"], user.vector([(i, e) for _, i, e, _ in past]), atol=1e-5)
    with Rayrec.start(config) as again:  # recovery replays the logged vectors: the same user comes back
        np.testing.assert_array_equal(again.get_user("u")["vector"], after["vector"])
        np.testing.assert_array_equal(again.get_user("w")["vector"], imported["vector"])
        assert len(again.get_user("w")["history"]) == 6 and again.get_user("w")["version"] == 6
        assert [h["item_id"] for h in again.get_user("u")["history"]] == ["i1", "i2", "i3", "i4", "i6", "new"]


def test_a_model_that_cannot_be_loaded_leaves_the_rule_and_says_why(ray_session, tmp_path):
    config = make_config(16, num_user_actors=1, user_model=str(tmp_path / "missing"))
    with Rayrec.start(config) as system:
        system.upsert(["a", "b"], np.eye(2, 16, dtype=np.float32))
        info = ray.get(system.users[0].info.remote())
        assert info["user_model"] == "rule" and "no readable user model" in info["user_model_error"]
        assert system.feedback("u", "a", "like")["applied"] is True
        assert ray.get(system.users[0].recommend.remote("u", 1, False))["user_model"] == "rule"
