"""`rayrec train` as a Ray Train job: the two-tower loop on N TorchTrainer workers (DDP when N > 1)."""

from __future__ import annotations

import json
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from rayrec.evaluation.data import Event
from rayrec.learning.examples import make_examples
from rayrec.learning.model import TrainParams
from rayrec.learning.spaces import Space

STATE = "two_tower.safetensors"
POLL_S = 0.5  # how often the driver prints the epochs rank 0 has reported


class EpochLog:
    """Progress entries (rank 0's per-epoch metrics), kept for the driver to print (a 0-CPU actor: workers' own
    logs stay off)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def add(self, stats: dict[str, Any]) -> None:
        self.epochs.append(stats)

    def since(self, n: int) -> list[dict[str, Any]]:
        return self.epochs[n:]


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker: trains, reports per-epoch metrics, rank 0 reports the weights."""
    import os

    import ray.train
    import ray.train.torch
    import torch
    from safetensors.torch import save_file

    from rayrec.learning.fit import fit, unwrap
    from rayrec.learning.model import TwoTower

    torch.set_num_threads(config["threads"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    params: TrainParams = config["params"]
    examples = config["examples"]
    torch.manual_seed(params.seed)
    model = ray.train.torch.prepare_model(TwoTower(config["text"], examples.has_history, params))
    device = ray.train.torch.get_device()
    validate: Callable[[np.ndarray], dict[str, Any]] | None = config["validate"]

    def on_epoch(stats: dict[str, Any]) -> None:
        if validate is not None and rank == 0:
            stats["validation"] = validate(unwrap(model).item_table())
        if rank == 0 and config["log"] is not None:
            config["log"].add.remote(dict(stats))
        if stats["epoch"] < params.epochs:
            ray.train.report(stats)

    history = fit(model, examples, params, rank, world, on_epoch, device)
    if rank == 0:
        with tempfile.TemporaryDirectory() as folder:
            state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
            save_file(state, os.path.join(folder, STATE))
            ray.train.report(
                {**history[-1], "history": history}, checkpoint=ray.train.Checkpoint.from_directory(folder)
            )
    else:
        ray.train.report({**history[-1], "history": history})


class TrainingStopped(RuntimeError):
    """The driver stopped waiting for a training run (its run ends with the driver's Ray)."""


def fit_with_progress(
    trainer: Any, log: Any, on_epoch: Callable[[dict[str, Any]], None], stop: threading.Event | None = None
) -> Any:
    """trainer.fit() in a thread, while this one hands each entry the workers add to log (an EpochLog actor,
    killed at the end) to on_epoch, in order; raises TrainingStopped within POLL_S once stop is set (so that
    no call reaches Ray from here after the caller shuts it down)."""
    import ray

    done: list[Any] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(trainer.fit())
        except BaseException as exc:  # re-raised below, in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="rayrec-train-fit", daemon=True)
    thread.start()
    shown = 0
    while True:
        if stop is not None and stop.is_set():
            raise TrainingStopped("the training run was stopped")
        finished = not thread.is_alive()
        for stats in ray.get(log.since.remote(shown)):
            on_epoch(stats)
            shown += 1
        if finished:
            break
        thread.join(POLL_S)
    ray.kill(log)
    if failed:
        raise failed[0]
    return done[0]


def _print_epoch(stats: dict[str, Any]) -> None:
    print(json.dumps(stats), file=sys.stderr, flush=True)


def train(
    events: list[Event], index: dict[str, int], text: np.ndarray, params: TrainParams, workers: int = 1,
    cpus_per_worker: float = 1.0, use_gpu: bool = False, storage: str | None = None,
    validate: Callable[[np.ndarray], dict[str, Any]] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] = _print_epoch,
) -> Space:
    """Trains the two-tower model with a TorchTrainer on the Ray this process is connected to.

    Args:
        workers: Ray Train workers (each takes 1/workers of every epoch's examples).
        validate: item vectors -> metrics, run after each epoch (reported, and handed to on_epoch).
        on_epoch: called in this process with each epoch's metrics (default: print a JSON line to stderr).
        storage: where Ray Train keeps its run folder (default: a temporary one).
    """
    import ray.train
    from ray.train.torch import TorchTrainer
    from safetensors.torch import load_file

    from rayrec.learning.model import TwoTower
    from rayrec.learning.spaces import from_model

    examples = make_examples(events, index, params.context)
    log = ray.remote(num_cpus=0)(EpochLog).remote()
    with tempfile.TemporaryDirectory(prefix="rayrec-train-") as scratch:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"params": params, "examples": examples, "text": np.asarray(text, np.float32),
                               "validate": validate, "threads": max(1, int(cpus_per_worker)), "log": log},
            scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                                   resources_per_worker={"CPU": cpus_per_worker}),
            run_config=ray.train.RunConfig(name="rayrec-two-tower", storage_path=storage or scratch),
        )
        result = fit_with_progress(trainer, log, on_epoch)
        if result.checkpoint is None:
            raise RuntimeError(f"the training job ended without weights: {result.error}")
        with result.checkpoint.as_directory() as folder:
            state = load_file(f"{folder}/{STATE}")
    model = TwoTower(text, examples.has_history, params)
    model.load_state_dict(state)
    return from_model(model, examples.has_history, list(result.metrics.get("history", [])))
