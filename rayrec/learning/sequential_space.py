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

from rayrec.evaluation.data import Event
from rayrec.evaluation.ease import VALIDATION_SHARE, EaseChoice, tune, validation_capped, validation_cut
from rayrec.learning.blend_choice import TOWER_SHARES, best_blend, choose_blend
from rayrec.learning.sequential import NextItemCheck, SequenceParams, train_sequential
from rayrec.learning.spaces import ridge_map
from rayrec.users.sequence_model import SequenceModel
from rayrec.users.sequential_user import SequentialUser, equal_norms, spread

RANK = 64  # of the EASE factors


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
