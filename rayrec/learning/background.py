"""`rayrec serve`'s default experience: which space to start in, and the background job that trains the
sequential space and swaps the running service to it live (plain: the training and the swap are handed in).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rayrec import constants as C
from rayrec.learning import store

if TYPE_CHECKING:
    from rayrec.evaluation.data import Dataset
    from rayrec.learning.sequential_job import SequentialJob

TEXT = "text"  # --model text: the encoder's own space, no background training
TRAINABLE_CATALOG = "movielens-100k"  # the catalog whose interactions rayrec has: the one it can train on
# The job's states, in order; it ends in one of the last three.
WAITING, TRAINING, SWAPPING, CHECKING, DONE, FAILED, STOPPED = (
    "waiting", "training", "swapping", "checking", "done", "failed", "stopped")
ENDED = (DONE, FAILED, STOPPED)
# Ray Train's placement-group cleaner asks the state API whether the run's controller lives, every second;
# on a Ray without a dashboard (rayrec serve's) each try logs a warning, which would fill serve's output.
QUIET_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)
QUIET_HOOK = f"{__name__}.quiet_train_logs"  # ray.init(runtime_env={"worker_process_setup_hook": QUIET_HOOK})
# Ray Train's controller polls its workers every 2 s by default, and a worker's ray.train.report of an epoch
# waits for that poll: ~2 s per reported epoch whatever its work. 0.2 s on the Ray rayrec starts itself.
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_S = "0.2"


@dataclass(frozen=True, slots=True)
class StartPlan:
    """What `rayrec serve` starts with: `model` for AppArgs (None: the text space), and whether to train."""

    model: str | None
    train: bool
    reason: str  # one line for the output


def plan_start(model: str | None, catalog: str, root: str | os.PathLike[str]) -> StartPlan:
    """The start for `--model` (None when not given), the catalog and the models root.

    Not given: the latest version under root if there is one; else the text space, and (for the catalog
    whose interactions rayrec has) the sequential space trained in the background and swapped in.
    `text`: the text space, nothing trained. Anything else (latest, v3, a folder): that model.
    """
    if model == TEXT:
        return StartPlan(None, False, "the text space (--model text)")
    if model is not None:
        return StartPlan(model, False, f"model {model} (--model)")
    found = store.versions(root)
    if found:
        return StartPlan(store.LATEST, False, f"the latest stored model, v{found[-1]} (under {root})")
    if catalog != TRAINABLE_CATALOG:
        return StartPlan(None, False, f"the text space (no model under {root}, and no interactions to train one "
                                      f"on for catalog {catalog})")
    return StartPlan(None, True, f"the text space while the sequential model trains in the background (no model "
                                 f"under {root} yet)")


def quiet_train_logs() -> None:
    """A worker_process_setup_hook: only errors from QUIET_LOGGERS in this worker process."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def quick_train_polls() -> None:
    """Before this process starts its own local Ray: the Ray Train controllers it runs poll every TRAIN_POLL_S
    (the raylet, and so every worker, inherits this environment); a value the user set is kept."""
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)


def train_cpus(available: float, threads: int, spare: float = C.BACKGROUND_TRAIN_SPARE_CPUS) -> float:
    """The training worker's CPU claim: at most its threads, leaving `spare` of the free CPUs (at least 0.1)."""
    return round(max(0.1, min(float(threads), available - spare)), 2)


def progress_line(entry: dict[str, Any]) -> str:
    """One output line for a training job's progress entry ({"message": ...} or {"epoch": metrics})."""
    if "epoch" in entry:
        stats = entry["epoch"]
        held = (stats.get("validation") or {}).get("hr@10")
        scored = "" if held is None else f", validation HR@10 {held:.4f}"
        return f"rayrec: training: epoch {stats['epoch']}, loss {stats['loss']:.4f}{scored} ({stats['seconds']:.1f} s)"
    return f"rayrec: training: {entry.get('message', entry)}"


