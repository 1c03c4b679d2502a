"""Item spaces for an evaluation: the text encoder's embeddings, or vectors learned from the history.

`two-tower`: rayrec.learning (the model `rayrec train` trains), trained on the history only.

`svd`: a truncated SVD of the history's user x item matrix of positive
interactions, each item's column damped by its popularity (count ** -alpha),
so the space is not just a popularity axis. Items the history never saw get
their text embedding mapped into the space by a ridge regression fitted on
the items it did see (a linear text tower). Learned from the history only.
"""

from __future__ import annotations

import numpy as np

from rayrec.evaluation.data import Event

SPACES = ("two-tower", "svd", "text")
SVD_DIM = 64
SVD_ALPHA = 0.5  # popularity damping exponent
RIDGE = 1.0  # regularisation of the text -> space map


def svd_space(
    history: list[Event], index: dict[str, int], text: np.ndarray, dim: int = SVD_DIM, alpha: float = SVD_ALPHA
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item vectors (n_items, d) learned from the history, the text map W (d, e), and which came from text alone.

    Args:
        history: the events to learn from (positives only are used).
        index: item id to row.
        text: (n_items, e) text embeddings, for items without positive history.
        dim: the space's dimension (at most the matrix rank).
        alpha: popularity damping exponent.
    """
    users = sorted({e.user for e in history if e.positive})
    row = {u: r for r, u in enumerate(users)}
    matrix = np.zeros((len(users), len(index)), dtype=np.float64)
    for e in history:
        if e.positive:
            matrix[row[e.user], index[e.item]] = 1.0
    counts = matrix.sum(axis=0)
    seen = counts > 0
    if seen.sum() < 2:
        raise ValueError("the history has fewer than 2 items with positive interactions: nothing to learn a space from")
    damped = matrix[:, seen] / counts[seen] ** alpha
    _, s, vt = np.linalg.svd(damped, full_matrices=False)
    d = min(dim, int((s > 1e-9).sum()))
    learned = (vt[:d].T * s[:d]).astype(np.float64)  # (n_seen, d)
    out = np.zeros((len(index), d), dtype=np.float64)
    out[seen] = learned
    cold = ~seen
    # ridge regression text -> learned, on the seen items: places the unseen ones (and any new item later)
    x = text[seen].astype(np.float64)
    w = np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ learned)
    if cold.any():
        out[cold] = text[cold].astype(np.float64) @ w
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out = np.where(norms > 1e-12, out / np.maximum(norms, 1e-12), 0.0)
    # A zero row (an item with no signal at all) gets a fixed tiny direction so it stays indexable.
    out[(norms[:, 0] <= 1e-12)] = np.eye(1, d)[0]
    return out.astype(np.float32), w.T.astype(np.float32), cold
