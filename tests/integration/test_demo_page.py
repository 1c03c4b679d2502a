"""The demo page end to end: headless Chromium (Debian's package, driven by Playwright) against the real app
serving the MovieLens catalog on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from ray import serve

from rayrec import Rayrec
from rayrec.catalogs import movielens
from tests.integration.test_http import free_port

NAMESPACE = "demo-page-tests"
APP = "rayrec-demo-test"
KEYED_NAMESPACE = "demo-page-keyed"
KEYED_APP = "rayrec-demo-keyed"
KEY = "demo-page-key"
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
def port(ray_session):
    """One Serve HTTP proxy on 127.0.0.1 for the module's two apps."""
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield port
    finally:
        serve.shutdown()


def _app(settings: dict):
    """The app of `settings` plus small CPU shares and exact search."""
    from rayrec.serve_app.app import build_app

    return build_app({"index": "Flat", "actor_num_cpus": 0.02, "encoder_num_cpus": 0.05, "ingress_num_cpus": 0.02,
                      **settings})


@pytest.fixture(scope="module")
def apps(port, tmp_path_factory):
    """The module's two apps, deployed together so that their replicas start side by side; their URLs; deleted
    after. At /: the app as `rayrec serve` builds it (MovieLens 100K: 1,682 movies, 942 users). At /keyed: 40
    MovieLens movies, no users, write routes behind an API key."""
    from rayrec.serve_app.http_edge import key_digest

    path = tmp_path_factory.mktemp("catalog") / "movies.parquet"
    pq.write_table(movielens.load().items.slice(0, 40), path)
    keyed = {"catalog": str(path), "namespace": KEYED_NAMESPACE, "api_key_sha256": key_digest(KEY)}
    systems = {APP: NAMESPACE, KEYED_APP: KEYED_NAMESPACE}
    serve.run_many([
        serve.RunTarget(_app({"catalog": "movielens-100k", "namespace": NAMESPACE}), name=APP, route_prefix="/"),
        serve.RunTarget(_app(keyed), name=KEYED_APP, route_prefix="/keyed"),
    ])
    try:
        yield {APP: f"http://127.0.0.1:{port}", KEYED_APP: f"http://127.0.0.1:{port}/keyed"}
    finally:
        for name, namespace in systems.items():
            serve.delete(name)
            Rayrec.connect(namespace=namespace).shutdown()


@pytest.fixture(scope="module")
def base(apps):
    """The app as `rayrec serve` builds it (MovieLens 100K: 1,682 movies, 942 users), with exact search."""
    return apps[APP]


@pytest.fixture(scope="module")
def keyed(apps):
    """A second app under the route prefix /keyed: 40 MovieLens movies, no users, write routes behind an API key."""
    return apps[KEYED_APP]


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


def open_page(browser, url: str, **kwargs):
    """A new page at url, once it has loaded the server's figures; collects script and console errors."""
    page = browser.new_page(**kwargs)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    # Chromium logs every refused request ("Failed to load resource"); the page shows those itself.
    page.on("console", lambda msg: msg.type == "error" and not msg.text.startswith("Failed to load resource")
            and page.errors.append(msg.text))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    return page


def renders(page) -> int:
    return int(page.get_attribute("#recs", "data-renders") or 0)


def wait_render(page, after: int, condition: str = "true") -> None:
    """Waits for a render newer than `after` for which the JS `condition` holds, with no error shown."""
    page.wait_for_function(f"() => Number(document.querySelector('#recs').dataset.renders) > {after} && ({condition})",
                           timeout=30_000)
    assert page.is_hidden("#error"), page.inner_text("#error")


def pressed(page, renders_before: int) -> None:
    """After a press: a new render and the press-to-screen time measured for it."""
    wait_render(page, renders_before, "!isNaN(parseFloat(document.querySelector('#latency').textContent))")


