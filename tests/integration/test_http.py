"""The HTTP API under a real Serve deployment with the real encoder on the CPU."""

from __future__ import annotations

import json
import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from ray import serve
from rayrec.serve_app.app import build_app

from rayrec import Rayrec
from rayrec.catalogs import movielens
from tests.integration.waiting import wait_until

NAMESPACE = "http-tests"
N_ITEMS = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base(ray_session, tmp_path_factory):
    """The app on 127.0.0.1 over the first 300 MovieLens movies, encoded at start-up."""
    path = tmp_path_factory.mktemp("catalog") / "movies.parquet"
    pq.write_table(movielens.load().items.slice(0, N_ITEMS), path)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app({"catalog": str(path), "namespace": NAMESPACE, "actor_num_cpus": 0.02, "max_k": 100,
                     "encoder_num_cpus": 0.1, "ingress_num_cpus": 0.02, "max_items_per_call": 50,
                     "max_body_bytes": 2_000_000})
    serve.run(app, name="rayrec-http-test", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.delete("rayrec-http-test")
    Rayrec.connect(namespace=NAMESPACE).shutdown()
    serve.shutdown()


def post(base: str, path: str, body: object) -> requests.Response:
    return requests.post(base + path, json=body, timeout=60)


def titles(resp: requests.Response) -> list[str]:
    return [item["title"] for item in resp.json()["items"]]


def test_healthz_and_openapi(base):
    health = requests.get(base + "/healthz", timeout=30).json()
    assert {k: health[k] for k in ("status", "items", "shards", "dim", "index")} == {
        "status": "ok", "items": N_ITEMS, "shards": 2, "dim": 384, "index": "HNSW32"}
    paths = requests.get(base + "/openapi.json", timeout=30).json()["paths"]
    assert {"/recommend", "/feedback", "/users/{user_id}", "/items", "/items/{item_id}", "/encode",
            "/healthz"} <= set(paths)
    assert "get" in paths["/items"] and "put" in paths["/items"]
    assert requests.get(base + "/docs", timeout=30).status_code == 200
    # The encoder replica's torch threads sleep between batches (OMP_WAIT_POLICY set before torch loads).
    encoder = serve.get_deployment_handle("Encoder", app_name="rayrec-http-test")
    assert encoder.info.remote().result(timeout_s=60)["omp_wait_policy"] == "PASSIVE"


def test_unknown_user_gets_a_cold_start_list_with_real_titles(base):
    resp = post(base, "/recommend", {"user_id": "nobody-yet", "k": 5})
    assert resp.status_code == 200
    body = resp.json()
    assert body["cold_start"] is True and body["user_version"] == 0 and body["partial"] is False
    assert len(body["items"]) == 5 and all(t.endswith(")") for t in titles(resp))  # "Title (1995)"
    assert body["user_model"] == "rule"  # no user model configured: the feedback rule moves users


def test_text_user_feedback_and_filters(base):
    resp = requests.put(base + "/users/scared", json={"text": "scary horror movies with monsters"}, timeout=60)
    assert resp.json() == {"user_id": "scared", "user_version": 1, "applied": True}
    recs = post(base, "/recommend", {"user_id": "scared", "k": 5}).json()
    assert sum("Horror" in item["genres"] for item in recs["items"]) >= 3

    liked = recs["items"][0]["item_id"]
    fb = post(base, "/feedback", {"user_id": "scared", "item_id": liked, "event": "like", "event_id": "e-1"})
    assert fb.status_code == 200 and fb.json()["user_version"] == 2
    again = post(base, "/feedback", {"user_id": "scared", "item_id": liked, "event": "like", "event_id": "e-1"})
    assert again.json() == {"user_id": "scared", "user_version": 2, "applied": False}
    after = post(base, "/recommend", {"user_id": "scared", "k": 5}).json()
    assert after["user_version"] == 2
    assert liked not in [i["item_id"] for i in after["items"]]  # seen items are excluded
    seen = post(base, "/recommend", {"user_id": "scared", "k": 5, "exclude_seen": False}).json()
    assert seen["items"][0]["item_id"] == liked

    comedy = post(base, "/recommend", {"user_id": "scared", "k": 7, "filter": {"category": ["Comedy"]}}).json()
    assert len(comedy["items"]) == 7 and {i["category"] for i in comedy["items"]} == {"Comedy"}

    user = requests.get(base + "/users/scared", timeout=30).json()
    assert user["user_version"] == 2 and user["history"][-1]["item_id"] == liked


def test_history_and_vector_users(base):
    resp = requests.put(base + "/users/hist", json={"history": ["1", "2", "3"]}, timeout=60)
    assert resp.status_code == 200 and resp.json()["user_version"] == 1
    recs = post(base, "/recommend", {"user_id": "hist", "k": 10}).json()
    assert not {"1", "2", "3"} & {i["item_id"] for i in recs["items"]}
    vec = np.ones(384) / np.sqrt(384)
    resp = requests.put(base + "/users/vec", json={"vector": vec.tolist()}, timeout=60)
    assert resp.status_code == 200 and resp.json()["user_version"] == 1


def test_items_upsert_get_delete(base):
    item = {"item_id": "new-horror", "text": "A brand new slasher film. Horror", "category": "Horror",
            "title": "Slasher (2026)"}
    assert requests.put(base + "/items", json={"items": [item]}, timeout=60).json() == {"upserted": 1}
    got = requests.get(base + "/items/new-horror", timeout=30).json()
    assert got["title"] == "Slasher (2026)" and got["category"] == "Horror" and len(got["embedding"]) == 384
    requests.put(base + "/users/slasher-fan", json={"text": "a brand new slasher film"}, timeout=60)
    recs = post(base, "/recommend", {"user_id": "slasher-fan", "k": 3}).json()
    assert recs["items"][0]["item_id"] == "new-horror"  # searchable at once

    assert requests.delete(base + "/items/new-horror", timeout=30).json() == {"deleted": 1}
    recs = post(base, "/recommend", {"user_id": "slasher-fan", "k": 50}).json()
    assert "new-horror" not in [i["item_id"] for i in recs["items"]]
    assert requests.get(base + "/items/new-horror", timeout=30).status_code == 404
    assert requests.delete(base + "/items/new-horror", timeout=30).status_code == 404


def test_several_items_in_one_get(base):
    asked = "/items?id=3&id=never-an-item&id=1&id=3&embedding=false"
    many = requests.get(base + asked, timeout=30).json()  # in the order asked, each once
    one = requests.get(base + "/items/1?embedding=false", timeout=30).json()
    assert [i["item_id"] for i in many["items"]] == ["3", "1"] and many["unknown"] == ["never-an-item"]
    assert many["items"][1] == one and "embedding" not in one and one["title"] == "Toy Story (1995)"
    full = requests.get(base + "/items?id=1", timeout=30).json()["items"][0]  # with its embedding, as /items/1
    assert full == requests.get(base + "/items/1", timeout=30).json() and len(full["embedding"]) == 384


def test_encode_gives_unit_vectors_and_related_texts_score_higher(base):
    body = post(base, "/encode",
                {"texts": ["a scary horror film", "Nightmare on Elm Street. Horror", "a cute family comedy"]}).json()
    v = np.array(body["embeddings"])
    assert body["dim"] == 384 and v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]


