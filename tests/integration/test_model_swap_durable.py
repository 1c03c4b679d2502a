"""A model swap of a system with storage: the new space survives a restart, and a user actor that dies between
the switch and its re-derivation comes back in the new space too."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from rayrec import Rayrec
from rayrec.exceptions import InvalidInputError
from rayrec.hashing import partition_of
from rayrec.learning import store
from rayrec.system.deploy import create_shards
from rayrec.system.layout import Generation
from rayrec.system.model_swap import space_of
from rayrec.users.feedback_rule import history_vector, update_vector
from tests.integration.conftest import make_config, unit_vectors
from tests.integration.waiting import wait_until

DIM, TEXT_DIM = 8, 6
IDS = [f"i{n}" for n in range(40)]
HISTORIES = {f"u{n}": IDS[3 * n : 3 * n + 4] for n in range(4)}
EVENTS = {"u1": [(IDS[20], "like"), (IDS[21], "dislike")], "u2": [(IDS[22], "click")], "t": [(IDS[7], "like")]}


def _model(root, rng) -> store.LearnedSpace:
    """A model version over IDS: random unit item vectors and a random text path (a space unlike any other)."""
    folder = store.save(root, "two-tower", IDS, unit_vectors(rng, len(IDS), DIM), np.zeros(len(IDS), bool),
                        rng.standard_normal((DIM, TEXT_DIM)).astype(np.float32), np.zeros(DIM, np.float32), {})
    return store.load(folder)


def _expected(space: store.LearnedSpace, embedding: np.ndarray, rule) -> dict[str, np.ndarray]:
    """Every user's vector had their events come in `space` (the feedback rule applied by hand)."""
    vec = dict(zip(space.item_ids, space.vectors))
    out = {u: history_vector(np.stack([vec[i] for i in h]), rule.history_recency) for u, h in HISTORIES.items()}
    out["t"] = space.place(embedding[None, :])[0]
    for user, events in EVENTS.items():
        for item, event in events:
            out[user] = update_vector(out[user], vec[item], rule.learning_rates[event])
    return out


def _check(system: Rayrec, space: store.LearnedSpace, expected: dict[str, np.ndarray]) -> None:
    got = {r["item_id"]: r["vector"] for r in system.fetch(IDS)}
    np.testing.assert_allclose(np.stack([got[i] for i in IDS]), space.vectors, atol=1e-6)
    for user, vector in expected.items():
        np.testing.assert_allclose(system.get_user(user)["vector"], vector, atol=1e-5, err_msg=user)
    # And the answer is the brute-force top 5 in that space.
    scores = space.vectors @ expected["u1"]
    seen = set(HISTORIES["u1"]) | {i for i, _ in EVENTS["u1"]}
    truth = [IDS[j] for j in np.argsort(-scores) if IDS[j] not in seen][:5]
    assert [i["item_id"] for i in system.recommend("u1", k=5)["items"]] == truth


def test_a_durable_swap_survives_restarts_even_one_between_the_switch_and_the_rederivation(ray_session, tmp_path):
    rng = np.random.default_rng(5)
    models = tmp_path / "models"
    first, second = _model(models, rng), _model(models, rng)
    embedding = rng.standard_normal(TEXT_DIM).astype(np.float32)  # the text user's text embedding
    config = make_config(DIM, num_shards=2, num_user_actors=2, storage=str(tmp_path / "state"), snapshot_every=25)
    rule = config.feedback
    with Rayrec.start(config) as system:
        system.upsert(IDS, first.vectors)
        system.set_histories(HISTORIES)
        ray.get(system._users_of("t").set_vector.remote("t", first.place(embedding[None, :])[0], "set-t", embedding))
        for user, events in EVENTS.items():
            for n, (item, event) in enumerate(events):
                system.feedback(user, item, event, event_id=f"{user}-{n}")
        _check(system, first, _expected(first, embedding, rule))
        # A model of another dimension is refused before anything is recorded: the space stays unnamed.
        other = store.save(models / "other", "two-tower", IDS, unit_vectors(rng, len(IDS), DIM + 1),
                           np.zeros(len(IDS), bool), np.zeros((DIM + 1, TEXT_DIM), np.float32),
                           np.zeros(DIM + 1, np.float32), {})
        with pytest.raises(InvalidInputError, match="9-d but this system's index is 8-d"):
            system.swap_model(str(other))
        assert ray.get(system.router.item_space.remote()) is None
        out = system.swap_model("v2", str(models))
        assert (out["model_version"], out["previous"], out["items"], out["users"]) == ("v2", "unnamed", 40, 5)
        _check(system, second, _expected(second, embedding, rule))

    # Every actor stopped and started again on the storage: items, users and the space are v2's.
    with Rayrec.start(config) as again:
        assert ray.get(again.router.item_space.remote())["version"] == "v2"
        _check(again, second, _expected(second, embedding, rule))
        # Back to v1 by hand, a user actor dying after the switch, before its re-derivation (and snapshot).
        router, users = again.router, again.users
        cfg, current, detached = ray.get(router.get_layout.remote())
        new = Generation(current.number + 1, "crash", current.num_shards)
        v1 = space_of("v1", str(models / "v1"))
        ray.get(router.stage_space.remote(create_shards(cfg, new, detached), new, current.number, v1, {}))
        ray.get([u.pause.remote("crash", v1, 120) for u in users])
        ray.get(router.switch_space.remote(new))
        victim = partition_of("u1", len(users))
        ray.kill(users[victim], no_restart=False)
        assert ray.get(users[1 - victim].resume.remote("crash"))["resumed"]
        # The victim restarts: its state is the pause's snapshot (v2), the router's space v1.
        wait_until(lambda: again.get_user("u1"), 60, "the killed user actor answering again")
        _check(again, first, _expected(first, embedding, rule))
    with Rayrec.start(config) as third:  # and that re-derivation was made durable too
        assert ray.get(third.router.item_space.remote())["version"] == "v1"
        _check(third, first, _expected(first, embedding, rule))
