"""The sequential space: item vectors for the index and the model that computes users in it.

Trained from interactions alone (plain classes, no Ray): the sequential model
(rayrec.learning.sequential), EASE with recency decay in low rank
(rayrec.evaluation.ease), and their blend weight, each chosen on the last
VALIDATION_SHARE of the events (by time), then the model trained again on every
event for the best number of epochs. Items no positive interaction names are
ranked by the tower part (by the other parts, placed from their text, without
one): see _user_model and item_vectors.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayrec.evaluation.baselines import Popularity
from rayrec.evaluation.data import Event
from rayrec.evaluation.ease import VALIDATION_SHARE, EaseChoice, tune, validation_capped, validation_cut
from rayrec.evaluation.replay import initial_seen
from rayrec.learning.sequential import NextItemCheck, SequenceParams, train_sequential
from rayrec.learning.spaces import ridge_map
from rayrec.users.sequence_model import SequenceModel
from rayrec.users.sequential_user import SequentialUser, equal_norms, spread

RANK = 64  # of the EASE factors
WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 1.0)  # the sequential part's share, chosen on validation
TOWER_SHARES = (0.0, 0.1, 0.2, 0.3, 0.5)  # the two-tower part's share (when there is one), chosen on validation
# How a cold item (no positive interaction) is ranked, chosen on validation: None, by every part, its model's
# and EASE's vectors placed by a ridge map from its tower vector; or by its tower z-score alone at one of
# these weights (its other parts at the catalog's mean: a z-score of 0 there). See item_vectors.
COLD_WEIGHTS = (0.5, 1.0)
# The tower part's recency decay per counted event, chosen on validation: EASE's own first, then these. The
# tower part placed by the last few events, as the feedback rule's user is, ranks better than one at EASE's
# decay (ml-latest-small's validation slice: 0.1153 at 0.7 against 0.1132; its test replay 0.121 against 0.114).
TOWER_DECAYS = (0.7, 0.5, 0.3)


@dataclass(frozen=True, slots=True)
class SequentialSpace:
    vectors: np.ndarray  # (n_items, d + RANK + 1) item vectors (see rayrec.users.sequential_user)
    user: SequentialUser
    from_text: np.ndarray  # (n_items,) bool: placed from text (no positive interaction)
    info: dict[str, Any]


def low_rank(b: np.ndarray, rank: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """B ~ context @ target^T (each (n, rank), float32) by a randomised SVD (Halko et al. 2011, 2 power steps)."""
    rank = min(rank, b.shape[0])
    rng = np.random.default_rng(seed)
    b64 = b.astype(np.float64)
    q, _ = np.linalg.qr(b64 @ rng.standard_normal((b.shape[1], min(b.shape[0], rank + 10))))
    for _ in range(2):
        q, _ = np.linalg.qr(b64 @ (b64.T @ q))
    u, s, vt = np.linalg.svd(q.T @ b64, full_matrices=False)
    left, root = (q @ u)[:, :rank], np.sqrt(s[:rank])
    return (left * root).astype(np.float32), (vt[:rank].T * root).astype(np.float32)


def _user_model(
    model: Any, events: list[Event], index: dict[str, int], text: np.ndarray, ease: EaseChoice,
    tower: np.ndarray | None, weight: float = 0.5, tower_share: float = 0.0, tower_decay: float | None = None,
) -> tuple[SequentialUser, list[np.ndarray], np.ndarray]:
    """The SequentialUser, the item tables of its parts (see item_vectors) and the cold mask (items no positive
    interaction names) of a trained model on these events (tower: the two-tower item vectors trained on the
    same events, a third part; None for two parts)."""
    sequence = SequenceModel({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}, model.params.blocks)
    context, target = low_rank(ease.weights(events, index), RANK)
    output = sequence.item_vectors.copy()
    cold = np.ones(len(index), dtype=bool)
    cold[[index[e.item] for e in events if e.positive]] = False
    # The model's and EASE's parts of a cold item's vector by a ridge map from what places it: the tower's
    # vector (its text path, trained on interactions) where there is a tower part, else its text.
    tower = None if tower is None else np.asarray(tower, np.float32)
    source = text if tower is None else tower
    if cold.any() and (~cold).sum() > 1:
        for table in (output, target, context):
            w, b = ridge_map(source[~cold], table[~cold])
            table[cold] = source[cold] @ w.T + b
        sequence.w["outputs.weight"] = output
    tables = [output, target] + ([] if tower is None else [tower])
    user = SequentialUser(sequence, dict(index), context, ease.decay, weight, spread(output), spread(target),
                          ease.click, tower, None if tower is None else spread(tower), tower_share, tower_decay)
    return user, tables, cold


def item_vectors(
    tables: list[np.ndarray], cold: np.ndarray, tower_share: float, cold_weight: float | None
) -> np.ndarray:
    """The index's item vectors: each part's item table side by side, brought to equal norms (equal_norms).

    With a tower part and a cold_weight, a cold item has each table's mean (over every item) in the model's
    and EASE's parts, a z-score of 0 there, and its tower vector moved away from the mean tower vector by
    cold_weight / tower_share: its score is its tower z-score at weight cold_weight (the others', the blend
    of their parts' z-scores). cold_weight None: as the tables hold it (_user_model's ridge map).
    """
    tables = [np.asarray(t, np.float64) for t in tables]
    if cold_weight is not None and len(tables) == 3 and tower_share > 0 and cold.any():
        tables = [t.copy() for t in tables]
        for table in tables[:2]:
            table[cold] = table.mean(axis=0)
        mean = tables[2].mean(axis=0)
        tables[2][cold] = mean + (tables[2][cold] - mean) * (cold_weight / tower_share)
    return equal_norms(np.concatenate(tables, axis=1))


class _Blends:
    """Every candidate blend of one SequentialUser's parts in one replay (run_in_order's protocol): each user's
    parts are computed once per scored event and z-scored over the catalog (what SequentialUser.vector's dot
    product ranks by); every candidate's scores are then one row of a (candidates x items) product, and the
    target's rank is counted in each row (ties rank the lower row first, as top_k). The tower part is z-scored
    once per tower decay the candidates name: rows 2, 3, ... of _z's stack."""

    def __init__(self, user: SequentialUser, tables: list[np.ndarray], cold: np.ndarray,
                 grid: list[tuple[float, float, float, float | None]]) -> None:
        self.user, self.tables, self.cold = user, [t.astype(np.float64) for t in tables], cold
        towered = len(tables) == 3
        self.decays = list(dict.fromkeys(d for _, _, d, _ in grid)) if towered else []
        column = np.asarray([self.decays.index(d) if towered else 0 for _, _, d, _ in grid])  # its tower row - 2
        self.shares = np.zeros((len(grid), 2 + len(self.decays)), np.float64)
        for i, (w, t, _, _) in enumerate(grid):
            self.shares[i, :2] = w, 1.0 - w - t
            if towered:
                self.shares[i, 2 + column[i]] = t
        # Candidates that rank a cold item by its tower z-score alone, at their weight (item_vectors).
        self.by_tower = np.asarray([c is not None and towered and t > 0 for _, t, _, c in grid], bool)
        self.cold_weight = np.asarray([c if b else 0.0 for (*_, c), b in zip(grid, self.by_tower)], np.float64)
        self.cold_row = 2 + column[self.by_tower]  # the z-score row each of those ranks cold items by

    def _z(self, events: list[tuple[str, str]]) -> np.ndarray | None:
        parts = self.user.parts(events)
        if parts is None:
            return None
        vectors = [part for part, _, _ in parts[:2]]
        if self.decays:
            rows, types = self.user.encode(events)
            vectors += [self.user.tower_part(rows, types, d)[0] for d in self.decays]
        tables = self.tables[:2] + [self.tables[-1]] * len(self.decays)  # the tower's, once per decay (if any)
        z = []
        for part, table in zip(vectors, tables, strict=True):
            s = table @ part
            sd = float(s.std())
            z.append((s - s.mean()) / sd if sd > 1e-12 else np.zeros_like(s))
        return np.stack(z)

    def hit_rates(
        self, fit: list[Event], held: list[Event], index: dict[str, int], k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each candidate's HR@k on the positives of held, replayed after fit (a user the model has nothing for
        gets the popularity list of that moment, as in run_in_order), and on those of them whose item is cold."""
        popularity = Popularity(index, fit)
        seen = initial_seen(fit, index)
        events: dict[str, list[tuple[str, str]]] = {}
        for e in fit:
            events.setdefault(e.user, []).append((e.item, e.feedback))
        hits = np.zeros(len(self.shares), np.int64)
        cold_hits = np.zeros(len(self.shares), np.int64)
        scored = cold_scored = 0
        any_cold = bool(self.cold.any()) and bool(self.by_tower.any())
        for e in held:
            mine = seen.setdefault(e.user, set())
            row = index[e.item]
            if e.positive:
                scored += 1
                cold_scored += int(self.cold[row])
                hit = np.zeros(len(self.shares), bool)
                z = self._z(events.get(e.user, [])) if mine else None
                if z is None:
                    hit[:] = row in popularity.recommend(e.user, k, mine)
                elif row not in mine:  # a seen item is never recommended again: a miss
                    scores = self.shares @ z
                    if any_cold:
                        scores[np.ix_(self.by_tower, self.cold)] = (self.cold_weight[self.by_tower, None]
                                                                    * z[np.ix_(self.cold_row, self.cold)])
                    scores[:, sorted(mine)] = -np.inf
                    own = scores[:, row : row + 1]
                    ahead = (scores > own).sum(axis=1) + (scores[:, :row] == own).sum(axis=1)
                    hit = ahead < k
                hits += hit
                if self.cold[row]:
                    cold_hits += hit
            events.setdefault(e.user, []).append((e.item, e.feedback))
            popularity.observe(e)
            mine.add(row)
        return hits / max(scored, 1), cold_hits / max(cold_scored, 1)


def candidates(
    tower_shares: tuple[float, ...], decay: float, cold_weights: tuple[float, ...] = COLD_WEIGHTS
) -> list[tuple[float, float, float, float | None]]:
    """(sequential share, tower share, tower decay, cold items' weight) of every blend choose_blend tries: the
    shares leave EASE some; the tower part at EASE's decay or one of TOWER_DECAYS (EASE's where it has no
    share); cold items ranked, where there is a tower part, by it alone at one of COLD_WEIGHTS, or by every
    part (None). In that order: where the validation slice cannot tell them apart, overall and on cold items
    (best_blend), the first of equals keeps EASE's decay and gives cold items the tower's ranking, the text
    path's. cold_weights: () where there are no cold items (every way of ranking them is the same)."""
    decays = tuple(dict.fromkeys((decay, *TOWER_DECAYS)))
    return [(w, t, d, c) for w in WEIGHTS for t in tower_shares if w + t <= 1.0 + 1e-9
            for d in (decays if t > 0 else (decay,)) for c in ((*cold_weights, None) if t > 0 else (None,))]