@pytest.mark.parametrize(
    "method,path,body,status,needle",
    [
        ("post", "/recommend", {"user_id": "u", "k": 0}, 422, "greater than or equal to 1"),
        ("post", "/recommend", {"user_id": "u", "k": 101}, 422, "max_k=100"),
        ("post", "/recommend", {"user_id": "", "k": 3}, 422, "user_id"),
        ("post", "/recommend", {"k": 3}, 422, "user_id"),
        ("post", "/recommend", {"user_id": "u", "filter": {"category": []}}, 422, "category"),
        ("post", "/feedback", {"user_id": "u", "item_id": "1", "event": "love"}, 422, "event"),
        ("post", "/feedback", {"user_id": "u", "item_id": "no-such-item", "event": "like"}, 404, "unknown item"),
        ("post", "/feedback", {"user_id": "u", "item_id": " ", "event": "like"}, 422, "item_id"),
        ("put", "/users/u", {"vector": [1.0, 2.0]}, 422, "dimension is 2"),
        ("put", "/users/u", {"vector": [0.0] * 384}, 422, "all zeros"),
        ("put", "/users/u", {"text": "x", "history": ["1"]}, 422, "exactly one of vector, text, history"),
        ("put", "/users/u", {}, 422, "exactly one of vector, text, history"),
        ("put", "/users/u", {"history": ["no-such-item"]}, 404, "unknown item"),
        ("put", "/items", {"items": [{"item_id": "x", "embedding": [1.0, 2.0]}]}, 422, "384-d"),
        ("put", "/items", {"items": [{"item_id": "x"}]}, 422, "text or an embedding"),
        ("put", "/items", {"items": [{"item_id": "x", "text": "t", "tag": 5}]}, 422, "must be a string"),
        ("put", "/items", {"items": [{"item_id": f"x{i}", "text": "t"} for i in range(51)]}, 422, "at most 50"),
        ("put", "/items", {"items": []}, 422, "items"),
        ("post", "/encode", {"texts": []}, 422, "texts"),
        ("post", "/encode", {"texts": ["ok", ""]}, 422, "position 1"),
        ("post", "/encode", {"texts": ["a"] * 2049}, 422, "at most 2048"),
        ("put", "/items", {"items": [{"item_id": "big", "embedding": [1e300] * 384}]}, 422, "NaN or infinite"),
        ("get", "/items/%20", None, 422, "non-empty"),
        ("get", "/items?id=1&id=%20", None, 422, "non-empty"),
        ("get", "/items", None, 422, '"query", "id"'),
        ("get", "/items?" + "&".join(f"id=x{i}" for i in range(51)), None, 422, "at most 50"),  # max_items_per_call
    ],
)
def test_bad_input_answers_4xx_naming_the_problem(base, method, path, body, status, needle):
    resp = getattr(requests, method)(base + path, json=body, timeout=60)
    assert resp.status_code == status, resp.text
    assert needle in json.dumps(resp.json())


