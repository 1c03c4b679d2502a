"""Choosing the sequential space's blend on the validation slice: every candidate (the parts' shares, the
two-tower part's decay, how cold items are ranked) scored in one replay (rayrec.learning.sequential_space
trains the parts; this module only ranks with them)."""

from __future__ import annotations

import numpy as np

from rayrec.evaluation.baselines import Popularity
from rayrec.evaluation.data import Event
from rayrec.evaluation.replay import initial_seen
from rayrec.users.sequential_user import SequentialUser

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
