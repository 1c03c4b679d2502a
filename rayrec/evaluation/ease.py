"""EASE with recency decay: a closed-form item-item model over the history's interactions, as a replay policy.

EASE (Steck, "Embarrassingly Shallow Autoencoders", WWW 2019) learns item-item
weights B = argmin ||X - XB||^2 + lambda ||B||^2 with diag(B) = 0, in closed
form: P = (X^T X + lambda I)^-1, B_ij = -P_ij / P_jj. A user's scores are
their row times B. With recency decay the row is not a bag: before each new
positive it is multiplied by `decay`, so the latest events weigh the most
(decay 1 is plain EASE). A positive counts 1 in the rows, a click (MovieLens:
a rating of 3, watched but not liked) `click` (0 leaves clicks out), and what
pushes away (dislike, skip) nothing: what a user watched says what they would
watch next. lambda, decay and click are chosen on the history's last slice
only (tune), never on the replayed events.
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
CLICKS = (0.0, 0.25, 0.5, 1.0)  # a click's weight against a positive's 1; the middle one is where lambda is chosen
VALIDATION_SHARE = 0.1  # the history's last 10% (by time) is replayed to choose lambda and decay
# ... but at most this many events: ~10,000 scored ones tell the candidates apart (HR@10's standard error
# ~0.003), and on a large log every further one only adds to each replay and each epoch's check.
VALIDATION_MAX_EVENTS = 20_000


def validation_cut(n: int, share: float = VALIDATION_SHARE) -> int:
    """Where the validation slice of n events (in time order) starts: their last `share`, at most
    VALIDATION_MAX_EVENTS of them."""
    return n - min(int(round(n * share)), VALIDATION_MAX_EVENTS)


def validation_capped(n: int, share: float = VALIDATION_SHARE) -> bool:
    """Whether the validation slice of n events is cut to VALIDATION_MAX_EVENTS. The events before it are then
    nearly all of them (97.5% of 800,000), so a model chosen on it is kept as trained rather than trained
    again on every event (which would cost as much again for a few percent more data)."""
    return int(round(n * share)) > VALIDATION_MAX_EVENTS


def event_weight(event: Event, click: float) -> float:
    """An event's weight in a user's row: 1 for a positive, `click` for a click, 0 for what pushes away."""
    if event.positive:
        return 1.0
    return click if event.feedback == "click" else 0.0


def gram(history: list[Event], index: dict[str, int], click: float = 0.0) -> np.ndarray:
    """X^T X (items x items, float64) of the user x item matrix X of history's events, each entry its largest
    event_weight (1 for positives, `click` for clicks). In float32 where that holds every sum exactly (the
    CLICKS weights are multiples of 1/16, and a sum is at most the number of users), twice as fast."""
    if not 0 <= click <= 1:
        raise ValueError(f"click must be in [0, 1], got {click}")
    users: dict[str, int] = {}
    rows, cols, values = [], [], []
    for e in history:
        w = event_weight(e, click)
        if w > 0:
            rows.append(users.setdefault(e.user, len(users)))
            cols.append(index[e.item])
            values.append(w)
    exact32 = click * 16 == int(click * 16) and len(users) * 16 < 2**24
    x = np.zeros((len(users), len(index)), dtype=np.float32 if exact32 else np.float64)
    np.maximum.at(x, (np.asarray(rows, np.int64), np.asarray(cols, np.int64)), np.asarray(values, x.dtype))
    return (x.T @ x).astype(np.float64)


def ease_weights(
    history: list[Event], index: dict[str, int], lam: float, click: float = 0.0, gram_matrix: np.ndarray | None = None
) -> np.ndarray:
    """B (items x items, float32, zero diagonal) from the user x item matrix of history's events, each
    entry its largest event_weight (1 for positives, `click` for clicks); gram_matrix: gram() of the same, if
    already computed (it does not depend on lambda)."""
    if lam <= 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    g = (gram(history, index, click) if gram_matrix is None else gram_matrix).copy()
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


class EaseDecay:
    """The replay policy: per user, scores = (decayed row of their events so far) @ B, kept up to date one
    event at a time (scores <- decay * scores + event_weight * B[item]; events of weight 0 are left out).
    A user with no such event yet gets None."""

    name = "ease"

    def __init__(
        self, index: dict[str, int], history: list[Event], weights: np.ndarray, decay: float, click: float = 0.0
    ) -> None:
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.index = index
        self.weights = weights
        self.decay = decay
        self.click = click
        self.scores: dict[str, np.ndarray] = {}
        self._start(history)

    def _start(self, history: list[Event]) -> None:
        """Every user's scores after history at once: their decayed row (each counted event weighs its
        event_weight times decay per later counted one) times B, one matrix product for all users."""
        users: dict[str, int] = {}
        rows, cols, weights = [], [], []
        for e in history:
            w = event_weight(e, self.click)
            if w > 0:
                rows.append(users.setdefault(e.user, len(users)))
                cols.append(self.index[e.item])
                weights.append(w)
        if not users:
            return
        row = np.asarray(rows, np.int64)
        later = np.bincount(row, minlength=len(users))[row] - 1  # counted events of the user after this one ...
        order = np.argsort(row, kind="stable")
        rank = np.empty(len(row), np.int64)
        rank[order] = np.arange(len(row)) - np.searchsorted(row[order], row[order])  # ... minus its rank among them
        decayed = np.zeros((len(users), len(self.index)), np.float64)
        np.add.at(decayed, (row, np.asarray(cols, np.int64)),
                  np.asarray(weights, np.float64) * self.decay ** (later - rank).astype(np.float64))
        scores = (decayed.astype(np.float32) @ self.weights).astype(np.float32)
        for user, r in users.items():
            self.scores[user] = scores[r]

    def recommend(self, user: str, k: int, seen: set[int]) -> list[int] | None:
        scores = self.scores.get(user)
        return None if scores is None else top_k(scores, k, seen)

    def observe(self, event: Event) -> None:
        w = event_weight(event, self.click)
        if w <= 0:
            return
        row = self.weights[self.index[event.item]]
        scores = self.scores.get(event.user)
        if scores is None:
            self.scores[event.user] = w * row
        else:
            scores *= self.decay
            scores += w * row


@dataclass(frozen=True, slots=True)
class EaseChoice:
    """The lambda, decay and click weight chosen on the validation slice, with every candidate's HR@10 there."""

    lam: float
    decay: float
    validation_hr10: float
    grid: list[dict[str, float]]
    click: float = 0.0

    def weights(self, history: list[Event], index: dict[str, int]) -> np.ndarray:
        """B fitted on history with this choice."""
        return ease_weights(history, index, self.lam, self.click)

    def policy(self, history: list[Event], index: dict[str, int]) -> EaseDecay:
        """The EaseDecay replay policy fitted on history with this choice."""
        return EaseDecay(index, history, self.weights(history, index), self.decay, self.click)