def test_malformed_json_and_non_finite_values(base):
    resp = requests.post(base + "/recommend", data="{not json", headers={"content-type": "application/json"},
                         timeout=30)
    assert resp.status_code == 422 and "JSON decode error" in resp.text
    bad = '{"vector": [NaN' + ", 1.0" * 383 + "]}"
    resp = requests.put(base + "/users/nan", data=bad, headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code == 422 and "NaN or infinite" in resp.text
    assert requests.get(base + "/users/nan", timeout=30).status_code == 404


def scrape_until(names: list[str], deadline_s: float = 60.0) -> str:
    """Ray's Prometheus endpoint, once it exports every metric named (exports are periodic)."""
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    scraped = [""]

    def exported() -> bool:
        scraped[0] = requests.get(url, timeout=10).text
        return all(name in scraped[0] for name in names)

    wait_until(exported, deadline_s, f"metrics {names} at {url}", interval_s=1)
    return scraped[0]


def test_metrics_reach_rays_prometheus_endpoint(base):
    requests.put(base + "/users/fresh", json={"history": ["1"]}, timeout=60)
    post(base, "/feedback", {"user_id": "fresh", "item_id": "2", "event": "click"})
    post(base, "/recommend", {"user_id": "fresh", "k": 3})
    requests.put(base + "/items", json={"items": [{"item_id": "fresh-item", "text": "A fresh film"}]}, timeout=60)
    post(base, "/encode", {"texts": ["one text"]})
    requests.get(base + "/healthz", timeout=30)
    text = scrape_until([
        "ray_rayrec_feedback_freshness_ms_count",
        "ray_rayrec_item_freshness_ms_count",
        'ray_rayrec_http_requests_total{',
        "ray_rayrec_http_latency_ms_bucket",
        "ray_rayrec_encoder_batch_texts_bucket",
        "ray_rayrec_encoder_queue_wait_ms_bucket",
        "ray_rayrec_items{",
        "ray_rayrec_users{",
    ])
    assert 'route="/recommend"' in text and 'status="200"' in text
    requests.delete(base + "/items/fresh-item", timeout=30)


def test_a_driver_reaches_the_deployed_app(base):
    system = Rayrec.connect(namespace=NAMESPACE)
    vectors = system.encode(["a scary horror film", "Nightmare on Elm Street. Horror"], app_name="rayrec-http-test")
    assert vectors.shape == (2, 384)
    system.set_user("driver-user", vector=vectors[0])
    recs = post(base, "/recommend", {"user_id": "driver-user", "k": 3}).json()
    assert recs["user_version"] == 1 and len(recs["items"]) == 3
    assert system.count() == requests.get(base + "/healthz", timeout=30).json()["items"]


def test_bodies_over_the_limit_get_413_declared_or_streamed(base):
    big = {"texts": ["x" * 1000] * 3000}  # ~3 MB of JSON, over the app's 2 MB limit
    resp = post(base, "/encode", big)
    assert resp.status_code == 413 and "request body over 2000000 bytes" in resp.json()["detail"]

    def chunks():  # no Content-Length: the body arrives chunked and is counted as it streams
        payload = json.dumps(big).encode()
        for start in range(0, len(payload), 65536):
            yield payload[start : start + 65536]

    streamed = requests.post(base + "/feedback", data=chunks(), headers={"content-type": "application/json"},
                             timeout=60)
    assert streamed.status_code == 413
    # Under the limit, the same routes answer as before.
    assert post(base, "/encode", {"texts": ["a small body"]}).status_code == 200


def test_recommend_batch_answers_each_user_as_recommend_does(base):
    for user, text in (("batch-a", "romantic comedies"), ("batch-b", "war films")):
        assert requests.put(base + f"/users/{user}", json={"text": text}, timeout=60).status_code == 200
    asks = [{"user_id": "batch-a", "k": 4}, {"user_id": "batch-b", "k": 6, "filter": {"category": ["Drama"]}},
            {"user_id": "batch-new", "k": 3}, {"user_id": "batch-a", "k": 2000}]
    resp = post(base, "/recommend/batch", {"requests": asks})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert len(results) == 4
    for ask, got in zip(asks[:3], results):
        alone = post(base, "/recommend", ask).json()
        assert [i["item_id"] for i in got["items"]] == [i["item_id"] for i in alone["items"]]
        assert got["user_id"] == ask["user_id"] and got["user_version"] == alone["user_version"]
        assert got["cold_start"] == alone["cold_start"] and len(got["items"]) == ask["k"]
    assert all(i["category"] == "Drama" for i in results[1]["items"])
    assert results[2]["cold_start"] is True
    # One user's bad request fails that user alone, with the status /recommend gives it.
    assert results[3]["status"] == 422 and "k" in results[3]["detail"] and results[3]["user_id"] == "batch-a"
    assert post(base, "/recommend", asks[3]).status_code == 422
    assert post(base, "/recommend/batch", {"requests": []}).status_code == 422
    too_many = post(base, "/recommend/batch", {"requests": [{"user_id": "batch-a"}] * 1001})
    assert too_many.status_code == 422 and "at most 1000" in too_many.json()["detail"]


def test_recommend_says_where_its_time_went(base):
    resp = post(base, "/recommend", {"user_id": "batch-a", "k": 3})
    stages = dict(part.strip().split(";dur=") for part in resp.headers["server-timing"].split(","))
    assert list(stages) == ["ingress", "hop", "user", "search"]
    assert all(float(ms) >= 0 for ms in stages.values()) and float(stages["search"]) > 0
    post_noop = post(base, "/noop", {"user_id": "x", "k": 3})
    assert post_noop.status_code == 200 and post_noop.json() == {"status": "ok"}


def test_get_recommend_answers_as_post_does(base):
    assert requests.put(base + "/users/get-a", json={"text": "space adventure"}, timeout=60).status_code == 200
    for ask, query in (({"user_id": "get-a", "k": 5}, "user_id=get-a&k=5"),
                       ({"user_id": "get-a", "k": 4, "exclude_seen": False,
                         "filter": {"category": ["Drama", "Comedy"]}},
                        "user_id=get-a&k=4&exclude_seen=false&category=Drama&category=Comedy")):
        got = requests.get(base + "/recommend?" + query, timeout=60)
        assert got.status_code == 200, got.text
        alone = post(base, "/recommend", ask).json()
        assert [i["item_id"] for i in got.json()["items"]] == [i["item_id"] for i in alone["items"]]
        assert len(got.json()["items"]) == ask["k"] and "server-timing" in got.headers
    assert all(i["category"] in ("Drama", "Comedy") for i in got.json()["items"])
    for bad, field in (("k=0&user_id=get-a", "k"), ("k=5", "user_id"), ("user_id=get-a&k=2000", "k"),
                       ("user_id=" + "x" * 513, "user_id")):
        resp = requests.get(base + "/recommend?" + bad, timeout=60)
        assert resp.status_code == 422 and field in resp.text, (bad, resp.text)


def raw(base: str, method: str, path: str, text: str) -> requests.Response:
    """A request whose JSON body is sent as written (escapes such as \\ud800 and NaN kept as they are)."""
    return requests.request(method, base + path, data=text.encode(), headers={"content-type": "application/json"},
                            timeout=60)


VECTOR = ", ".join(["0.05"] * 383)


@pytest.mark.parametrize(
    "method,path,text,needle",
    [
        # lone UTF-16 surrogates: valid JSON escapes, not UTF-8 text
        ("post", "/recommend", '{"user_id": "\\ud800"}', "body.user_id: not valid UTF-8 text"),
        ("put", "/users/s", '{"history": ["1", "\\udc00"]}', "body.history[1]: not valid UTF-8 text"),
        ("put", "/items", '{"items": [{"item_id": "sur", "text": "t", "category": "\\ud800"}]}',
         "body.items[0].category"),
        ("put", "/items", '{"items": [{"item_id": "sur", "text": "t", "genre": "x\\udfff"}]}', "body.items[0].genre"),
        ("post", "/feedback", '{"user_id": "u", "item_id": "1", "event": "like", "event_id": "\\ud83d"}',
         "body.event_id"),
        # non-finite numbers, which Python's JSON accepts
        ("post", "/recommend", '{"user_id": "u", "k": NaN}', "body.k: nan is not a finite number"),
        ("post", "/feedback", '{"user_id": "u", "item_id": "1", "event": "like", "ts": NaN}', "body.ts"),
        ("put", "/users/inf", '{"vector": [1e400, ' + VECTOR + "]}", "body.vector[0]: inf"),
        ("put", "/users/inf", '{"vector": [-Infinity, ' + VECTOR + "]}", "body.vector[0]: -inf"),
        # control characters and "/" in ids
        ("put", "/items", '{"items": [{"item_id": "a\\u0000", "text": "t"}]}', "'\\\\x00' at position 1"),
        ("put", "/items", '{"items": [{"item_id": "a/b", "text": "t"}]}', "'/' at position 1"),
        ("post", "/feedback", '{"user_id": "u\\u0001", "item_id": "1", "event": "like"}', "control characters"),
        ("put", "/users/h", '{"history": ["1", "2\\u0000"]}', "control characters"),
        # sizes
        ("put", "/users/h", '{"history": [' + ", ".join(['"1"'] * 10_001) + "]}", "at most 10000"),
        ("post", "/feedback", '{"user_id": "u", "item_id": "1", "event": "like", "event_id": "' + "e" * 129 + '"}',
         "at most 128"),
        ("post", "/encode", '{"texts": ["' + "w " * 5001 + '"]}', "at most 10000"),
        ("put", "/items", '{"items": [{"item_id": "big", "text": "t", "blurb": "' + "b" * 1025 + '"}]}',
         "at most 1024"),
        ("put", "/items", '{"items": [{"item_id": "many", "text": "t", '
         + ", ".join(f'"f{i}": "v"' for i in range(40)) + "}]}", "at most 32"),
        ("put", "/items", '{"items": [{"item_id": "wide", "text": "t", '
         + ", ".join(f'"f{i}": "{"v" * 1000}"' for i in range(5)) + "}]}", "at most 4096"),
        ("put", "/items", '{"items": [{"item_id": "long-name", "text": "t", "' + "n" * 65 + '": "v"}]}',
         "at most 64"),
        ("post", "/recommend", '{"user_id": "u", "filter": {"category": [' + ", ".join(['"c"'] * 101) + "]}}",
         "at most 100"),
        ("post", "/model", '{"model": "' + "m" * 300 + '"}', "at most 128"),
        ("post", "/model", '{"model": "/etc"}', "not a name"),
        ("post", "/model", '{"model": "../../etc"}', "not a name"),
        ("get", "/items/" + "x" * 513, "", "512"),
        ("get", "/users/" + "x" * 513, "", "512"),
        ("get", "/items/a%00", "", "control characters"),
        ("get", "/recommend?user_id=a/b", "", "'/' at position 1"),
    ],
)
def test_hostile_input_answers_422_naming_the_field_and_limit(base, method, path, text, needle):
    resp = raw(base, method, path, text) if text else requests.request(method, base + path, timeout=60)
    assert resp.status_code == 422, (resp.status_code, resp.text[:500])
    assert needle in json.dumps(resp.json()), resp.text[:500]  # the answer is JSON (no NaN echoed back)


def test_after_hostile_input_every_read_answers_for_everyone(base):
    for text in ('{"items": [{"item_id": "sur", "text": "t", "category": "\\ud800"}]}',
                 '{"items": [{"item_id": "nul\\u0000", "text": "t"}]}'):
        assert raw(base, "put", "/items", text).status_code == 422
    assert requests.get(base + "/items/sur", timeout=30).status_code == 404  # nothing was written
    assert requests.get(base + "/categories", timeout=30).status_code == 200
    recs = post(base, "/recommend", {"user_id": "after-hostile", "k": 20})
    assert recs.status_code == 200 and len({i["item_id"] for i in recs.json()["items"]}) == 20
    assert all(i["item_id"] and "\x00" not in i["item_id"] for i in recs.json()["items"])


def test_one_callers_bad_text_never_fails_anothers_encode(base):
    from concurrent.futures import ThreadPoolExecutor

    def good(n: int) -> int:
        return post(base, "/encode", {"texts": [f"a film about {n} dogs"]}).status_code

    with ThreadPoolExecutor(8) as pool:
        goods = [pool.submit(good, n) for n in range(8)]
        bad = pool.submit(raw, base, "post", "/encode", '{"texts": ["fine", "\\ud800 broken"]}')
        assert [g.result() for g in goods] == [200] * 8
        assert bad.result().status_code == 422 and "body.texts[1]" in bad.result().text


def test_items_answer_only_their_own_fields(base):
    wide = {"item_id": "wide-item", "text": "A film with many facts. Drama", "category": "Drama",
            **{f"fact{i}": f"value {i}" for i in range(20)}}
    plain = {"item_id": "plain-item", "text": "A plain film. Drama", "category": "Drama", "title": "Plain (2026)"}
    assert requests.put(base + "/items", json={"items": [wide, plain]}, timeout=60).json() == {"upserted": 2}
    got = requests.get(base + "/items/plain-item?embedding=false", timeout=30).json()
    assert got == {"item_id": "plain-item", "category": "Drama", "title": "Plain (2026)",
                   "text": "A plain film. Drama"}  # none of wide-item's 20 facts
    assert requests.get(base + "/items/wide-item?embedding=false", timeout=30).json()["fact7"] == "value 7"
    requests.put(base + "/users/facts-fan", json={"text": "a film with many facts"}, timeout=60)
    recs = post(base, "/recommend", {"user_id": "facts-fan", "k": 5}).json()["items"]
    by_id = {i["item_id"]: i for i in recs}
    assert "wide-item" in by_id and len(by_id["wide-item"]) == 2 + 1 + 20  # item_id, score, category, facts
    assert all("fact0" not in i for i in recs if i["item_id"] != "wide-item")
    for item in ("wide-item", "plain-item"):
        assert requests.delete(base + f"/items/{item}", timeout=30).status_code == 200


def test_a_restarted_ingress_never_reloads_its_catalog_over_acknowledged_writes(base, tmp_path):
    """All items deleted, a user's feedback acknowledged: a new ingress must not load the catalog again
    (bringing the deleted items back and resetting the user)."""
    path = tmp_path / "five.parquet"
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(5, 384)).astype(np.float32)
    pq.write_table(pa.table({"item_id": [f"i{n}" for n in range(5)],
                             "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 384),
                             "category": ["c"] * 5}), path)
    namespace = "reload-tests"
    app_args = {"catalog": str(path), "namespace": namespace, "actor_num_cpus": 0.02, "encoder_num_cpus": 0.05,
                "ingress_num_cpus": 0.02, "shards": 1}
    url = base + "/reload"
    try:
        serve.run(build_app(app_args), name="reload-test", route_prefix="/reload")
        assert requests.get(url + "/healthz", timeout=30).json()["items"] == 5
        fb = post(url, "/feedback", {"user_id": "r1", "item_id": "i0", "event": "like"})
        assert fb.status_code == 200 and fb.json()["user_version"] == 1
        for n in range(5):
            assert requests.delete(url + f"/items/i{n}", timeout=30).json() == {"deleted": 1}
        serve.delete("reload-test")  # the ingress goes; the system's actors (detached) stay
        serve.run(build_app(app_args), name="reload-test", route_prefix="/reload")
        assert requests.get(url + "/healthz", timeout=30).json()["items"] == 0  # the deleted items stay deleted
        user = requests.get(url + "/users/r1", timeout=30).json()
        assert user["user_version"] == 1 and [h["item_id"] for h in user["history"]] == ["i0"]
    finally:
        serve.delete("reload-test")
        Rayrec.connect(namespace=namespace).shutdown()


