"""Learned item spaces, each as item vectors plus a linear text path: the two-tower model, and the SVD baseline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
) -> Space:
    """Trains the two-tower model in this process (the loop Ray Train runs on each worker)."""
    import torch

    from rayrec.learning.fit import fit
    from rayrec.learning.model import TwoTower

    examples = make_examples(events, index, params.context)
    torch.manual_seed(params.seed)
    model = TwoTower(text, examples.has_history, params)
    history = fit(model, examples, params, on_epoch=on_epoch)
    return from_model(model, examples.has_history, history)


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
