"""Learned item spaces, each as item vectors plus a linear text path: the two-tower model, and the SVD baseline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rayrec.evaluation.data import Event
from rayrec.evaluation.spaces import RIDGE
from rayrec.learning.examples import make_examples
from rayrec.learning.model import TrainParams


@dataclass(frozen=True, slots=True)
class Space:
    """Item vectors (n, dim), which came from text alone, and the text path x -> normalise(W x + b)."""

    kind: str
    vectors: np.ndarray
    from_text: np.ndarray
    text_weight: np.ndarray
    text_bias: np.ndarray
    history: list[dict[str, Any]]  # per-epoch metrics (empty for svd)


def two_tower(
    events: list[Event], index: dict[str, int], text: np.ndarray, params: TrainParams,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    validate: Callable[[np.ndarray], dict[str, Any]] | None = None,
) -> Space:
    """Trains the two-tower model in this process (the loop Ray Train runs on each worker).

    validate: item vectors -> metrics with "hr@10", after each epoch: training stops early on it (params.patience)
        and keeps the best epoch's weights (rayrec.learning.fit)."""
    import torch

    from rayrec.learning.fit import fit
    from rayrec.learning.model import TwoTower

    examples = make_examples(events, index, params.context)
    torch.manual_seed(params.seed)
    model = TwoTower(text, examples.has_history, params)

    def each_epoch(stats: dict[str, Any]) -> None:
        if validate is not None:
            stats["validation"] = validate(model.item_table())
        if on_epoch is not None:
            on_epoch(stats)

    history = fit(model, examples, params, on_epoch=each_epoch)
    return from_model(model, examples.has_history, history)


def validated_two_tower(
    events: list[Event], index: dict[str, int], text: np.ndarray, params: TrainParams, held_share: float,
    log: Callable[[str], None] = lambda m: None,
) -> tuple[Space, Space]:
    """The two-tower trained on the events before their last held_share (by time; at most
    rayrec.evaluation.ease.VALIDATION_MAX_EVENTS events), stopped early on that held rest
    (the pooled user's next-item HR@10), then trained again on every event for that best number of epochs
    (unless the held slice was capped: then the first training is kept for both).

    Returns:
        (the space trained on the first part, the space trained on every event).
    """
    from rayrec.evaluation.ease import validation_capped, validation_cut
    from rayrec.learning.held_out import HeldOut

    cut = validation_cut(len(events), held_share)
    fit, held = events[:cut], events[cut:]
    validate = HeldOut(fit, held, index, params.recency, params.context).hit_rate
    first = two_tower(fit, index, text, params, on_epoch=lambda s: log(_epoch_line(s)), validate=validate)
    epochs = int(first.history[-1].get("best_epoch", len(first.history))) if first.history else params.epochs
    if validation_capped(len(events), held_share):
        log(f"two-tower: {epochs} epochs chosen on the last {len(held)} events; kept as trained on the "
            f"{len(fit)} before them")
        return first, first
    log(f"two-tower: {epochs} epochs chosen on the last {len(held)} events; training again on every event")
    every = two_tower(events, index, text, replace(params, epochs=epochs, patience=0),
                      on_epoch=lambda s: log(_epoch_line(s)))
    return first, every


def _epoch_line(stats: dict[str, Any]) -> str:
    hr = (stats.get("validation") or {}).get("hr@10")
    return f"two-tower epoch {stats['epoch']}: {stats['seconds']:.0f} s" + ("" if hr is None else f", HR@10 {hr:.4f}")


def from_model(model: Any, has_history: np.ndarray, history: list[dict[str, Any]]) -> Space:
    """The Space of a trained TwoTower, with the text path its params.text_map names."""
    vectors, from_text = model.item_table(), ~np.asarray(has_history, bool)
    weight = model.project.weight.detach().cpu().numpy().astype(np.float32)
    bias = model.project.bias.detach().cpu().numpy().astype(np.float32)
    if model.params.text_map == "ridge":
        weight, bias, placed = ridge_placed(model.text.detach().cpu().numpy(), vectors, from_text)
        vectors[from_text] = placed
    return Space("two-tower", vectors, from_text, weight, bias, history)


def ridge_placed(text: np.ndarray, vectors: np.ndarray, cold: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ridge text map fitted on the rows that are not cold (W, b), and the cold rows placed by it (normalised)."""
    weight, bias = ridge_map(text[~cold], vectors[~cold])
    return weight, bias, _normalised(text[cold] @ weight.T + bias)


def ridge_map(x: np.ndarray, y: np.ndarray, alpha: float = RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """The ridge regression y ~ W x + b (b not penalised): W (d, e) and b (d,), float32."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    x_mean, y_mean = x64.mean(axis=0), y64.mean(axis=0)
    xc = x64 - x_mean
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y64 - y_mean))  # (e, d)
    return w.T.astype(np.float32), (y_mean - x_mean @ w).astype(np.float32)


def _normalised(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.maximum(norms, 1e-12)).astype(np.float32)


def svd(events: list[Event], index: dict[str, int], text: np.ndarray, dim: int = 64) -> Space:
    """The SVD baseline (rayrec.evaluation.spaces.svd_space) with its ridge text map."""
    from rayrec.evaluation.spaces import svd_space

    vectors, weight, from_text = svd_space(events, index, text, dim)
    return Space("svd", vectors, from_text, weight, np.zeros(weight.shape[0], np.float32), [])