def test_only_the_allowed_host_names_are_answered(base):
    """A page on another site whose DNS name was rebound to 127.0.0.1 sends its own name as Host: refused."""
    port = base.rsplit(":", 1)[1]
    for path in ("/healthz", "/docs", "/"):
        evil = requests.get(base + path, headers={"Host": f"rebound.evil.test:{port}"}, timeout=30)
        assert evil.status_code == 400 and "allowed_hosts" in evil.json()["detail"], path
    fb = requests.post(base + "/feedback", json={"user_id": "u", "item_id": "1", "event": "like"},
                       headers={"Host": "rebound.evil.test"}, timeout=30)
    assert fb.status_code == 400
    assert requests.get(base + "/healthz", headers={"Host": f"localhost:{port}"}, timeout=30).status_code == 200


def test_a_user_can_be_exported_and_erased(base):
    assert requests.put(base + "/users/erase-me", json={"text": "silent films"}, timeout=60).status_code == 200
    liked = post(base, "/recommend", {"user_id": "erase-me", "k": 1}).json()["items"][0]["item_id"]
    fb = post(base, "/feedback", {"user_id": "erase-me", "item_id": liked, "event": "like", "event_id": "ev-1"})
    assert fb.json()["user_version"] == 2
    export = requests.get(base + "/users/erase-me/export", timeout=30)
    assert export.status_code == 200, export.text
    data = export.json()
    assert data["user_version"] == 2 and len(data["vector"]) == 384 and data["event_ids"][-1] == "ev-1"
    assert [h["item_id"] for h in data["history"]] == [liked]
    assert len(data["placed_from"]["text_embedding"]) == 384  # what a model swap would place it from
    gone = requests.delete(base + "/users/erase-me", timeout=30)
    assert gone.status_code == 200 and gone.json() == {"user_id": "erase-me", "deleted": True}
    assert requests.get(base + "/users/erase-me", timeout=30).status_code == 404
    assert requests.get(base + "/users/erase-me/export", timeout=30).status_code == 404
    assert requests.delete(base + "/users/erase-me", timeout=30).status_code == 404
    after = post(base, "/recommend", {"user_id": "erase-me", "k": 3}).json()
    assert after["cold_start"] is True and after["user_version"] == 0
    # the remembered event id went too: the same event is a new one now
    again = post(base, "/feedback", {"user_id": "erase-me", "item_id": liked, "event": "like", "event_id": "ev-1"})
    assert again.json() == {"user_id": "erase-me", "user_version": 1, "applied": True}
    requests.delete(base + "/users/erase-me", timeout=30)
