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
        """user_vector of each history, in one batched pass (see outputs)."""
        lasts = [[(j, t) for j, t in events if 0 <= j < self.n_items][-self.length :] for events in histories]
        k = max([len(last) for last in lasts] + [1])
        rows = np.full((len(histories), k), -1, np.int64)
        types = np.zeros((len(histories), k), np.int64)
        for b, last in enumerate(lasts):
            if last:
                rows[b, k - len(last) :] = [j for j, _ in last]
                types[b, k - len(last) :] = [t for _, t in last]
        out, live = self.outputs(rows, types)
        return [out[b] if live[b] else None for b in range(len(histories))]

    def outputs(self, rows: np.ndarray, types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The last slot's output of each row of events: rows (B, k) item rows, -1 where there is no event,
        types (B, k) their event types; each row's events are its last `length` that are not -1 (rows the
        model does not know count as none). Padding is never attended (as in training), so each row equals
        its own unpadded pass. Returns ((B, dim) float32, (B,) whether the row had an event; zeros where not)."""
        rows = np.asarray(rows, np.int64)
        rows = np.where((rows >= 0) & (rows < self.n_items), rows, -1)
        real = rows >= 0
        # Each row's real events moved to its end, in order (a stable sort puts the padding first).
        order = np.argsort(real, axis=1, kind="stable")
        rows, types, real = (np.take_along_axis(a, order, axis=1) for a in (rows, np.asarray(types), real))
        k = max(1, min(self.length, int(real.sum(axis=1).max(initial=0))))
        rows, types, real = rows[:, -k:], types[:, -k:], real[:, -k:]
        live = real.any(axis=1)
        w = self.w
        x = (w["inputs.weight"][rows + 1] * np.float32(np.sqrt(self.dim)) + w["types.weight"][types * real]
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
        return np.where(live[:, None], last_out, 0).astype(np.float32), live
