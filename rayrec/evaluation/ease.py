"""EASE with recency decay: a closed-form item-item model over the history's positives, as a replay policy.

EASE (Steck, "Embarrassingly Shallow Autoencoders", WWW 2019) learns item-item
weights B = argmin ||X - XB||^2 + lambda ||B||^2 with diag(B) = 0, in closed
form: P = (X^T X + lambda I)^-1, B_ij = -P_ij / P_jj. A user's scores are
their row times B. With recency decay the row is not a bag: before each new
positive it is multiplied by `decay`, so the latest events weigh the most
(decay 1 is plain EASE). lambda and decay are chosen on the history's last
slice only (tune), never on the replayed events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rayrec.evaluation.baselines import top_k
from rayrec.evaluation.data import Event
from rayrec.evaluation.metrics import hit_rate
from rayrec.evaluation.replay import run_in_order

LAMBDAS = (100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0)
DECAYS = (1.0, 0.95, 0.9, 0.8, 0.7)  # the middle one is where lambda is chosen
VALIDATION_SHARE = 0.1  # the history's last 10% (by time) is replayed to choose lambda and decay


def ease_weights(history: list[Event], index: dict[str, int], lam: float) -> np.ndarray:
    """B (items x items, float32, zero diagonal) from the binary user x item matrix of history's positives."""
    if lam <= 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    users: dict[str, int] = {}
    rows, cols = [], []
    for e in history:
        if e.positive:
            rows.append(users.setdefault(e.user, len(users)))
            cols.append(index[e.item])
    x = np.zeros((len(users), len(index)), dtype=np.float64)
    x[rows, cols] = 1.0
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


class EaseDecay:
    """The replay policy: per user, scores = (decayed row of their positives so far) @ B, kept up to date
    one positive at a time (scores <- decay * scores + B[item]). A user with no positive yet gets None."""

    name = "ease"

    def __init__(self, index: dict[str, int], history: list[Event], weights: np.ndarray, decay: float) -> None:
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.index = index
        self.weights = weights
        self.decay = decay
        self.scores: dict[str, np.ndarray] = {}
        for e in history:
            self.observe(e)

    def recommend(self, user: str, k: int, seen: set[int]) -> list[int] | None:
        scores = self.scores.get(user)
        return None if scores is None else top_k(scores, k, seen)

    def observe(self, event: Event) -> None:
        if not event.positive:
            return
        row = self.weights[self.index[event.item]]
        scores = self.scores.get(event.user)
        if scores is None:
            self.scores[event.user] = row.copy()
        else:
            scores *= self.decay
            scores += row


@dataclass(frozen=True, slots=True)
class EaseChoice:
    """The lambda and decay chosen on the validation slice, with every candidate's validation HR@10."""

    lam: float
    decay: float
    validation_hr10: float
    grid: list[dict[str, float]]


def tune(
    history: list[Event],
    index: dict[str, int],
    lambdas: tuple[float, ...] = LAMBDAS,
    decays: tuple[float, ...] = DECAYS,
    validation_share: float = VALIDATION_SHARE,
) -> EaseChoice:
    """Replays the history's last validation_share (fitted on the rest): every lambda at the middle decay,
    then every decay at the best lambda (coordinate search: len(lambdas) + len(decays) - 1 replays, not their
    product). The best HR@10 wins (ties: the earlier candidate). The replayed part of an evaluation is
    never read."""
    cut = int(round(len(history) * (1 - validation_share)))
    fit, validation = history[:cut], history[cut:]
    grid: list[dict[str, float]] = []
    weights: dict[float, np.ndarray] = {}

    def run(lam: float, decay: float) -> None:
        if lam not in weights:
            weights[lam] = ease_weights(fit, index, lam)
        scored, _ = run_in_order(fit, validation, index, [EaseDecay(index, fit, weights[lam], decay)])
        grid.append({"lambda": lam, "decay": decay, "hr@10": round(hit_rate(scored["ease"].ranks, 10), 5)})

    middle = decays[len(decays) // 2]
    for lam in lambdas:
        run(lam, middle)
    lam = max(grid, key=lambda g: g["hr@10"])["lambda"]  # max keeps the first of equals
    for decay in decays:
        if decay != middle:
            run(lam, decay)
    best = max(grid, key=lambda g: g["hr@10"])
    return EaseChoice(best["lambda"], best["decay"], best["hr@10"], grid)
