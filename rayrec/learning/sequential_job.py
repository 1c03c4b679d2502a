"""`rayrec train --model sequential` as a Ray Train job: one TorchTrainer worker runs
rayrec.learning.command.run_training (the same call and arguments as the command) and writes the version;
its progress lines and epochs reach the driver while it trains."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rayrec.evaluation.data import Dataset
from rayrec.exceptions import InvalidInputError
from rayrec.learning.job import EpochLog, fit_with_progress

if TYPE_CHECKING:
    from rayrec.learning.sequential import SequenceParams


@dataclass(frozen=True, slots=True)
class SequentialJob:
    """Where the version goes and what the one worker may take.

    root: the models root the version is written to (a path the worker's node sees: on one machine, any).
    cpus: the worker's CPU claim (fractional: it shares the cores with the serving actors).
    threads: torch threads of the worker (what it really uses of the cores).
    model_dir: the text encoder's local model directory (default: MiniLM, as the server's).
    sequence: the sequential model's shape and training (default: SequenceParams()).
    validation_share: interactions held out for the reported HR@10 (None: `rayrec train`'s default).
    """

    root: str
    cpus: float = 1.0
    threads: int = 1
    model_dir: str | None = None
    sequence: SequenceParams | None = None
    validation_share: float | None = None

    def __post_init__(self) -> None:
        if not self.cpus > 0 or isinstance(self.threads, bool) or self.threads < 1:
            raise InvalidInputError(f"cpus must be > 0 and threads >= 1, got {self.cpus} and {self.threads}")

    def argv(self) -> list[str]:
        """The `rayrec train` arguments of this job."""
        argv = ["--model", "sequential", "--out", str(self.root)]
        if self.model_dir is not None:
            argv += ["--model-dir", self.model_dir]
        if self.validation_share is not None:
            argv += ["--validation-share", str(self.validation_share)]
        return argv


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on the Ray Train worker: `rayrec train --model sequential`, every line and epoch sent to the log."""
    import ray
    import torch

    from rayrec.cli import train_arguments
    from rayrec.learning.command import run_training

    torch.set_num_threads(config["threads"])
    log = config["log"]
    summary = run_training(
        config["dataset"], train_arguments(config["argv"]), sequence=config["sequence"],
        log=lambda message: log.add.remote({"message": message}),
        on_epoch=lambda stats: log.add.remote({"epoch": dict(stats)}),
    )
    ray.get(log.add.remote({"summary": summary}))  # in the log before the run ends (the driver reads it after)


def train(
    dataset: Dataset, job: SequentialJob, on_progress: Callable[[dict[str, Any]], None],
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Trains the sequential space on the Ray this process is connected to and writes it under job.root.

    Args:
        on_progress: called in this process with each {"message": line} and {"epoch": metrics}, in order.
        stop: once set, this call stops waiting (rayrec.learning.job.TrainingStopped); the run itself ends
            with this driver's Ray (ray.shutdown), as Ray ends every actor a driver owns.

    Returns:
        run_training's summary: the new version's manifest and its "path".

    Raises:
        ray.train.TrainingFailedError (or the Ray error that ended the run) when the training fails.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    log = ray.remote(num_cpus=0)(EpochLog).remote()
    summaries: list[dict[str, Any]] = []

    def relay(entry: dict[str, Any]) -> None:
        if "summary" in entry:
            summaries.append(entry["summary"])
        else:
            on_progress(entry)

    with tempfile.TemporaryDirectory(prefix="rayrec-train-") as scratch:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"dataset": dataset, "argv": job.argv(), "sequence": job.sequence,
                               "threads": job.threads, "log": log},
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": job.cpus}),
            run_config=ray.train.RunConfig(name="rayrec-sequential", storage_path=scratch),
        )
        fit_with_progress(trainer, log, relay, stop)
    if not summaries:
        raise RuntimeError("the training job ended without writing a model version")
    return summaries[0]
