"""The training loop, without Ray: `rayrec train` runs it on each Ray Train worker, `rayrec eval` in process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rayrec.learning.early_stop import BestEpoch
from rayrec.learning.examples import Examples
from rayrec.learning.model import TrainParams, TwoTower


def fit(
    model: torch.nn.Module,
    examples: Examples,
    params: TrainParams,
    rank: int = 0,
    world: int = 1,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """Trains `model` (a TwoTower, or one wrapped by DistributedDataParallel) in place.

    Each of `world` workers takes every world-th example of one shared shuffle per
    epoch, cut to the same number of steps on every worker (DDP needs that).

    Args:
        on_epoch: called with {"epoch", "loss", "seconds", "threads"} after each epoch (it may add to the dict).
            Where it adds {"validation": {"hr@10": ...}}, training stops once params.patience epochs in a
            row did not beat the best one, and the model keeps the best epoch's weights.

    Returns:
        The per-epoch dicts (the last one with "best_epoch" where validation ran).
    """
    torch.manual_seed(params.seed + rank)
    rng = np.random.default_rng(params.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    counts = torch.as_tensor(examples.counts, dtype=torch.float32)
    log_q = torch.log(counts.clamp(min=1.0) / counts.sum()).to(device)
    context = torch.tensor(examples.context)  # copies: Ray hands the worker read-only arrays
    sign = torch.tensor(examples.sign)
    target = torch.tensor(examples.target)
    per_worker = len(examples) // world
    size, steps = epoch_shape(params, per_worker)
    history: list[dict[str, Any]] = []
    best = BestEpoch(params.patience)
    for epoch in range(params.epochs):
        started = time.perf_counter()
        mine = rng.permutation(len(examples))[: per_worker * world][rank::world]
        model.train()
        total, trained = 0.0, 0
        for step in range(steps):
            batch = torch.as_tensor(mine[step * size : (step + 1) * size])
            if len(batch) < 2:  # a softmax over one target teaches nothing
                continue
            loss = model(context[batch].to(device), sign[batch].to(device), target[batch].to(device), log_q)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
            trained += len(batch)
        model.eval()
        stats: dict[str, Any] = {"epoch": epoch + 1, "batch_size": size, "examples": trained,
                                 "loss": round(total / max(1, trained), 4),
                                 "seconds": round(time.perf_counter() - started, 2), "threads": torch.get_num_threads()}
        if on_epoch is not None:
            on_epoch(stats)
        history.append(stats)
        score = (stats.get("validation") or {}).get("hr@10")  # set by on_epoch on the rank that validates
        stop = score is not None and best.update(epoch + 1, score, unwrap(model))
        if _agreed(stop, rank, world, device):
            break
    best.restore(unwrap(model), history)  # the weights of the best validated epoch, not the last
    return history


def epoch_shape(params: TrainParams, examples: int) -> tuple[int, int]:
    """(batch size, steps) of one epoch over this many examples. Up to max_steps * batch_size examples an epoch
    is every example in batches of batch_size; a larger log trains each epoch on a fresh random sample of that
    many, in larger batches (as many as make max_steps steps of the whole log: a step costs less per example
    in a large batch), so an epoch's cost stays fixed and early stopping can act between samples."""
    size = max(params.batch_size, -(-examples // params.max_steps))
    return size, max(1, -(-min(examples, params.max_steps * params.batch_size) // size))


def _agreed(stop: bool, rank: int, world: int, device: torch.device | str) -> bool:
    """Rank 0's stop decision, on every worker (DDP needs the same number of steps everywhere)."""
    import torch.distributed as dist

    if world == 1 or not dist.is_initialized():
        return stop
    flag = torch.tensor([int(stop) if rank == 0 else 0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def unwrap(model: torch.nn.Module) -> TwoTower:
    """The TwoTower inside a DistributedDataParallel wrapper (or the model itself)."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, TwoTower)
    return inner
