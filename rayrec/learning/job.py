"""`rayrec train` as a Ray Train job: the two-tower loop on N TorchTrainer workers (DDP when N > 1)."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from rayrec.evaluation.data import Event
from rayrec.learning.examples import make_examples
from rayrec.learning.model import TrainParams
from rayrec.learning.spaces import Space

STATE = "two_tower.safetensors"


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
        if validate is not None:
            stats["validation"] = validate(unwrap(model).item_table())
        if rank == 0:
            print(json.dumps(stats), file=sys.stderr, flush=True)
        if stats["epoch"] < params.epochs:
            ray.train.report(stats)

    history = fit(model, examples, params, rank, world, on_epoch, device)
    if rank == 0:
        with tempfile.TemporaryDirectory() as folder:
            state = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
            save_file(state, os.path.join(folder, STATE))
            ray.train.report({**history[-1], "history": history}, checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        ray.train.report({**history[-1], "history": history})


def train(
    events: list[Event], index: dict[str, int], text: np.ndarray, params: TrainParams, workers: int = 1,
    cpus_per_worker: float = 1.0, use_gpu: bool = False, storage: str | None = None,
    validate: Callable[[np.ndarray], dict[str, Any]] | None = None,
) -> Space:
    """Trains the two-tower model with a TorchTrainer on the Ray this process is connected to.

    Args:
        workers: Ray Train workers (each takes 1/workers of every epoch's examples).
        validate: item vectors -> metrics, run after each epoch (printed and reported).
        storage: where Ray Train keeps its run folder (default: a temporary one).
    """
    import ray.train
    from ray.train.torch import TorchTrainer
    from safetensors.torch import load_file

    from rayrec.learning.model import TwoTower
    from rayrec.learning.spaces import from_model

    examples = make_examples(events, index, params.context)
    with tempfile.TemporaryDirectory(prefix="rayrec-train-") as scratch:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"params": params, "examples": examples, "text": np.asarray(text, np.float32),
                               "validate": validate, "threads": max(1, int(cpus_per_worker))},
            scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                                   resources_per_worker={"CPU": cpus_per_worker}),
            run_config=ray.train.RunConfig(name="rayrec-two-tower", storage_path=storage or scratch),
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"the training job ended without weights: {result.error}")
        with result.checkpoint.as_directory() as folder:
            state = load_file(f"{folder}/{STATE}")
    model = TwoTower(text, examples.has_history, params)
    model.load_state_dict(state)
    return from_model(model, examples.has_history, list(result.metrics.get("history", [])))
