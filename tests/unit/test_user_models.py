"""Which user model moves a user actor's users in each item space (rayrec.users.user_models), and every user
computed again at a swap (rayrec.users.rederiving): against the model's own vectors and the rule by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rayrec.config import FeedbackRule
from rayrec.learning import store
from rayrec.system.model_swap import space_of
from rayrec.users import model_files
from rayrec.users.feedback_rule import history_vector, update_vector
from rayrec.users.rederiving import rederive_all
from rayrec.users.user_models import Padded, UserModels, of_space
from rayrec.users.user_state import UserStore
from tests._models import padded, sequential, two_tower

IDS = [f"i{j}" for j in range(10)]


def _space(folder: str) -> dict[str, str | None]:
    return space_of(Path(folder).name, folder)


def test_a_sequential_versions_space_has_its_user_model_padded_to_the_index_and_others_have_none(tmp_path):
    rng = np.random.default_rng(0)
    seq_folder, user = sequential(tmp_path, IDS, 6, rng)
    tower = two_tower(tmp_path, IDS, 5, 6, rng)
    events = [("i1", "like"), ("i4", "skip"), ("i2", "history")]
    model, error, folder = of_space(_space(seq_folder), None, 20)
    assert isinstance(model, Padded) and error is None and folder == str(Path(seq_folder) / store.USER_MODEL)
    got = model.vector(events)
    assert got.shape == (20,) and not got[user.dim:].any()
    np.testing.assert_array_equal(got[: user.dim], user.vector(events))
    assert model.knows("i3") and not model.knows("new") and model.vector([("new", "like")]) is None
    same, _, _ = of_space(_space(seq_folder), None, user.dim)  # the index's own dimension: not padded
    assert isinstance(same, type(user)) and same.dim == user.dim
    # Too large for the index, another kind of version, a space without a folder (the configured one serves).
    assert of_space(_space(seq_folder), None, user.dim - 1)[:2] == (
        None, f"user model {folder!r} not loaded: its users are 13-d, the index 12-d")
    assert of_space(_space(tower), str(Path(seq_folder) / store.USER_MODEL), 20) == (None, None, None)
    configured, error, _ = of_space(space_of("text", None), folder, user.dim)
    assert configured is not None and error is None
    assert of_space(None, None, 20) == (None, None, None)
    gone, error, _ = of_space(space_of("v9", str(tmp_path / "v9")), None, 20)
    assert gone is None and "v9" in error and "manifest.json" in error


def test_user_models_load_a_folder_once_and_a_broken_one_says_why(tmp_path):
    rng = np.random.default_rng(1)
    seq_folder, _ = sequential(tmp_path, IDS, 6, rng)
    tower = two_tower(tmp_path, IDS, 5, 6, rng)
    models = UserModels(None, 16)
    assert (models.name, models.model, models.error) == ("rule", None, None)
    loaded = models.load(_space(seq_folder))
    models.keep(loaded)  # at a swap's pause
    assert models.load(_space(seq_folder)) is loaded  # taken at the switch without reading the files again
    models.use(models.load(_space(seq_folder)))
    assert models.name == "sequential" and models.prepared is None and models.model is loaded[0]
    models.use(models.load(_space(tower)))
    assert (models.name, models.error) == ("rule", None)
    (Path(seq_folder) / store.USER_MODEL / model_files.TENSORS).unlink()
    broken = models.load(_space(seq_folder))
    assert broken[0] is None and "no readable user model" in broken[1]


def _store(model=None) -> UserStore:
    clock = iter(range(100, 10_000))
    return UserStore(13 + 3, FeedbackRule(decay_half_life_s=0), clock=lambda: float(next(clock)), model=model)


def test_rederive_all_computes_users_by_the_model_where_it_knows_them_else_by_the_rule(tmp_path):
    rng = np.random.default_rng(2)
    seq_folder, user = sequential(tmp_path, IDS, 6, rng)
    model, _, _ = of_space(_space(seq_folder), None, 16)
    old = {i: v for i, v in zip(IDS + ["new"], padded(rng.standard_normal((11, 16)), 16))}
    new = {i: v for i, v in zip(IDS + ["new"], padded(rng.standard_normal((11, 9)), 16))}  # a 9-d space, padded
    users = _store()  # moved by the rule in the old space, as before the swap
    users.set_history("h", ["i1", "i2"], np.stack([old["i1"], old["i2"]]))
    users.apply("h", "i3", "like", old["i3"])
    users.apply("n", "new", "like", old["new"])  # an item the model does not know
    embedding = rng.standard_normal(6).astype(np.float32)
    users.apply("t", "i5", "like", old["i5"])
    users.commit(users.plan_vector("t", old["i6"], source=embedding))  # then set by text: no event since
    users.by_model.model = model  # the swap took the new space's user model
    mean = padded(rng.standard_normal(9), 16)[0]
    placed = padded(rng.standard_normal(9), 16)[0]
    done = rederive_all(users, new, mean, lambda e: np.asarray([placed]), "v2")
    assert done == {"users": 3, "by_model": 1}
    want = padded(user.vector([("i1", "history"), ("i2", "history"), ("i3", "like")]), 16)[0]
    np.testing.assert_allclose(users.get("h").vector, want, atol=1e-6)
    np.testing.assert_allclose(users.get("n").vector, new["new"], atol=1e-6)  # by the rule, from nothing
    np.testing.assert_allclose(users.get("t").vector, placed, atol=1e-6)  # their text, placed again
    # The next feedback moves them by the model from their whole kept history, as the swap did.
    vector = users.by_model.vector("h", [("i7", "click")])
    np.testing.assert_allclose(vector, padded(user.vector([("i1", "history"), ("i2", "history"), ("i3", "like"),
                                                           ("i7", "click")]), 16)[0], atol=1e-6)
    # Without a model (a swap back to a non-sequential version) every user is the rule's again.
    users.by_model.model = None
    assert rederive_all(users, old, mean, None)["by_model"] == 0
    rule = users.rule
    h = update_vector(history_vector(np.stack([old["i1"], old["i2"]]), rule.history_recency), old["i3"],
                      rule.learning_rates["like"])
    np.testing.assert_allclose(users.get("h").vector, h, atol=1e-6)
    assert [i for i, _, _ in users.get("h").history] == ["i1", "i2", "i3"]  # the history is kept as it was

