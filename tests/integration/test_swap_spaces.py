"""Live model swaps of a real system (real local Ray, storage) into models of fewer dimensions than its index
(served padded) and to and from a sequential version, whose user model then moves the users; a user actor
killed after the swap, and the whole system restarted, come back with the user model of their space."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from rayrec import Rayrec
from rayrec.hashing import partition_of
from rayrec.learning import store
from rayrec.users.feedback_rule import history_vector, update_vector
from tests._models import padded, sequential, two_tower
from tests.integration.conftest import make_config, unit_vectors
from tests.integration.waiting import wait_until

DIM, TEXT_DIM = 32, 6  # the running index (a bigger space than either model: 8-d two-tower, 13-d sequential)
IDS = [f"i{n}" for n in range(40)]
HISTORIES = {f"u{n}": IDS[3 * n : 3 * n + 3] for n in range(6)}


def _top(items: np.ndarray, user: np.ndarray, seen: set[str], k: int = 5) -> list[str]:
    """Brute force: the k items of largest dot product with the user, seen ones left out."""
    return [IDS[j] for j in np.argsort(-(items @ user), kind="stable") if IDS[j] not in seen][:k]


def _check(system: Rayrec, items: np.ndarray, users: dict[str, np.ndarray], moved_by: str) -> None:
    """The index holds every item padded, each user's vector is `users`', their top 5 the brute-force one."""
    got = {r["item_id"]: r["vector"] for r in system.fetch(IDS)}
    np.testing.assert_allclose(np.stack([got[i] for i in IDS]), items, atol=1e-6)
    for user_id, vector in users.items():
        state = system.get_user(user_id)
        np.testing.assert_allclose(state["vector"], vector, atol=1e-5, err_msg=user_id)
        out = system.recommend(user_id, k=5)
        seen = {h["item_id"] for h in state["history"]}
        assert [i["item_id"] for i in out["items"]] == _top(items, vector, seen), user_id
        assert out["user_model"] == moved_by, user_id
    assert {ray.get(u.info.remote())["user_model"] for u in system.users} == {moved_by}


def _by_rule(items: np.ndarray, events: dict[str, list[tuple[str, str]]], rule: Any) -> dict[str, np.ndarray]:
    vec = dict(zip(IDS, items))
    out = {}
    for user_id, history in HISTORIES.items():
        out[user_id] = history_vector(np.stack([vec[i] for i in history]), rule.history_recency)
        for item, event in events.get(user_id, []):
            out[user_id] = update_vector(out[user_id], vec[item], rule.learning_rates[event])
    return out


def _by_model(user: Any, events: dict[str, list[tuple[str, str]]]) -> dict[str, np.ndarray]:
    return {u: padded(user.vector([(i, "history") for i in h] + events.get(u, [])), DIM)[0]
            for u, h in HISTORIES.items()}


def test_swaps_into_smaller_and_sequential_models_move_users_by_the_spaces_model_across_restarts(
    ray_session, tmp_path
):
    rng = np.random.default_rng(11)
    models = tmp_path / "models"
    tower_folder = two_tower(models, IDS, 8, TEXT_DIM, rng)  # v1
    seq_folder, user_model = sequential(models, IDS, TEXT_DIM, rng)  # v2
    tower, seq = padded(store.load(tower_folder).vectors, DIM), padded(store.load(seq_folder).vectors, DIM)
    config = make_config(DIM, num_shards=2, num_user_actors=2, storage=str(tmp_path / "state"))
    rule = config.feedback
    events: dict[str, list[tuple[str, str]]] = {"u1": [(IDS[30], "like")], "u2": [(IDS[31], "dislike")]}
    with Rayrec.start(config) as system:
        system.upsert(IDS, unit_vectors(rng, len(IDS), DIM))
        system.set_histories(HISTORIES)
        for user_id, mine in events.items():
            for n, (item, event) in enumerate(mine):
                system.feedback(user_id, item, event, event_id=f"{user_id}-{n}")

        out = system.swap_model("v1", str(models))  # 8-d into the 32-d index: padded; the rule moves users
        assert (out["model_version"], out["previous"], out["items"], out["users"]) == ("v1", "unnamed", 40, 6)
        _check(system, tower, _by_rule(tower, events, rule), "rule")

        out = system.swap_model("v2", str(models))  # the sequential version: its model re-derives every user
        assert (out["model_version"], out["previous"], out["users"]) == ("v2", "v1", 6)
        _check(system, seq, _by_model(user_model, events), "sequential")
        for n, (user_id, item, event) in enumerate([("u3", IDS[33], "click"), ("u1", IDS[34], "like")]):
            assert system.feedback(user_id, item, event, event_id=f"after-{n}")["applied"]  # moved by the model
            events.setdefault(user_id, []).append((item, event))
        _check(system, seq, _by_model(user_model, events), "sequential")

        # A user actor killed after the swap restarts from storage in v2, with v2's user model.
        victim = partition_of("u3", len(system.users))
        ray.kill(system.users[victim], no_restart=False)
        wait_until(lambda: system.get_user("u3"), 60, "the killed user actor answering again")
        info = ray.get(system.users[victim].info.remote())
        assert (info["user_model"], info["user_model_error"]) == ("sequential", None)
        assert system.feedback("u3", IDS[35], "like", event_id="after-kill")["applied"]
        events["u3"].append((IDS[35], "like"))
        _check(system, seq, _by_model(user_model, events), "sequential")

    # The whole system restarted on its storage (configured with no user model) serves v2 with v2's model.
    with Rayrec.start(config) as again:
        assert ray.get(again.router.item_space.remote())["version"] == "v2"
        _check(again, seq, _by_model(user_model, events), "sequential")
        # And back to the two-tower version: every user re-derived by the rule, which moves them from then on.
        out = again.swap_model("v1", str(models))
        assert (out["model_version"], out["previous"]) == ("v1", "v2")
        assert again.feedback("u4", IDS[36], "like", event_id="back")["applied"]
        events["u4"] = [(IDS[36], "like")]
        _check(again, tower, _by_rule(tower, events, rule), "rule")