def choose_blend(
    user: SequentialUser, tables: list[np.ndarray], fit: list[Event], held: list[Event], index: dict[str, int],
    tower_shares: tuple[float, ...], cold: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """The validation HR@10 of every candidate blend, in one replay of held after fit, overall and on the targets
    that are cold items (cold: the items no positive of fit names; tables: the item tables of _user_model)."""
    cold = np.zeros(len(index), bool) if cold is None else cold
    grid = candidates(tower_shares, user.decay, COLD_WEIGHTS if cold.any() else ())
    blends = _Blends(user, tables, cold, grid)
    rates, cold_rates = blends.hit_rates(fit, held, index)
    return [{"weight": w, "tower": t, "tower_decay": d, "cold": c, "hr@10": round(float(rate), 5),
             "cold_hr@10": round(float(on_cold), 5)}
            for (w, t, d, c), rate, on_cold in zip(grid, rates, cold_rates, strict=True)]


def best_blend(grid: list[dict[str, float]]) -> dict[str, float]:
    """choose_blend's best candidate: the highest HR@10; among equals, the highest on cold items (the items a
    user can find only through their text); then the first."""
    return max(grid, key=lambda g: (g["hr@10"], g["cold_hr@10"]))


def tower_vectors(
    events: list[Event], index: dict[str, int], text: np.ndarray, log: Callable[[str], None] = lambda m: None,
) -> tuple[np.ndarray, np.ndarray]:
    """The two-tower item vectors with TrainParams' defaults (in this process): trained on the events before
    validation_cut (stopped early on the rest), and on every event for as many epochs."""
    from rayrec.learning.model import TrainParams
    from rayrec.learning.spaces import validated_two_tower

    first, every = validated_two_tower(events, index, text, TrainParams(), VALIDATION_SHARE, log)
    return first.vectors, every.vectors


class Policy:
    """A SequentialUser as an in-process replay policy (to choose the blend weight on validation)."""

    name = "sequential"

    def __init__(self, user: SequentialUser, vectors: np.ndarray, history: list[Event]) -> None:
        from rayrec.evaluation.baselines import top_k

        self.user, self.vectors, self.top_k = user, vectors.astype(np.float64), top_k
        self.events: dict[str, list[tuple[str, str]]] = {}
        for e in history:
            self.observe(e)

    def recommend(self, user: str, k: int, seen: set[int]) -> list[int] | None:
        u = self.user.vector(self.events.get(user, []))
        return None if u is None else self.top_k(self.vectors @ u, k, seen)

    def observe(self, event: Event) -> None:
        self.events.setdefault(event.user, []).append((event.item, event.feedback))


def train_space(
    events: list[Event], index: dict[str, int], text: np.ndarray, params: SequenceParams | None = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
    on_epoch: Callable[[dict[str, Any]], None] | None = None, ease: EaseChoice | None = None,
    towers: tuple[np.ndarray, np.ndarray] | None = None,
) -> SequentialSpace:
    """Chooses EASE's lambda, decay and click weight (unless given: tune's choice on the same events), the model's
    epochs and the blend's shares on the events' last VALIDATION_SHARE (validation_cut); returns the space
    trained on every event with them. With params.tower, the third part: the two-tower item vectors (every item,
    those without history placed by its text path) trained on the events before that slice and on every event
    (towers, if given: tower_vectors' answer for these events; else trained here)."""
    params = params or SequenceParams()
    t0 = time.perf_counter()
    cut = validation_cut(len(events))
    fit, held = events[:cut], events[cut:]
    ease = ease or tune(events, index)
    log(f"sequential: EASE lambda {ease.lam:g}, decay {ease.decay:g}, click {ease.click:g} "
        f"(validation HR@10 {ease.validation_hr10:.4f})")
    check = NextItemCheck(fit, held, index, params.length)  # prepared once, for every epoch
    model, history = train_sequential(fit, index, params, validate=check.hit_rate,
                                      on_epoch=on_epoch)
    best_epoch = int(history[-1].get("best_epoch", len(history)))
    fit_tower = every_tower = None
    if params.tower:
        if towers is None:
            log("sequential: training the two-tower part on the same events")
            towers = tower_vectors(events, index, text, log)
        fit_tower, every_tower = towers
    user, tables, fit_cold = _user_model(model, fit, index, text, ease, fit_tower)
    grid = choose_blend(user, tables, fit, held, index, TOWER_SHARES if fit_tower is not None else (0.0,), fit_cold)
    best = best_blend(grid)
    log(f"sequential: {best_epoch} epochs, blend weight {best['weight']}, tower {best['tower']} "
        f"(decay {best['tower_decay']:g}), cold items by "
        + ("every part" if best["cold"] is None else f"the tower at {best['cold']}")
        + f" (validation HR@10 {best['hr@10']:.4f}); " + (
            f"the model kept as trained on the {len(fit)} events before the slice" if validation_capped(len(events))
            else "training again on every event"))
    final = model if validation_capped(len(events)) else train_sequential(
        events, index, dataclasses.replace(params, epochs=best_epoch), on_epoch=on_epoch)[0]
    user, tables, cold = _user_model(final, events, index, text, ease, every_tower, best["weight"], best["tower"],
                                     best["tower_decay"])
    vectors = item_vectors(tables, cold, best["tower"], best["cold"])
    info = {"params": params.as_dict(), "epochs": history, "best_epoch": best_epoch,
            "ease": {"lambda": ease.lam, "decay": ease.decay, "click": ease.click, "rank": RANK,
                     "validation_hr@10": ease.validation_hr10},
            "weight": best["weight"], "tower_share": best["tower"], "tower_decay": best["tower_decay"],
            "cold_weight": best["cold"], "weight_grid": grid,
            "validation_hr@10": best["hr@10"], "retrained_on_every_event": final is not model,
            "seconds": round(time.perf_counter() - t0, 1)}
    return SequentialSpace(vectors, user, cold, info)