class BackgroundSwap:
    """Trains a model version, swaps the running service to it, checks an answer from it: in its own thread.

    States, in order: waiting, training, swapping, checking, then done; or failed (a step raised: the service
    keeps the space it had, `error` says why) or stopped (stop() came first: nothing more is swapped).

    Args:
        train: on_progress -> the written version's summary ({"version", "kind", "dim", ...}); it hands each
            progress entry ({"message"} or {"epoch"}) to on_progress as it goes.
        swap: version -> the service's POST /model answer (raises if the swap failed).
        check: summary -> an answer of the service from the new version (raises if it is not).
        say: takes each output line.
        serving: the space the service serves until the swap (named when one fails).
        stopping: the event stop() sets (default: a new one), for a train that watches it.
    """

    def __init__(
        self,
        train: Callable[[Callable[[dict[str, Any]], None]], dict[str, Any]],
        swap: Callable[[str], dict[str, Any]],
        check: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        say: Callable[[str], None] = print,
        serving: str = TEXT,
        clock: Callable[[], float] = time.monotonic,
        stopping: threading.Event | None = None,
    ) -> None:
        self._train, self._swap, self._check, self._say, self._clock = train, swap, check, say, clock
        self.serving = serving
        self.state = WAITING
        self.error: str | None = None
        self.summary: dict[str, Any] | None = None  # the written version's
        self.swapped: dict[str, Any] | None = None  # POST /model's answer
        self.answer: dict[str, Any] | None = None  # the check's
        self.seconds: float | None = None  # from start to the end of the swap
        self._stop = stopping if stopping is not None else threading.Event()
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Runs the job in a daemon thread (the caller serves meanwhile)."""
        self._thread = threading.Thread(target=self.run, name="rayrec-background-swap", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Asks the job to stop: no step starts after this (the caller ends the training's Ray job)."""
        self._stop.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Waits for the job to end; True if it has."""
        return self._ended.wait(timeout_s)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def run(self) -> None:
        """The steps, in this thread; never raises (a failure is the state `failed`, said in one line)."""
        t0 = self._clock()
        try:
            self._enter(TRAINING)
            self.summary = self._train(lambda entry: None if self._stop.is_set() else self._say(progress_line(entry)))
            version = str(self.summary["version"])
            self._say(f"rayrec: model {version} ({self.summary.get('kind')}, {self.summary.get('dim')}-d) written "
                      f"to {self.summary.get('path')} in {self._clock() - t0:.0f} s; swapping to it live (POST /model)")
            self._enter(SWAPPING)
            self.swapped = self._swap(version)
            self.seconds = self._clock() - t0
            self._say(f"rayrec: swapped to model {self.swapped.get('model_version', version)} (from "
                      f"{self.swapped.get('previous')}) in {float(self.swapped.get('seconds', 0)):.1f} s: "
                      f"{self.swapped.get('users')} users and {self.swapped.get('items')} items moved, "
                      f"{self.seconds:.0f} s after the start; later starts serve it")
            self.serving = version
            if self._check is not None:
                self._enter(CHECKING)
                self.answer = self._check(self.summary)
                self._say(f"rayrec: /recommend answered from model {self.answer.get('model_version')} "
                          f"(user model {self.answer.get('user_model')})")
            self._end(DONE)
        except Exception as exc:  # the service keeps serving; the reason goes to the output
            if self._stop.is_set():
                self._end(STOPPED)
                return
            self.error = f"{type(exc).__name__}: {exc}"
            self._say(f"rayrec: the background {self.state} failed ({self.error}); still serving {self.serving}")
            self._end(FAILED)

    def _enter(self, state: str) -> None:
        if self._stop.is_set():
            raise _Stopped()
        self.state = state

    def _end(self, state: str) -> None:
        self.state = state
        self._ended.set()


def sequential_swap(
    dataset: Dataset, job: SequentialJob, client: ServiceClient, say: Callable[[str], None] = print
) -> BackgroundSwap:
    """The background job of `rayrec serve` on a fresh models root (not started): the dataset's sequential
    space trained as a Ray Train job (rayrec.learning.sequential_job), the client's service swapped to it,
    and a /recommend checked to come from it, for the last user with a positive event (one the service knows
    from its history, whom the sequential model then computes)."""
    from rayrec.learning import sequential_job

    user = next((e.user for e in reversed(dataset.events) if e.positive), dataset.events[-1].user)
    stopping = threading.Event()
    return BackgroundSwap(lambda on_progress: sequential_job.train(dataset, job, on_progress, stopping),
                          client.swap, lambda summary: client.check(summary, user), say, stopping=stopping)


class _Stopped(Exception):
    """stop() came before the next step."""


class ServiceClient:
    """The running service's own HTTP API, as `rayrec serve` calls it (the write key where one is set)."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = C.BACKGROUND_SWAP_TIMEOUT_S) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import requests

        resp = requests.post(self.url + path, json=body, headers=self.headers, timeout=self.timeout_s)
        if resp.status_code != 200:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise RuntimeError(f"POST {path} answered {resp.status_code}: {detail}")
        return dict(resp.json())

    def swap(self, version: str) -> dict[str, Any]:
        """POST /model: the live swap to that version of the service's models root."""
        return self._post("/model", {"model": version})

    def check(self, summary: dict[str, Any], user_id: str) -> dict[str, Any]:
        """A /recommend for user_id, which must come from the summary's version (and its user model)."""
        answer = self._post("/recommend", {"user_id": user_id, "k": 10})
        if answer.get("model_version") != summary["version"]:
            raise RuntimeError(f"/recommend answered from model {answer.get('model_version')}, "
                               f"not {summary['version']}")
        if summary.get("kind") == "sequential" and answer.get("user_model") != "sequential":
            raise RuntimeError(f"user {user_id!r} was moved by user model {answer.get('user_model')}, "
                               "not the sequential one")
        return answer