def tune(
    history: list[Event],
    index: dict[str, int],
    lambdas: tuple[float, ...] = LAMBDAS,
    decays: tuple[float, ...] = DECAYS,
    validation_share: float = VALIDATION_SHARE,
    clicks: tuple[float, ...] = CLICKS,
) -> EaseChoice:
    """Replays the history's last validation_share (at most VALIDATION_MAX_EVENTS; fitted on the rest): every lambda
    at the middle decay and click weight, then every decay at the best lambda, then every click weight at both
    (coordinate search: len(lambdas) + len(decays) + len(clicks) - 2 replays, not their product). The best HR@10
    wins (ties: the earlier candidate). The replayed part of an evaluation is never read."""
    cut = validation_cut(len(history), validation_share)
    fit, validation = history[:cut], history[cut:]
    grid: list[dict[str, float]] = []
    weights: dict[tuple[float, float], np.ndarray] = {}
    grams: dict[float, np.ndarray] = {}  # per click weight: every lambda shares it

    def run(lam: float, decay: float, click: float) -> None:
        if (lam, click) not in weights:
            if click not in grams:
                grams[click] = gram(fit, index, click)
            weights[lam, click] = ease_weights(fit, index, lam, click, grams[click])
        scored, _ = run_in_order(fit, validation, index, [EaseDecay(index, fit, weights[lam, click], decay, click)])
        grid.append({"lambda": lam, "decay": decay, "click": click,
                     "hr@10": round(hit_rate(scored["ease"].ranks, 10), 5)})

    def best() -> dict[str, float]:
        return max(grid, key=lambda g: g["hr@10"])  # max keeps the first of equals

    decay, click = decays[len(decays) // 2], clicks[len(clicks) // 2]
    for lam in lambdas:
        run(lam, decay, click)
    lam = best()["lambda"]
    for other in decays:
        if other != decay:
            run(lam, other, click)
    decay = best()["decay"]
    for other in clicks:
        if other != click:
            run(lam, decay, other)
    top = best()
    return EaseChoice(top["lambda"], top["decay"], top["hr@10"], grid, top["click"])
