"""`rayrec train` (a Ray Train job) then the Serve app on the model it wrote: learned vectors, text placed by the tower."""

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

NAMESPACE = "learned-space-tests"
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
                 "--dim", "16", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["version"] == "v1" and out["kind"] == "two-tower" and out["dim"] == 16 and out["items"] == 30
    assert [e["epoch"] for e in out["epochs"]] == list(range(1, 16))
    assert all("validation" in e and 0 <= e["validation"]["hr@10"] <= 1 for e in out["epochs"])
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


def test_serve_model_holds_learned_vectors_and_places_text_through_the_tower(trained):
    from rayrec.encoder import TextEncoder
    from serve_app.app import build_app

    folder, _, items, ids = trained
    models = folder / "models"
    space = store.load("v1", models)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app({"catalog": items, "model": "v1", "models_root": str(models), "namespace": NAMESPACE,
                     "index": "Flat", "actor_num_cpus": 0.02, "encoder_num_cpus": 0.1, "ingress_num_cpus": 0.02})
    serve.run(app, name="rayrec-learned-test", route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    try:
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
    finally:
        serve.delete("rayrec-learned-test")
        Rayrec.connect(namespace=NAMESPACE).shutdown()
        serve.shutdown()