def test_serves_the_page_and_its_files_from_the_package(base):
    page = requests.get(base + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # the browser loads nothing from elsewhere, and no other site may frame the page
    assert page.headers["content-security-policy"] == "default-src 'self'; frame-ancestors 'none'"
    assert page.headers["x-frame-options"] == "DENY"
    assert '<script src="/static/demo.js"' in page.text and "{{root}}" not in page.text
    assert "http://" not in page.text and "https://" not in page.text and '="//' not in page.text  # all local
    assert requests.get(base + "/demo", timeout=30).text == page.text
    js = requests.get(base + "/static/demo.js", timeout=30)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "fetch(ROOT + path" in js.text and "innerHTML" not in js.text  # server data never parsed as HTML
    for name in ("..%2Fapp.py", "demo.html", "secrets.txt"):  # only the page's own files
        assert requests.get(f"{base}/static/{name}", timeout=30).status_code == 404, name
    # What the page's filter offers: every MovieLens category with its real item count, most items first.
    cats = requests.get(base + "/categories", timeout=30).json()["categories"]
    expected = Counter(movielens.load().items["category"].to_pylist())
    assert {c["name"]: c["items"] for c in cats} == dict(expected) and sum(expected.values()) == 1682
    assert [c["items"] for c in cats] == sorted(expected.values(), reverse=True)


def test_like_in_a_real_browser_moves_the_list(base, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_page(browser, base + "/", viewport={"width": 1200, "height": 1000})
    users = len(movielens.load().histories())  # 942: one of the 943 rated nothing 4 or 5
    assert f"1682 items, {users} users, model text" in page.inner_text("#server")
    page.wait_for_function("() => document.querySelector('#who').textContent === 'user 1'", timeout=30_000)
    # Which model answered the list, and which moved the user; no live swap yet (test_background_swap has one).
    assert page.inner_text("#model") == "text" and page.inner_text("#user-model") == "rule"
    assert page.is_hidden("#swap")

    # Choose a MovieLens user with the keyboard: type the id, press Enter.
    n = renders(page)
    page.fill("#user-id", "7")
    page.press("#user-id", "Enter")
    wait_render(page, n, "document.querySelector('#who').textContent === 'user 7'")
    before = rows(page)
    assert len(before) == 10 and all(r["move"] == "same" for r in before)
    assert page.eval_on_selector_all("#history li", "els => els.length") == 15  # user 7's 15 most recent ratings

    # Press `like` on the fifth item, from the keyboard (focus its button, Enter).
    liked = before[4]
    n = renders(page)
    page.get_by_role("button", name=f"like {liked['title']}", exact=True).focus()
    page.keyboard.press("Enter")
    pressed(page, n)
    after = rows(page)

    # The list re-rendered without the liked item (now seen); the page's marks say what moved.
    assert liked["id"] not in [r["id"] for r in after]
    assert liked["id"] in page.eval_on_selector_all("#left .left-item", "els => els.map(e => e.dataset.itemId)")
    rank_before = {r["id"]: i for i, r in enumerate(before)}
    rank_after = {r["id"]: i for i, r in enumerate(after)}
    for r in after:
        was = rank_before.get(r["id"])
        expected = "entered" if was is None else "rose" if was > rank_after[r["id"]] else (
            "fell" if was < rank_after[r["id"]] else "same")
        assert r["move"] == expected, (r, was)
    counts = {m: sum(r["move"] == m for r in after) for m in ("rose", "fell", "entered")}
    left = len(set(rank_before) - set(rank_after))
    assert page.inner_text("#changes") == (f"{counts['rose']} rose, {counts['fell']} fell, "
                                           f"{counts['entered']} entered, {left} left.")

    # The liked item's neighbours moved up: a like moves the user to normalise(v + rate * x), so an item
    # passes another exactly when it is nearer to the liked item x. Check every overtaking against the
    # items' real vectors; a like that only let one item in at the bottom would have none.
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

    # The keyboard focus stays in the list, on the same button at the same place: Enter again sends a like
    # for the item that moved up into it, and the latency shown is that press's.
    assert page.evaluate("document.activeElement.dataset.event") == "like"
    focused = page.evaluate("document.activeElement.closest('li').dataset.itemId")
    assert focused == after[4]["id"]
    n = renders(page)
    page.keyboard.press("Enter")
    pressed(page, n)
    assert page.locator("#history li").first.get_attribute("data-item-id") == focused
    assert focused not in [r["id"] for r in rows(page)]

    # Readable at phone width: nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "demo-phone.png"), full_page=True)

    # A category filter: a new list, every item in it.
    n = renders(page)
    page.select_option("#category", "Comedy")
    wait_render(page, n)
    assert {r["title"] for r in rows(page)} and page.eval_on_selector_all(
        "#recs li .detail", "els => els.every(e => e.textContent.startsWith('Comedy \u00b7'))")
    assert all(r["move"] == "same" for r in rows(page))  # another list, not a move of the last one

    # A new user described by text gets a list too.
    n = renders(page)
    page.fill("#user-text", "scary horror movies with ghosts")
    page.click("#new-user button")
    wait_render(page, n, "document.querySelector('#who').textContent.startsWith('a new user')")
    assert len(rows(page)) == 10
    assert page.errors == []


def test_errors_api_key_and_route_prefix(keyed, browser):
    """Under a route prefix, with write routes behind an API key, the page works and says what went wrong."""
    page = open_page(browser, keyed + "/")
    assert "40 items, 0 users" in page.inner_text("#server")
    # User 1 is unknown to this app (no users): the cold-start list, and the page says so.
    page.wait_for_function("() => document.querySelector('#who').textContent === 'user 1'", timeout=30_000)
    assert "Unknown user" in page.inner_text("#changes") and len(rows(page)) == 10

    # The API refuses a user id over 512 characters: the page shows why.
    page.fill("#user-id", "u" * 600)
    page.press("#user-id", "Enter")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    # (its two calls, POST /recommend and GET /users/{id}, are both refused: whichever answers first is shown)
    error = page.inner_text("#error")
    assert ("POST /recommend failed (422)" in error or "failed (422): path.user_id" in error) and "512" in error

    # Feedback without the key: refused, and the page says what to do; with it, the list moves.
    n = renders(page)
    page.fill("#user-id", "3")
    page.press("#user-id", "Enter")
    wait_render(page, n, "document.querySelector('#who').textContent === 'user 3'")
    item = rows(page)[0]["id"]
    page.locator("#recs li button.like").first.click()
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "POST /feedback failed (401)" in page.inner_text("#error")
    assert "Enter the server's API key" in page.inner_text("#error")
    assert page.inner_text("#latency") == "\u2013"  # no figure for a press that failed
    page.click("details.key summary")
    page.fill("#api-key", KEY)
    n = renders(page)
    page.locator("#recs li button.like").first.click()
    pressed(page, n)
    assert page.locator("#history li").first.get_attribute("data-item-id") == item

    # A category with fewer items than k: the list is just those.
    cats = requests.get(keyed + "/categories", timeout=30).json()["categories"]
    small = next(c for c in cats if c["items"] < 10)
    n = renders(page)
    page.select_option("#category", small["name"])
    wait_render(page, n)
    liked_category = requests.get(f"{keyed}/items/{item}?embedding=false", timeout=30).json()["category"]
    assert len(rows(page)) == small["items"] - (liked_category == small["name"])  # the liked item is seen
    assert page.errors == []

    # The service goes away (as in a restart): pressing a button says so instead of failing silently.
    page.select_option("#category", "")
    page.wait_for_selector("#recs li", timeout=30_000)
    serve.delete(KEYED_APP)
    page.locator("#recs li button.like").first.click()
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    message = page.inner_text("#error")
    assert "POST /feedback failed" in message or "cannot be reached" in message, message
