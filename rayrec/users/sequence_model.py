"""The sequential user model's forward pass in numpy, for serving (no torch in the user actors).

It computes what rayrec.learning.sequential.SequentialModel.users computes for
one user: the last slot's output over their last `length` events. Padding is
never attended, so only the real items are run, at the last positions.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-5  # torch.nn.LayerNorm's default
# Event types the model tells apart (0 is padding): what pulls toward an item, a click, what pushes away.
EVENT_TYPES = {"history": 1, "like": 1, "purchase": 1, "click": 2, "skip": 3, "dislike": 3}
POSITIVE = 1
CLICK = 2
N_TYPES = 4


def _norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x @ weight.T + bias over the last axis, as one matrix product for every leading index."""
    return (x.reshape(-1, x.shape[-1]) @ weight.T + bias).reshape(*x.shape[:-1], weight.shape[0])


class SequenceModel:
    """Weights of a trained SequentialModel (its state_dict as float32 numpy arrays, by name)."""

    def __init__(self, weights: dict[str, np.ndarray], blocks: int) -> None:
        self.w = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        self.blocks = blocks
        self.length, self.dim = self.w["positions.weight"].shape
        self.n_items = self.w["outputs.weight"].shape[0]

    @property
    def item_vectors(self) -> np.ndarray:
        """(n_items, dim): the output item vectors users are scored against."""
        return self.w["outputs.weight"]

    def user_vector(self, events: list[tuple[int, int]]) -> np.ndarray | None:
        """The user's vector (dim,) from their (item row, event type) events, oldest first; rows the model
        does not know are left out (None if no event is left)."""
        return self.user_vectors([events])[0]

    def user_vectors(self, histories: list[list[tuple[int, int]]]) -> list[np.ndarray | None]:
        """user_vector of each history, in one batched pass: each history's last `length` known events at the
        last positions, left-padded; padding is never attended (as in training), so each row equals its own
        unpadded pass."""
        lasts = [[(j, t) for j, t in events if 0 <= j < self.n_items][-self.length :] for events in histories]
        live = [n for n, last in enumerate(lasts) if last]
        out: list[np.ndarray | None] = [None] * len(histories)
        if not live:
            return out
        w, k = self.w, max(len(lasts[n]) for n in live)
        rows = np.zeros((len(live), k), np.int64)  # input row 0: padding
        types = np.zeros((len(live), k), np.int64)
        for b, n in enumerate(live):
            last = lasts[n]
            rows[b, k - len(last) :] = [j + 1 for j, _ in last]
            types[b, k - len(last) :] = [t for _, t in last]
        real = rows > 0
        x = (w["inputs.weight"][rows] * np.float32(np.sqrt(self.dim)) + w["types.weight"][types]
             + w["positions.weight"][-k:]) * real[..., None]
        allowed = (np.tril(np.ones((k, k), dtype=bool))[None] & real[:, None, :]) | np.eye(k, dtype=bool)[None]
        for b in range(self.blocks):
            p = f"blocks.{b}."
            if b == self.blocks - 1:  # only the last slot's output is the user's: the rest only give keys, values
                allowed = allowed[:, -1:]
            q, kk, v = np.split(_linear(_norm(x, w[p + "norm1.weight"], w[p + "norm1.bias"]), w[p + "qkv.weight"],
                                        w[p + "qkv.bias"]), 3, axis=-1)
            q = q[:, -allowed.shape[1] :]
            scores = np.where(allowed, q @ kk.transpose(0, 2, 1) / np.float32(np.sqrt(self.dim)), -np.inf)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attention = scores / scores.sum(axis=-1, keepdims=True)
            x = x[:, -allowed.shape[1] :] + _linear(attention @ v, w[p + "out.weight"], w[p + "out.bias"])
            h = np.maximum(_linear(_norm(x, w[p + "norm2.weight"], w[p + "norm2.bias"]), w[p + "up.weight"],
                                   w[p + "up.bias"]), 0)
            x = (x + _linear(h, w[p + "down.weight"], w[p + "down.bias"])) * real[:, -x.shape[1] :, None]
        last_out = _norm(x[:, -1], w["norm.weight"], w["norm.bias"]).astype(np.float32)
        for b, n in enumerate(live):
            out[n] = last_out[b]
        return out
