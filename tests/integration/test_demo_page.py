"""The demo page end to end: headless Chromium (Debian's package, driven by Playwright) against the real app
serving the MovieLens catalog on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests
from ray import serve

from rayrec import Rayrec, movielens
from tests.integration.test_http import free_port

NAMESPACE = "demo-page-tests"
APP = "rayrec-demo-test"
ARTIFACTS = Path(os.environ.get("RAYREC_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
# Chromium on a machine whose network is closed: no background connections (see README, "Browser test").
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = os.environ.get("RAYREC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("the browser test needs Chromium: `apt-get install -y chromium` (README, Test)")
    return path


@pytest.fixture(scope="module")
def base(ray_session):
    """The app as `rayrec serve` builds it (MovieLens 100K: 1,682 movies, 943 users), with exact search."""
    from serve_app.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app({"catalog": "movielens-100k", "namespace": NAMESPACE, "index": "Flat", "actor_num_cpus": 0.02,
                     "encoder_num_cpus": 0.1, "ingress_num_cpus": 0.02})
    serve.run(app, name=APP, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete(APP)
        Rayrec.connect(namespace=NAMESPACE).shutdown()
        serve.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def rows(page) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "#recs li", "els => els.map(e => ({id: e.dataset.itemId, move: e.dataset.move, "
        "title: e.querySelector('.title').textContent}))"
    )


def embedding(base: str, item: str) -> np.ndarray:
    resp = requests.get(f"{base}/items/{item}", timeout=30)
    resp.raise_for_status()
    return np.asarray(resp.json()["embedding"], dtype=np.float64)


def test_serves_the_page_and_its_files_from_the_package(base):
    page = requests.get(base + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/demo.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text and '="//' not in page.text  # all local
    assert requests.get(base + "/demo", timeout=30).text == page.text
    js = requests.get(base + "/static/demo.js", timeout=30)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "fetch(" in js.text and "//cdn" not in js.text
    assert requests.get(base + "/static/../app.py", timeout=30).status_code == 404
    assert requests.get(base + "/static/secrets.txt", timeout=30).status_code == 404
    # What the page's filter offers: every MovieLens category with its real item count, most items first.
    cats = requests.get(base + "/categories", timeout=30).json()["categories"]
    expected = Counter(movielens.load().items["category"].to_pylist())
    assert {c["name"]: c["items"] for c in cats} == dict(expected) and sum(expected.values()) == 1682
    assert [c["items"] for c in cats] == sorted(expected.values(), reverse=True)


def test_like_in_a_real_browser_moves_the_list(base, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    users = len(movielens.load().histories())  # 942: one of the 943 rated nothing 4 or 5
    assert f"1682 items, {users} users, model text" in page.inner_text("#server")

    # Choose a MovieLens user with the keyboard: type the id, press Enter.
    page.fill("#user-id", "7")
    page.press("#user-id", "Enter")
    page.wait_for_function("document.querySelector('#who').textContent === 'user 7' && "
                           "document.querySelectorAll('#recs li').length === 10", timeout=30_000)
    before = rows(page)
    renders = int(page.get_attribute("#recs", "data-renders"))
    history_before = page.eval_on_selector_all("#history li", "els => els.length")
    assert history_before == 15  # user 7 rated hundreds of movies: the 15 most recent are shown

    # Press `like` on the fifth item, from the keyboard (focus its button, Enter).
    liked = before[4]
    page.get_by_role("button", name=f"like {liked['title']}", exact=True).focus()
    page.keyboard.press("Enter")
    page.wait_for_function(f"Number(document.querySelector('#recs').dataset.renders) > {renders} && "
                           "!isNaN(parseFloat(document.querySelector('#latency').textContent))", timeout=30_000)
    after = rows(page)

    # The list re-rendered without the liked item (now seen) and the page says what moved.
    assert liked["id"] not in [r["id"] for r in after]
    assert liked["id"] in page.eval_on_selector_all("#left .left-item", "els => els.map(e => e.dataset.itemId)")
    rank_before = {r["id"]: i for i, r in enumerate(before)}
    rank_after = {r["id"]: i for i, r in enumerate(after)}
    for r in after:
        was = rank_before.get(r["id"])
        expected = "entered" if was is None else "rose" if was > rank_after[r["id"]] else (
            "fell" if was < rank_after[r["id"]] else "same")
        assert r["move"] == expected, (r, was)
    assert any(r["move"] in ("rose", "entered") for r in after)

    # The liked item's neighbours moved up: a like moves the user to normalise(v + rate * x), so an item
    # passes another exactly when it is nearer to the liked item x. Check every overtaking against the
    # items' real vectors.
    x = embedding(base, liked["id"])
    near = {i: float(embedding(base, i) @ x) for i in set(rank_before) | set(rank_after) if i != liked["id"]}
    overtakes = 0
    for a in rank_after:
        for b in near:
            b_after = rank_after.get(b, len(after))  # dropped out: below every listed item
            if a in rank_before and b in rank_before and rank_before[a] > rank_before[b] and rank_after[a] < b_after:
                assert near[a] > near[b] - 1e-6, (a, b, near[a], near[b])
                overtakes += 1
            if a not in rank_before and b in rank_before and b_after > rank_after[a]:  # a entered past b
                assert near[a] > near[b] - 1e-6, (a, b, near[a], near[b])
                overtakes += 1
    assert overtakes > 0

    # The history shows the like first, with the movie's title.
    first = page.locator("#history li").first
    assert first.get_attribute("data-event") == "like" and first.get_attribute("data-item-id") == liked["id"]
    assert liked["title"] in first.inner_text() and "liked" in first.inner_text()
    # The latency a person feels, and the server's own freshness figure, are numbers.
    latency = float(page.inner_text("#latency"))
    freshness = float(page.inner_text("#freshness"))
    assert 0 < latency < 30_000 and 0 <= freshness < 30_000
    page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)

    # Readable at phone width: nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "demo-phone.png"), full_page=True)

    # A category filter: every item shown is in it.
    page.select_option("#category", "Comedy")
    page.wait_for_function("[...document.querySelectorAll('#recs li .detail')].length > 0 && "
                           "[...document.querySelectorAll('#recs li .detail')].every(d => d.textContent.startsWith('Comedy'))",
                           timeout=30_000)

    # A new user described by text gets a list too.
    page.fill("#user-text", "scary horror movies with ghosts")
    page.click("#new-user button")
    page.wait_for_function("document.querySelector('#who').textContent.startsWith('a new user')", timeout=30_000)
    assert errors == []


def test_api_errors_show_as_readable_messages(base, browser):
    page = browser.new_page()
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    page.wait_for_selector("#recs li", timeout=30_000)
    assert page.is_hidden("#error")
    # The API refuses a user id over 512 characters: the page shows why.
    page.fill("#user-id", "u" * 600)
    page.press("#user-id", "Enter")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "POST /recommend failed (422)" in page.inner_text("#error")
    # The service goes away (as in a restart): pressing a button says so instead of failing silently.
    page.fill("#user-id", "3")
    page.press("#user-id", "Enter")
    page.wait_for_function("document.querySelector('#who').textContent === 'user 3'", timeout=30_000)
    assert page.is_hidden("#error")
    serve.delete(APP)
    page.locator("#recs li button.like").first.click()
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    message = page.inner_text("#error")
    assert "POST /feedback failed" in message or "cannot be reached" in message, message
