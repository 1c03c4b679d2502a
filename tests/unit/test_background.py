"""rayrec.learning.background without Ray: which space `rayrec serve` starts in, the background job's steps
over plain fakes, and the `rayrec train` arguments the Ray Train job runs with."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from rayrec.cli import _parser, train_arguments
from rayrec.exceptions import InvalidInputError
from rayrec.learning import store
from rayrec.learning.background import (
    CHECKING,
    DONE,
    FAILED,
    STOPPED,
    SWAPPING,
    TRAIN_POLL_ENV,
    TRAINING,
    WAITING,
    BackgroundSwap,
    plan_start,
    progress_line,
    quick_train_polls,
    train_cpus,
)
from rayrec.learning.sequential_job import SequentialJob


def _write_version(root) -> str:
    ids = ["a", "b"]
    vectors = np.eye(2, dtype=np.float32)
    return store.save(root, "svd", ids, vectors, np.zeros(2, bool), np.zeros((2, 3)), np.zeros(2), {})


def test_an_empty_models_root_starts_in_text_and_trains_in_the_background(tmp_path) -> None:
    plan = plan_start(None, "movielens-100k", tmp_path / "models")  # not even created yet
    assert plan.model is None and plan.train and "trains in the background" in plan.reason
    (tmp_path / "models" / "v1").mkdir(parents=True)  # a version folder without its manifest: incomplete
    assert plan_start(None, "movielens-100k", tmp_path / "models").train


def test_a_stored_version_is_served_and_nothing_trains(tmp_path) -> None:
    _write_version(tmp_path)
    _write_version(tmp_path)
    plan = plan_start(None, "movielens-100k", tmp_path)
    assert plan.model == store.LATEST and not plan.train and "v2" in plan.reason
    assert store.resolve(plan.model, tmp_path).name == "v2"


def test_model_text_and_named_models_never_train(tmp_path) -> None:
    for root in (tmp_path / "empty", tmp_path):
        text = plan_start("text", "movielens-100k", root)
        assert text.model is None and not text.train and "--model text" in text.reason
    for model in ("latest", "v3", "/some/folder"):
        plan = plan_start(model, "movielens-100k", tmp_path / "empty")
        assert plan.model == model and not plan.train


def test_a_catalog_without_interactions_starts_in_text_without_training(tmp_path) -> None:
    for catalog in ("none", "items.parquet"):
        plan = plan_start(None, catalog, tmp_path)
        assert plan.model is None and not plan.train and catalog in plan.reason


def test_the_training_claims_its_threads_and_leaves_cores_to_the_service() -> None:
    assert train_cpus(1.0, threads=1, spare=0.5) == 0.5  # 2 cores, the service's actors hold ~1
    assert train_cpus(15.0, threads=7, spare=0.5) == 7.0
    assert train_cpus(0.2, threads=1, spare=0.5) == 0.1  # never 0: it waits for room instead


def test_progress_lines() -> None:
    line = progress_line({"epoch": {"epoch": 3, "loss": 6.123456, "seconds": 2.04, "validation": {"hr@10": 0.08}}})
    assert line == "rayrec: training: epoch 3, loss 6.1235, validation HR@10 0.0800 (2.0 s)"
    assert progress_line({"epoch": {"epoch": 1, "loss": 1.0, "seconds": 1.0}}) == (
        "rayrec: training: epoch 1, loss 1.0000 (1.0 s)")
    assert progress_line({"message": "encoding 30 item texts"}) == "rayrec: training: encoding 30 item texts"


class FakeService:
    """POST /model and /recommend as plain calls, recording the states the job was in when each came."""

    def __init__(self, job_of, fail_swap: bool = False) -> None:
        self.job_of, self.fail_swap = job_of, fail_swap
        self.calls: list[tuple[str, str]] = []

    def swap(self, version: str) -> dict:
        self.calls.append(("swap", self.job_of().state))
        if self.fail_swap:
            raise RuntimeError("POST /model answered 422: no")
        return {"model_version": version, "previous": "text", "items": 30, "users": 7, "seconds": 1.5}

    def check(self, summary: dict) -> dict:
        self.calls.append(("check", self.job_of().state))
        return {"model_version": summary["version"], "user_model": "sequential"}


def _train(progress):
    progress({"message": "training the sequential user model: 10 interactions"})
    progress({"epoch": {"epoch": 1, "loss": 2.0, "seconds": 0.5}})
    return {"version": "v1", "kind": "sequential", "dim": 95, "path": "/models/v1"}


def test_the_job_trains_swaps_and_checks_in_order() -> None:
    lines: list[str] = []
    job: BackgroundSwap
    service = FakeService(lambda: job)
    ticks = iter([0.0, 100.0, 104.0])
    job = BackgroundSwap(_train, service.swap, service.check, say=lines.append, clock=lambda: next(ticks))
    assert job.state == WAITING and not job.ended
    job.run()
    assert job.state == DONE and job.ended and job.error is None and job.wait(0)
    assert service.calls == [("swap", SWAPPING), ("check", CHECKING)]
    assert job.summary["version"] == "v1" and job.swapped["users"] == 7 and job.seconds == 104.0
    assert job.serving == "v1" and job.answer["user_model"] == "sequential"
    assert lines == [
        "rayrec: training: training the sequential user model: 10 interactions",
        "rayrec: training: epoch 1, loss 2.0000 (0.5 s)",
        "rayrec: model v1 (sequential, 95-d) written to /models/v1 in 100 s; swapping to it live (POST /model)",
        "rayrec: swapped to model v1 (from text) in 1.5 s: 7 users and 30 items moved, 104 s after the start; "
        "later starts serve it",
        "rayrec: /recommend answered from model v1 (user model sequential)",
    ]


def test_a_failed_training_never_swaps_and_says_what_still_serves() -> None:
    lines: list[str] = []
    swaps: list[str] = []

    def broken(progress):
        raise RuntimeError("TrainingFailedError: out of memory")

    job = BackgroundSwap(broken, swaps.append, say=lines.append)
    job.run()
    assert job.state == FAILED and swaps == [] and "out of memory" in job.error
    assert lines == ["rayrec: the background training failed (RuntimeError: TrainingFailedError: out of memory); "
                     "still serving text"]


def test_a_failed_swap_is_reported_and_the_service_keeps_its_space() -> None:
    lines: list[str] = []
    job: BackgroundSwap
    service = FakeService(lambda: job, fail_swap=True)
    job = BackgroundSwap(_train, service.swap, service.check, say=lines.append)
    job.run()
    assert job.state == FAILED and job.serving == "text" and service.calls == [("swap", SWAPPING)]
    assert lines[-1] == ("rayrec: the background swapping failed (RuntimeError: POST /model answered 422: no); "
                         "still serving text")


def test_stop_during_training_ends_quietly_and_nothing_is_swapped() -> None:
    started, release = threading.Event(), threading.Event()
    lines: list[str] = []
    swaps: list[str] = []

    def slow(progress):
        started.set()
        release.wait(10)
        progress({"message": "after the stop: not shown"})
        raise RuntimeError("the Ray job ended under it")  # what ray.shutdown does to the training

    job = BackgroundSwap(slow, swaps.append, say=lines.append)
    job.start()
    assert started.wait(10) and job.state == TRAINING and not job.wait(0)
    job.stop()
    release.set()
    assert job.wait(10) and job.state == STOPPED and swaps == [] and lines == [] and job.error is None


def test_stop_between_training_and_swap_swaps_nothing() -> None:
    swaps: list[str] = []
    job: BackgroundSwap

    def train_then_stopped(progress):
        job.stop()  # Ctrl-C came as the version was written
        return {"version": "v1", "kind": "sequential", "dim": 95, "path": "/models/v1"}

    job = BackgroundSwap(train_then_stopped, swaps.append, say=lambda line: None)
    job.run()
    assert job.state == STOPPED and swaps == [] and job.summary["version"] == "v1"


def test_the_ray_train_job_runs_rayrec_train_sequential_with_its_own_arguments(tmp_path) -> None:
    job = SequentialJob(root=str(tmp_path), cpus=0.5, threads=1, model_dir="/m", validation_share=0.2)
    args = train_arguments(job.argv())
    assert (args.model, args.out, args.model_dir, args.validation_share) == ("sequential", str(tmp_path), "/m", 0.2)
    plain = train_arguments(SequentialJob(root=str(tmp_path)).argv())
    assert plain.validation_share == train_arguments([]).validation_share and plain.model_dir is None
    with pytest.raises(InvalidInputError, match="threads"):
        SequentialJob(root=str(tmp_path), threads=0)
    with pytest.raises(InvalidInputError, match="cpus"):
        SequentialJob(root=str(tmp_path), cpus=0)


def test_serve_takes_model_text_and_one_exit_flag() -> None:
    args = _parser().parse_args(["serve", "--model", "text", "--exit-after-swap"])
    assert args.model == "text" and args.exit_after_swap and not args.exit_after_start
    assert _parser().parse_args(["serve"]).model is None
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--exit-after-start", "--exit-after-swap"])


def test_quick_train_polls_sets_the_controller_poll_unless_the_user_did(monkeypatch):
    monkeypatch.delenv(TRAIN_POLL_ENV, raising=False)
    quick_train_polls()
    assert os.environ[TRAIN_POLL_ENV] == "0.2"
    monkeypatch.setenv(TRAIN_POLL_ENV, "5")
    quick_train_polls()
    assert os.environ[TRAIN_POLL_ENV] == "5"
