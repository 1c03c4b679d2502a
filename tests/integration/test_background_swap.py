"""`rayrec serve`'s default experience, end to end on a small log: the service answers in the text space at
once, the sequential space trains as a Ray Train job on the same Ray, and the service swaps to it live
through its own POST /model; a failed swap leaves it serving the text space."""

from __future__ import annotations

import pytest
import requests
from ray import serve

from rayrec import Rayrec
from rayrec.evaluation.data import load_files
from rayrec.learning import store
from rayrec.learning.background import DONE, FAILED, BackgroundSwap, ServiceClient, sequential_swap
from rayrec.learning.sequential import SequenceParams
from rayrec.learning.sequential_job import SequentialJob
from tests.integration.test_demo_page import ARTIFACTS, CHROMIUM_ARGS, chromium_path, open_page
from tests.integration.test_http import free_port, post
from tests.integration.test_learned_space import _files

NAMESPACE = "background-swap-tests"
APP = "rayrec-background-test"
SMALL = SequenceParams(dim=16, length=10, blocks=1, epochs=4, patience=0)  # a few seconds of training


@pytest.fixture(scope="module")
def service(ray_session, tmp_path_factory):
    """The app on the small log's 30 items in the text space (no model), over an empty models root."""
    from rayrec.serve_app.app import build_app

    folder = tmp_path_factory.mktemp("background")
    inter, items, _ = _files(folder)
    models = folder / "models"
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app({"catalog": items, "models_root": str(models), "namespace": NAMESPACE, "index": "Flat",
                     "actor_num_cpus": 0.02, "encoder_num_cpus": 0.05, "ingress_num_cpus": 0.02})
    serve.run(app, name=APP, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}", load_files(inter, items), models
    finally:
        serve.delete(APP)
        Rayrec.connect(namespace=NAMESPACE).shutdown()
        serve.shutdown()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_a_failed_swap_keeps_the_text_space_and_says_why(service):
    url, _, _ = service
    lines: list[str] = []
    job = BackgroundSwap(lambda progress: {"version": "v99", "kind": "sequential", "dim": 8, "path": "nowhere"},
                         ServiceClient(url).swap, say=lines.append)
    job.run()
    assert job.state == FAILED and "POST /model answered 422" in job.error and "v99" in job.error
    assert lines[-1].startswith("rayrec: the background swapping failed") and lines[-1].endswith(
        "still serving text")
    health = requests.get(url + "/healthz", timeout=30).json()
    assert health["model_version"] == "text" and health["last_swap"] is None


def test_trains_on_ray_train_then_swaps_live_to_the_sequential_model(service, chromium):
    url, dataset, models = service
    user = next(e.user for e in reversed(dataset.events) if e.positive)  # the user the job checks
    # In the text space: the user's feedback moves them by the rule.
    for n, item in enumerate(["space-1", "space-2", "space-3"]):
        assert post(url, "/feedback", {"user_id": user, "item_id": item, "event": "like",
                                       "event_id": f"bg-{n}"}).status_code == 200
    before = post(url, "/recommend", {"user_id": user, "k": 5}).json()
    assert before["model_version"] == "text" and before["user_model"] == "rule"
    assert requests.get(url + "/healthz", timeout=30).json()["last_swap"] is None
    # The demo page, open on that user through the swap.
    page = open_page(chromium, url + "/")
    page.fill("#user-id", user)
    page.press("#user-id", "Enter")
    page.wait_for_function(f"() => document.querySelector('#who').textContent === 'user {user}'", timeout=30_000)
    assert page.inner_text("#model") == "text" and page.inner_text("#user-model") == "rule"
    assert page.is_hidden("#swap")

    lines: list[str] = []
    job = sequential_swap(dataset, SequentialJob(root=str(models), cpus=0.5, threads=1, sequence=SMALL),
                          ServiceClient(url), say=lines.append)
    job.start()
    assert job.wait(240), f"the background job is still {job.state}: {lines}"
    assert job.state == DONE, (job.error, lines)

    version = job.summary["version"]
    assert version == "v1" and store.manifest(models / version)["kind"] == "sequential"
    assert (models / version / store.USER_MODEL).is_dir()
    # Progress reached this process while it trained: the run's lines and every validated epoch.
    epochs = [line for line in lines if line.startswith("rayrec: training: epoch ")]
    # Every epoch of the run with validation (patience 0: all of them), then of the run again on every event.
    assert len(epochs) == 2 * SMALL.epochs and "validation HR@10" in epochs[0]
    assert all("validation HR@10" not in line for line in epochs[SMALL.epochs:])
    assert any("training the sequential user model" in line for line in lines)
    swapped = next(line for line in lines if line.startswith("rayrec: swapped to model v1 (from text)"))
    assert f"{job.swapped['users']} users" in swapped and job.swapped["users"] >= 1
    assert job.answer["model_version"] == "v1" and job.answer["user_model"] == "sequential"

    # The service answers from the new model, the user computed by the sequential model from their events.
    after = post(url, "/recommend", {"user_id": user, "k": 5}).json()
    assert after["model_version"] == "v1" and after["user_model"] == "sequential"
    health = requests.get(url + "/healthz", timeout=30).json()
    assert health["model_version"] == "v1"
    last = health["last_swap"]
    assert last["model_version"] == "v1" and last["previous"] == "text" and last["seconds"] > 0
    assert last["at"].endswith("Z") and last["users"] == job.swapped["users"] and last["items"] == 30

    # The page saw the swap by itself: it says when it happened and shows a list from the new model.
    page.wait_for_function("() => document.querySelector('#recs').dataset.model === 'v1'", timeout=30_000)
    assert page.inner_text("#model") == "v1" and page.inner_text("#user-model") == "sequential"
    # The swap's record comes once the swap has ended, which may be after the page's list moved.
    page.wait_for_function("() => document.querySelector('#swap').dataset.version === 'v1'", timeout=30_000)
    assert page.get_attribute("#swap", "data-at") == last["at"]
    assert page.inner_text("#swap").startswith("Model swapped live from text to v1 at ")
    assert "model v1" in page.inner_text("#server") and page.is_hidden("#error") and page.errors == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-swapped.png"), full_page=True)
