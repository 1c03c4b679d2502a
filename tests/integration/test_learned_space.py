"""`rayrec train` (a Ray Train job) then the Serve app on the model it wrote: learned vectors, text placed by
the tower."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import requests
from ray import serve

from rayrec import Rayrec
from rayrec.cli import main
from rayrec.learning import store
from tests.integration.test_http import free_port, post
from tests.integration.waiting import wait_until

NAMESPACE = "learned-space-tests"
TEXT_APP, TEXT_NAMESPACE = "rayrec-text-space-test", "text-space-tests"  # the last test's app, in the text space
TOPICS = {
    "space": "A space opera about starships and distant galaxies",
    "romance": "A romantic comedy about love and a wedding",
    "horror": "A horror film with ghosts and a haunted house",
}
PER_TOPIC = 10


def _files(tmp_path) -> tuple[str, str, str]:
    """3 topics x 10 items; 60 users each like 6 items of one topic (ratings 5) and rate one other item 1."""
    rng = np.random.default_rng(0)
    ids = [f"{t}-{j}" for t in TOPICS for j in range(PER_TOPIC)]
    texts = [f"{TOPICS[t]}, part {j}" for t in TOPICS for j in range(PER_TOPIC)]
    rows: list[tuple[str, str, int, int]] = []
    for u in range(60):
        topic = list(TOPICS)[u % 3]
        for j in rng.choice(PER_TOPIC, 6, replace=False):
            rows.append((f"u{u}", f"{topic}-{j}", len(rows), 5))
        other = list(TOPICS)[(u + 1) % 3]
        rows.append((f"u{u}", f"{other}-{rng.integers(PER_TOPIC)}", len(rows), 1))
    inter = tmp_path / "interactions.csv"
    pacsv.write_csv(pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                              "timestamp": [r[2] for r in rows], "rating": [r[3] for r in rows]}), inter)
    items = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ids, "text": texts, "category": [i.split("-")[0] for i in ids]}), items)
    return str(inter), str(items), ids


@pytest.fixture(scope="module")
def trained(ray_session, tmp_path_factory):
    folder = tmp_path_factory.mktemp("learned")
    inter, items, ids = _files(folder)
    return folder, inter, items, ids


def test_rayrec_train_writes_versions_a_server_can_load(trained, capsys):
    folder, inter, items, ids = trained
    models = folder / "models"
    code = main(["train", "--interactions", inter, "--items", items, "--out", str(models), "--epochs", "15",
                 "--dim", "16", "--patience", "0", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["version"] == "v1" and out["kind"] == "two-tower" and out["dim"] == 16 and out["items"] == 30
    epochs = out["epochs"]  # every one, the last one's weights kept (--patience 0: no early stopping)
    assert [e["epoch"] for e in epochs] == list(range(1, 16)) and "best_epoch" not in epochs[-1]
    assert all("validation" in e and 0 <= e["validation"]["hr@10"] <= 1 for e in epochs)
    assert set(out["validation_hr@10"]) == {"svd", "two-tower"}
    space = store.load("latest", models)
    assert space.version == "v1" and space.item_ids == ids and space.text_dim == 384
    # The learned space groups each topic's items together (interactions, and the text tower, agree here).
    sims = space.vectors @ space.vectors.T
    topic = np.array([i.split("-")[0] for i in ids])
    same = topic[:, None] == topic[None, :]
    assert sims[same & ~np.eye(30, dtype=bool)].mean() - sims[~same].mean() > 0.2
    np.fill_diagonal(sims, -np.inf)
    for row in range(30):  # every item's 9 nearest others are exactly its topic's other 9 items
        assert set(topic[np.argsort(-sims[row])[:PER_TOPIC - 1]]) == {topic[row]}, ids[row]
    # The SVD baseline from the same command is the next version.
    assert main(["train", "--interactions", inter, "--items", items, "--out", str(models), "--model", "svd",
                 "--dim", "8"]) == 0
    assert store.load("latest", models).kind == "svd" and store.versions(models) == [1, 2]
    # Bad input: a clear message and exit code 2, nothing written.
    assert main(["train", "--interactions", inter, "--out", str(models)]) == 2
    assert "--interactions and --items go together" in capsys.readouterr().err
    assert store.versions(models) == [1, 2]


@pytest.fixture(scope="module")
def served(trained):
    """The app serving model v1 (two-tower, 16-d) over the 30 items; after the first test (which writes v1). Beside
    it, deployed together so that their replicas start side by side, the last test's app at /text: the same items
    in the text space (no model)."""
    from rayrec.serve_app.app import build_app

    folder, _, items, _ = trained
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    small = {"catalog": items, "models_root": str(folder / "models"), "index": "Flat", "actor_num_cpus": 0.02,
             "encoder_num_cpus": 0.1, "ingress_num_cpus": 0.02}
    serve.run_many([
        serve.RunTarget(build_app({**small, "model": "v1", "namespace": NAMESPACE}), name="rayrec-learned-test",
                        route_prefix="/"),
        serve.RunTarget(build_app({**small, "namespace": TEXT_NAMESPACE}), name=TEXT_APP, route_prefix="/text"),
    ])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for name, namespace in (("rayrec-learned-test", NAMESPACE), (TEXT_APP, TEXT_NAMESPACE)):
            serve.delete(name)
            Rayrec.connect(namespace=namespace).shutdown()
        serve.shutdown()


def test_serve_model_holds_learned_vectors_and_places_text_through_the_tower(trained, served):
    from rayrec.encoder import TextEncoder

    folder, _, _, ids = trained
    space = store.load("v1", folder / "models")
    base = served
    health = requests.get(base + "/healthz", timeout=30).json()
    assert (health["model_version"], health["dim"], health["items"]) == ("v1", 16, 30)
    # Every catalog item holds the model's own vector.
    for item in ("space-3", "horror-0"):
        got = requests.get(f"{base}/items/{item}", timeout=30).json()["embedding"]
        np.testing.assert_allclose(got, space.vectors[ids.index(item)], atol=1e-5)
    # A new item with text only is placed by the tower's text path, and is recommendable at once.
    text = "A haunted house full of ghosts, a horror film"
    expected = space.place(TextEncoder().encode([text]))[0]
    put = requests.put(base + "/items", json={"items": [{"item_id": "new-horror", "text": text, "category": "horror"}]},
                       timeout=60)
    assert put.status_code == 200 and put.json() == {"upserted": 1}
    got = np.array(requests.get(base + "/items/new-horror", timeout=30).json()["embedding"])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # A text-described user goes through the same tower: their list is the brute-force top-3 in the space.
    assert requests.put(base + "/users/fan", json={"text": "ghosts and haunted houses"}, timeout=60).status_code == 200
    user = space.place(TextEncoder().encode(["ghosts and haunted houses"]))[0]
    catalog = np.vstack([space.vectors, expected[None, :]])
    truth = [(ids + ["new-horror"])[j] for j in np.argsort(-(catalog @ user))[:3]]
    recs = post(base, "/recommend", {"user_id": "fan", "k": 3}).json()
    assert recs["model_version"] == "v1" and [i["item_id"] for i in recs["items"]] == truth
    assert all(i["category"] == "horror" for i in recs["items"])


def _top(vectors: dict[str, np.ndarray], user: np.ndarray, k: int, seen: set[str]) -> list[str]:
    """Brute force: the k items nearest the user (ties broken by id), seen ones excluded."""
    scored = sorted(((-float(v @ user), item) for item, v in vectors.items() if item not in seen))
    return [item for _, item in scored[:k]]


def test_hot_swap_under_traffic_no_failure_no_mixed_version_no_lost_feedback(trained, served):
    """POST /model moves the running system from v1 to another 16-d version while readers and writers go on."""
    import threading

    from rayrec.config import FeedbackRule
    from rayrec.encoder import TextEncoder
    from rayrec.users.feedback_rule import history_vector, update_vector
    from tests._models import two_tower

    folder, _, _, ids = trained
    models = folder / "models"
    base = served
    # A second 16-d two-tower version over the same items, another space: written as `rayrec train` writes one
    # (random vectors and text path, tests/_models.py; the first test covers the training itself, here each
    # Ray Train job is ~20 s of starting). v2 is the 8-d SVD.
    old = store.load("v1", models)
    two_tower(models, ids, old.dim, old.text_dim, np.random.default_rng(3))
    new = store.load("v3", models)
    encoder = TextEncoder()
    horror_text = "A haunted house full of ghosts, a horror film"  # the text item the previous test added

    def space_vectors(space):
        out = {item: space.vectors[n] for n, item in enumerate(space.item_ids)}
        out["new-horror"] = space.place(encoder.encode([horror_text]))[0]
        return out

    vectors = {"v1": space_vectors(old), "v3": space_vectors(new)}
    assert abs(float(vectors["v1"]["space-0"] @ vectors["v3"]["space-0"])) < 0.999  # the spaces differ
    rule = FeedbackRule()
    histories = {f"r{n}": [ids[(7 * n + j) % 30] for j in range(4)] for n in range(3)}  # readers: no feedback
    writers = {f"w{n}": [ids[(11 * n + j) % 30] for j in range(3)] for n in range(2)}
    for user, history in {**histories, **writers}.items():
        assert requests.put(f"{base}/users/{user}", json={"history": history}, timeout=60).status_code == 200
    expected = {
        (user, version): _top(vectors[version], history_vector(np.stack([vectors[version][i] for i in h]),
                                                               rule.history_recency), 5, set(h))
        for user, h in histories.items() for version in ("v1", "v3")
    }
    assert any(expected[(u, "v1")] != expected[(u, "v3")] for u in histories)  # a mixed answer would show

    answers: list[tuple[str, int, str | None, list[str]]] = []  # (user, status, model_version, items)
    acked: dict[str, list[tuple[str, str]]] = {w: [] for w in writers}
    failures: list[tuple[str, int, str]] = []
    done = threading.Event()

    def reader() -> None:
        n = 0
        while not done.is_set() or n < 40:
            user = f"r{n % 3}"
            r = post(base, "/recommend", {"user_id": user, "k": 5})
            body = r.json() if r.status_code == 200 else {}
            answers.append((user, r.status_code, body.get("model_version"),
                            [i["item_id"] for i in body.get("items", [])]))
            n += 1 if not done.is_set() else 2

    def writer(user: str, seed: int) -> None:
        rng = np.random.default_rng(seed)
        n = 0
        while not done.is_set() or n < 15:
            item, event = ids[int(rng.integers(30))], ["like", "click", "dislike", "skip"][int(rng.integers(4))]
            r = post(base, "/feedback", {"user_id": user, "item_id": item, "event": event, "event_id": f"{user}-{n}"})
            if r.status_code == 200:
                acked[user].append((item, event))
            else:
                failures.append((user, r.status_code, r.text))
            n += 1 if not done.is_set() else 2

    threads = [threading.Thread(target=reader)] + [
        threading.Thread(target=writer, args=(w, n)) for n, w in enumerate(writers)
    ]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(answers) >= 10, 120, "traffic flowing in v1", interval_s=0.05)
        swapped = post(base, "/model", {"model": "v3"})
    finally:
        done.set()
        for t in threads:
            t.join(timeout=300)
    assert swapped.status_code == 200, swapped.text
    summary = swapped.json()
    assert (summary["model_version"], summary["previous"], summary["items"]) == ("v3", "v1", 31)
    assert summary["users"] >= 6  # readers, writers and the text user 'fan'

    # No request failed; every answer came whole from the version it names; v1 until the switch, then v3.
    assert not failures and all(status == 200 for _, status, _, _ in answers), (failures, answers[:3])
    versions = [v for _, _, v, _ in answers]
    assert versions[0] == "v1" and versions[-1] == "v3" and versions == sorted(versions), versions
    for user, _, version, got in answers:
        assert got == expected[(user, version)], (user, version, got)

    # No acknowledged feedback was lost: each writer's history holds every acked event, in order, and the
    # user's vector is the one those events give in v3 (their list is its brute-force top 5).
    for user, history in writers.items():
        state = requests.get(f"{base}/users/{user}", timeout=30).json()
        events = [(h["item_id"], h["event"]) for h in state["history"] if h["event"] != "history"]
        assert events == acked[user] and len(events) >= 15
        assert state["user_version"] == 1 + len(events) + 1  # the history, each event, the swap's re-derivation
        v = history_vector(np.stack([vectors["v3"][i] for i in history]), rule.history_recency)
        for item, event in events:
            v = update_vector(v, vectors["v3"][item], rule.learning_rates[event])
        seen = set(history) | {i for i, _ in events}
        recs = post(base, "/recommend", {"user_id": user, "k": 5}).json()
        assert (recs["model_version"] == "v3"
                and [i["item_id"] for i in recs["items"]] == _top(vectors["v3"], v, 5, seen))

    # Text placed again by v3's tower: the text item, and the text user.
    got = np.array(requests.get(f"{base}/items/new-horror", timeout=30).json()["embedding"])
    np.testing.assert_allclose(got, vectors["v3"]["new-horror"], atol=1e-4)
    fan = new.place(encoder.encode(["ghosts and haunted houses"]))[0]
    recs = post(base, "/recommend", {"user_id": "fan", "k": 3}).json()
    assert [i["item_id"] for i in recs["items"]] == _top(vectors["v3"], fan, 3, set())
    assert requests.get(base + "/healthz", timeout=30).json()["model_version"] == "v3"

    # A bad swap changes nothing and says why (a model larger than the index: see the sequential test).
    missing = post(base, "/model", {"model": "v99"})
    assert missing.status_code == 422 and "not a rayrec model folder" in missing.json()["detail"]
    assert requests.get(base + "/healthz", timeout=30).json()["model_version"] == "v3"
    assert (post(base, "/recommend", {"user_id": "r0", "k": 5}).json()["items"][0]["item_id"]
            == expected[("r0", "v3")][0])


def test_rayrec_train_sequential_writes_a_space_whose_users_the_model_moves(trained, served, capsys):
    """`rayrec train --model sequential`, then a system built from the serve options on that version: its
    user actors load the model and every feedback computes the user from their events. A live swap to it
    from a smaller index is refused with a clear 422."""
    import ray
    from rayrec.serve_app.app import AppArgs

    from rayrec.config import RayrecConfig
    from rayrec.users import model_files

    folder, inter, items, ids = trained
    models = folder / "models"
    assert main(["train", "--interactions", inter, "--items", items, "--out", str(models), "--model", "sequential",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    version = out["version"]
    # 64 (the model) + 30 (EASE's factors: rank 64 capped at the 30 items) + 64 (the two-tower part) + 1 (equal norms).
    assert out["kind"] == "sequential" and out["dim"] == 159 and out["items"] == 30
    assert 0 <= out["validation_hr@10"]["sequential"]["hr@10"] <= 1 and out["sequential"]["best_epoch"] >= 1
    user_model = model_files.load(models / version / store.USER_MODEL)
    opts = AppArgs(catalog=items, model=version, models_root=str(models), index="Flat", actor_num_cpus=0.02,
                   namespace="sequential-space-test").resolved()
    config = RayrecConfig.from_dict(opts.rayrec_config())
    assert config.user_model == str(models / version / store.USER_MODEL) and config.index.dim == 159
    space = store.load(version, models)
    with Rayrec.start(config) as system:
        system.upsert(space.item_ids, space.vectors)
        assert ray.get(system.users[0].info.remote())["user_model"] == "sequential"
        for n, item in enumerate(["space-1", "space-2", "horror-3"]):
            system.feedback("fan", item, "like", event_id=f"f{n}")
        want = user_model.vector([("space-1", "like"), ("space-2", "like"), ("horror-3", "like")])
        np.testing.assert_allclose(system.get_user("fan")["vector"], want, atol=1e-5)
    # A live swap of the 16-d system to it is refused: the model is larger than the index (nothing changes).
    refused = post(served, "/model", {"model": version})
    assert refused.status_code == 422 and f"model {version} is 159-d but this system's index is 16-d" in refused.text
    assert requests.get(served + "/healthz", timeout=30).json()["model_version"] == "v3"


def test_a_system_started_in_the_text_space_swaps_live_to_smaller_learned_models_and_back(trained, served):
    """The product's path: `rayrec serve` in the 384-d text space, then POST /model to the 16-d two-tower v1
    and to the 159-d sequential version, both served padded in the 384-d index (every answer the brute-force
    top-k of the padded space; a text item added after the swap placed by the model's text path, padded),
    the sequential version's user model moving users from then on, the rule again after a swap back."""
    from rayrec.config import FeedbackRule
    from rayrec.encoder import TextEncoder
    from rayrec.users import model_files
    from rayrec.users.feedback_rule import history_vector, update_vector
    from tests._models import padded

    folder, _, _, ids = trained
    models = folder / "models"
    seq_version = next(f"v{n}" for n in store.versions(models) if store.load(f"v{n}", models).kind == "sequential")
    tower, seq = store.load("v1", models), store.load(seq_version, models)
    user_model = model_files.load(models / seq_version / store.USER_MODEL)
    encoder, rule = TextEncoder(), FeedbackRule()
    base = served + "/text"  # the app `served` started in the text space
    health = requests.get(base + "/healthz", timeout=30).json()
    assert (health["model_version"], health["dim"], health["items"]) == ("text", 384, 30)
    history = ["space-1", "space-2", "horror-3"]
    assert requests.put(f"{base}/users/fan", json={"history": history}, timeout=60).status_code == 200

    def check(space, extra: dict[str, np.ndarray], user: np.ndarray, moved_by: str, version: str) -> None:
        catalog = padded(np.vstack([space.vectors, *extra.values()]), 384)
        names = ids + list(extra)
        for item in ("space-3", *extra):
            got = np.array(requests.get(f"{base}/items/{item}", timeout=30).json()["embedding"])
            assert got.shape == (384,) and not got[space.dim:].any()
            np.testing.assert_allclose(got, catalog[names.index(item)], atol=1e-4)
        out = post(base, "/recommend", {"user_id": "fan", "k": 5}).json()
        seen = {h["item_id"] for h in requests.get(f"{base}/users/fan", timeout=30).json()["history"]}
        truth = [names[j] for j in np.argsort(-(catalog @ padded(user, 384)[0])) if names[j] not in seen][:5]
        assert (out["model_version"], out["user_model"]) == (version, moved_by)
        assert [i["item_id"] for i in out["items"]] == truth

    # To the 16-d two-tower: the index stays 384-d; the rule moves users.
    swapped = post(base, "/model", {"model": "v1"})
    assert swapped.status_code == 200, swapped.text
    assert (swapped.json()["model_version"], swapped.json()["previous"]) == ("v1", "text")
    text = "A haunted house full of ghosts, a horror film"  # added after the swap: placed by v1's text path
    put = requests.put(base + "/items", json={"items": [{"item_id": "late", "text": text, "category": "horror"}]},
                       timeout=60)
    assert put.status_code == 200
    embedding = encoder.encode([text])
    by_rule = history_vector(np.stack([tower.vectors[ids.index(i)] for i in history]), rule.history_recency)
    check(tower, {"late": tower.place(embedding)[0]}, by_rule, "rule", "v1")

    # To the 159-d sequential version: its user model computes the fan from their history, then their feedback.
    swapped = post(base, "/model", {"model": seq_version})
    assert swapped.status_code == 200, swapped.text
    events = [(i, "history") for i in history]
    check(seq, {"late": seq.place(embedding)[0]}, user_model.vector(events), "sequential", seq_version)
    assert post(base, "/feedback", {"user_id": "fan", "item_id": "romance-4", "event": "like"}).status_code == 200
    events.append(("romance-4", "like"))
    check(seq, {"late": seq.place(embedding)[0]}, user_model.vector(events), "sequential", seq_version)
    assert requests.get(base + "/healthz", timeout=30).json()["dim"] == 384

    # Back to v1: the fan re-derived by the rule from the same history, which moves them again.
    assert post(base, "/model", {"model": "v1"}).status_code == 200
    by_rule = update_vector(by_rule, tower.vectors[ids.index("romance-4")], rule.learning_rates["like"])
    check(tower, {"late": tower.place(embedding)[0]}, by_rule, "rule", "v1")
