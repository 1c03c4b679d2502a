"""The whole system through the driver API: items, users, feedback, filters, errors."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from rayrec import IndexConfig, InvalidInputError, ItemNotFoundError, Rayrec
from rayrec.catalogs.catalog import items_table
from rayrec.exceptions import DimensionMismatchError
from tests.integration.conftest import clustered, make_config

DIM = 16
N = 1200
CATEGORIES = ["drama", "comedy", "horror", "docs"]


def catalog(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = clustered(rng, N, DIM, clusters=12)
    ids = [f"sku-{i:05d}" for i in range(N)]
    cats = [CATEGORIES[i % 4] for i in range(N)]
    titles = [f"title {i}" for i in range(N)]
    return ids, x, cats, titles


@pytest.fixture(scope="module", params=["Flat", "HNSW32"])
def system(request, ray_session):
    cfg = make_config(index=IndexConfig(dim=DIM, factory=request.param, ef_search=32, max_k=2000), num_shards=3,
                      num_user_actors=2)
    rec = Rayrec.start(cfg)
    ids, x, cats, titles = catalog()
    assert rec.load(items_table(ids, x, {"category": cats, "title": titles})) == N
    yield rec
    rec.shutdown()


def score_of(rec: Rayrec, user: str, item: str, vectors: dict[str, np.ndarray]) -> float:
    return float(rec.get_user(user)["vector"] @ vectors[item])


def test_catalog_is_loaded_with_metadata(system):
    assert system.count() == N
    rec = system.fetch(["sku-00007", "nope"])
    assert rec[1] is None
    assert rec[0]["category"] == "docs" and rec[0]["title"] == "title 7"
    _, x, _, _ = catalog()
    np.testing.assert_allclose(rec[0]["vector"], x[7], atol=1e-6)


def test_like_pulls_the_item_and_its_neighbours_up_dislike_pushes_down(system):
    ids, x, _, _ = catalog()
    vec = dict(zip(ids, x))
    system.set_user("u-like", vector=x[100] + x[900])
    liked = "sku-00500"
    neighbours = [ids[i] for i in np.argsort(-(x @ x[500]))[1:6]]
    before = {i: score_of(system, "u-like", i, vec) for i in [liked, *neighbours]}
    v1 = system.get_user("u-like")["version"]
    out = system.feedback("u-like", liked, "like")
    assert out == {"user_id": "u-like", "version": v1 + 1, "applied": True}
    after = {i: score_of(system, "u-like", i, vec) for i in [liked, *neighbours]}
    assert all(after[i] > before[i] for i in before)

    system.feedback("u-like", liked, "dislike")
    again = {i: score_of(system, "u-like", i, vec) for i in [liked, *neighbours]}
    assert all(again[i] < after[i] for i in before)


def test_feedback_is_read_by_the_next_recommendation(system):
    ids, x, _, _ = catalog()
    start = x[777] @ x[777] * x[5] - (x[5] @ x[777]) * x[777]  # x[5] minus its part along x[777]
    system.set_user("u-ryw", vector=start)
    target = ids[777]

    def rank(out):
        return [r["item_id"] for r in out["items"]].index(target)

    first = system.recommend("u-ryw", k=N, exclude_seen=False)
    assert rank(first) > 100  # the user starts far from the target
    for _ in range(6):
        system.feedback("u-ryw", target, "purchase")
    second = system.recommend("u-ryw", k=N, exclude_seen=False)
    assert second["version"] == first["version"] + 6
    assert rank(second) < 100  # now among the nearest of its 12 clusters of ~100
    assert second["items"][rank(second)]["title"] == "title 777"
    # exclude_seen drops what the user engaged with
    third = system.recommend("u-ryw", k=10)
    assert target not in [r["item_id"] for r in third["items"]]
    assert len(third["items"]) == 10


def test_recommendations_search_the_shards_from_the_user_actor_not_the_router(system):
    ids, x, _, _ = catalog()
    system.set_user("u-hops", vector=x[10])
    actor = system._users_of("u-hops")
    before_router = ray.get(system.router.search_batches.remote())
    before_actor = ray.get(actor.info.remote())["search_batches"]
    answers = [system.recommend("u-hops", k=5, exclude_seen=False) for _ in range(4)]
    assert ray.get(system.router.search_batches.remote()) == before_router, "no recommendation passed the router"
    assert ray.get(actor.info.remote())["search_batches"] == before_actor + 4
    truth = [ids[j] for j in np.argsort(-(x @ (x[10] / np.linalg.norm(x[10]))), kind="stable")[:5]]
    assert all([r["item_id"] for r in a["items"]] == truth for a in answers)
    # Drivers' vector queries still go through the router, with the same fan-out and merge.
    assert system.search(x[10], k=5).ids[0] == truth
    assert ray.get(system.router.search_batches.remote()) == before_router + 1


def test_a_repeated_event_id_changes_nothing(system):
    system.set_user("u-idem", history=["sku-00001", "sku-00002"])
    first = system.feedback("u-idem", "sku-00010", "click", event_id="evt-1")
    state = system.get_user("u-idem")
    again = system.feedback("u-idem", "sku-00011", "like", event_id="evt-1")
    assert again == {"user_id": "u-idem", "version": first["version"], "applied": False}
    after = system.get_user("u-idem")
    np.testing.assert_array_equal(after["vector"], state["vector"])
    assert after["history"] == state["history"]


def test_user_from_history_is_the_recency_weighted_mean(system):
    ids, x, _, _ = catalog()
    hist = [ids[3], ids[30], ids[300]]
    out = system.set_user("u-hist", history=hist)
    assert out["applied"] and out["version"] == 1
    w = np.array([0.81, 0.9, 1.0])
    expected = (w[:, None] * x[[3, 30, 300]]).sum(0)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(system.get_user("u-hist")["vector"], expected, atol=1e-5)
    recs = system.recommend("u-hist", k=20)
    assert not set(hist) & {r["item_id"] for r in recs["items"]}


def test_unknown_user_gets_the_catalog_mean_neighbours(system):
    _, x, _, _ = catalog()
    out = system.recommend("never-seen", k=5)
    assert out["cold_start"] is True and out["version"] == 0
    mean = x.sum(0) / np.linalg.norm(x.sum(0))
    best = np.sort(x @ mean)[::-1][:5]
    got = np.array([r["score"] for r in out["items"]])
    if system.config.index.factory == "Flat":
        np.testing.assert_allclose(got, best, atol=1e-5)
    else:
        assert len(got) == 5 and got[0] >= best[4]
    assert system.get_user("never-seen") is None


def test_first_feedback_of_a_new_user_makes_them_the_item_or_pushes_them_from_the_mean(system):
    ids, x, _, _ = catalog()
    item = x[42] / np.linalg.norm(x[42])
    system.feedback("newbie", ids[42], "like")  # a positive first event: the user is that item's direction
    np.testing.assert_allclose(system.get_user("newbie")["vector"], item, atol=1e-5)
    system.feedback("grump", ids[42], "dislike")  # a negative one: away from the cold-start (mean) direction
    mean = x.sum(0) / np.linalg.norm(x.sum(0))
    expected = mean + system.config.feedback.learning_rates["dislike"] * item
    np.testing.assert_allclose(system.get_user("grump")["vector"], expected / np.linalg.norm(expected), atol=1e-5)


def test_filter_and_exclusion_hold_and_still_give_k(system):
    ids, x, cats, _ = catalog()
    rng = np.random.default_rng(5)
    excluded = set(rng.choice(ids, size=int(0.9 * N), replace=False).tolist())
    q = x[10]
    res = system.search(q, k=50, exclude=sorted(excluded))
    eligible = [i for i in range(N) if ids[i] not in excluded]
    truth = [ids[i] for i in sorted(eligible, key=lambda i: -float(x[i] @ q))[:50]]
    assert len(res.ids[0]) == 50
    assert not excluded & set(res.ids[0])
    if system.config.index.factory == "Flat":
        assert res.ids[0] == truth

    res = system.search(q, k=30, categories=["horror"], exclude=sorted(excluded), with_metadata=True)
    eligible_h = [i for i in eligible if cats[i] == "horror"]
    assert len(res.ids[0]) == min(30, len(eligible_h))
    assert {m["category"] for m in res.metadata[0]} == {"horror"}
    assert not excluded & set(res.ids[0])

    recs = system.recommend("u-filter", k=15, categories=["docs", "drama"])
    assert len(recs["items"]) == 15
    assert {r["category"] for r in recs["items"]} <= {"docs", "drama"}


def test_upsert_replaces_and_delete_removes(system):
    _, x, _, _ = catalog()
    probe = x[3]
    system.upsert(["twin"], [probe], {"category": ["docs"]})
    system.upsert(["twin"], [probe], {"category": ["comedy"]})  # same id again: replaced, never twice
    top = system.search(probe, k=20, with_metadata=True)
    assert top.ids[0].count("twin") == 1
    assert top.metadata[0][top.ids[0].index("twin")]["category"] == "comedy"
    assert system.count() == N + 1

    system.upsert(["twin"], [-probe])  # moved far away
    assert "twin" not in system.search(probe, k=20).ids[0]
    assert system.delete(["twin", "no-such-item"]) == 1
    assert system.count() == N
    assert "twin" not in system.search(-probe, k=50).ids[0]
    assert system.fetch(["twin"]) == [None]


def test_deleted_items_never_come_back_under_load(system):
    ids, x, _, _ = catalog(seed=0)
    gone = ids[:300]
    extra_ids = [f"tmp-{i}" for i in range(300)]
    system.upsert(extra_ids, x[:300])
    assert system.delete(extra_ids) == 300
    res = system.search(x[:40], k=25)
    returned = {i for row in res.ids for i in row}
    assert not returned & set(extra_ids)
    assert all(len(row) == 25 for row in res.ids)
    assert gone  # the catalog itself is untouched
    assert system.count() == N


def test_bad_input_gets_a_clear_error(system):
    ids, x, _, _ = catalog()
    with pytest.raises(DimensionMismatchError, match="dimension is 3, but the index holds 16-d"):
        system.search(np.ones(3), k=5)
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        system.search(np.full(DIM, np.nan), k=5)
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        system.upsert(["bad"], [np.full(DIM, np.inf)])
    with pytest.raises(InvalidInputError, match="k must be >= 1"):
        system.search(x[0], k=0)
    with pytest.raises(InvalidInputError, match="above the configured maximum max_k=2000"):
        system.recommend("u1", k=2001)
    with pytest.raises(InvalidInputError, match="unknown event type 'love'"):
        system.feedback("u1", ids[0], "love")
    with pytest.raises(InvalidInputError, match="user id must be a non-empty string"):
        system.feedback("", ids[0], "like")
    with pytest.raises(InvalidInputError, match="item id must be a non-empty string"):
        system.upsert([" "], [x[0]])
    with pytest.raises(InvalidInputError, match="all zeros"):
        system.set_user("u-zero", vector=np.zeros(DIM))
    with pytest.raises(ItemNotFoundError, match="unknown item id"):
        system.feedback("u1", "no-such-item", "like")
    assert system.count() == N  # nothing was written by the bad calls
    assert system.get_user("u-zero") is None


def test_parquet_load_is_all_or_nothing(system, tmp_path):
    rng = np.random.default_rng(9)
    good_ids = [f"pq-{i}" for i in range(200)]
    vecs = clustered(rng, 200, DIM)
    good = tmp_path / "good.parquet"
    pq.write_table(items_table(good_ids, vecs, {"category": ["docs"] * 200}), good)
    bad_vecs = vecs.copy()
    bad_vecs[150] = np.nan
    bad = tmp_path / "bad.parquet"
    pq.write_table(items_table(good_ids, bad_vecs), bad)

    with pytest.raises(InvalidInputError, match=r"bad.parquet.*row 150 .*NaN"):
        system.load(str(bad))
    assert system.count() == N  # no shard applied its part

    with pytest.raises(InvalidInputError, match="does not exist"):
        system.load(str(tmp_path / "missing.parquet"))

    assert system.load(good) == 200
    assert system.count() == N + 200
    assert system.load(str(good)) == 200  # re-loading is an upsert
    assert system.count() == N + 200
    assert system.delete(good_ids) == 200


def test_connect_reaches_the_same_system(system):
    other = Rayrec.connect(namespace=system.config.namespace)
    assert other.config == system.config
    assert other.count() == N
    system.set_user("u-shared", vector=np.ones(DIM))
    assert other.get_user("u-shared")["version"] == 1


def test_a_metadata_field_only_one_item_has_stays_that_items(system):
    """Sparse metadata: a field new to the system is not added to the results of items without it."""
    ids, x, _, _ = catalog()
    system.upsert(["colour-1"], [x[8]], {"category": ["docs"], "colour": ["red"]})
    try:
        res = system.search(x[8], k=30, with_metadata=True)
        by_id = dict(zip(res.ids[0], res.metadata[0]))
        assert by_id["colour-1"]["colour"] == "red"
        assert [i for i, m in by_id.items() if "colour" in m] == ["colour-1"]
        assert all("category" in m for m in by_id.values())
    finally:
        system.delete(["colour-1"])


def test_a_bare_string_is_not_a_list_of_ids(system):
    with pytest.raises(InvalidInputError, match="single string 'sku-00001'; wrap it in a list"):
        system.delete("sku-00001")
    assert system.count() == N


def test_cold_start_follows_the_catalog(system):
    ids, x, _, _ = catalog()
    before = system.recommend("cold-follow", k=3)["items"]
    far = -x.sum(0) / np.linalg.norm(x.sum(0))  # opposite the catalog mean
    system.upsert([f"far-{i}" for i in range(3 * N)], np.repeat(far[None], 3 * N, axis=0))
    try:
        after = system.recommend("cold-follow", k=3)["items"]
        assert {r["item_id"] for r in after} <= {f"far-{i}" for i in range(3 * N)}
        assert {r["item_id"] for r in before} <= set(ids)
    finally:
        system.delete([f"far-{i}" for i in range(3 * N)])
    assert {r["item_id"] for r in system.recommend("cold-follow", k=3)["items"]} <= set(ids)


def test_compaction_drops_tombstones_and_keeps_answers(system):
    ids, x, _, _ = catalog()
    temp = [f"tomb-{i}" for i in range(200)]
    system.upsert(temp, x[:200])
    system.delete(temp)
    before = system.search(x[:5], k=10)
    system.compact()
    info = ray.get(system.router.info.remote())
    assert all(shard["tombstones"] == 0 for shard in info)
    assert sum(shard["items"] for shard in info) == N
    after = system.search(x[:5], k=10)
    assert after.ids == before.ids or system.config.index.factory != "Flat"
    assert not {i for row in after.ids for i in row} & set(temp)


def test_a_second_system_in_the_same_namespace_is_refused(system):
    with pytest.raises(InvalidInputError, match="already runs in Ray namespace .*Rayrec.connect"):
        Rayrec.start(system.config)
