"""Items nobody has interacted with: how well the two-tower text path places them, with enough of them to tell.

MovieLens' replay has 95 scored events on movies its history never saw (75 of them 1998 releases, a
year only 32 history movies carry), too few to choose a placement by. This script makes more, on the
history part only (never the replayed part): the history's first 90% trains and seeds the users, with a
share of its items (seeded; `--withhold`, 10%) removed from it as if they did not exist yet; its last
10% is replayed. The two-tower model (rayrec.learning, `--train` overrides) places the withheld items
from their text alone, and each placement is replayed in process: the `realtime` rule in numpy (the
same rule as rayrec's user actors: a user seeded from the history's positives, then every event by
the default learning rates, a new user's first positive making them that item) against the
popularity list, with the evaluation's own replay protocol and metrics (rayrec.evaluation).

Placements of the withheld items: `trained` (the text path the loss trained: what rayrec serves),
`ridge` (a ridge regression from text embeddings onto the learned vectors of the items with history),
`knnK` (the mean of the learned vectors of the K items with history nearest in text, each weighted by its
cosine to the new item's text), each also
`-centred` (moved along the catalog's mean direction until its cosine to it is the average of the
items with history: averaged vectors sit nearer the middle than real items, and crowd every list).
Prints one JSON object: HR@10 with 95% intervals overall and on the events of withheld items.

    python bench/cold_items.py --placements trained,ridge,knn5,knn5-centred    # ~5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from rayrec.config import FeedbackRule
from rayrec.evaluation.data import Dataset, Event, load_movielens
from rayrec.evaluation.metrics import summarise
from rayrec.evaluation.replay import run_in_order
from rayrec.learning.model import TrainParams
from rayrec.learning.spaces import ridge_placed, two_tower
from rayrec.users.feedback_rule import normalise
from rayrec.users.user_state import UserStore


class RealtimeRule:
    """The `realtime` policy in process: rayrec's own UserStore (the user actors' plain logic, default
    FeedbackRule) over a fixed table of item vectors; the cold-start vector is the catalog's mean."""

    name = "realtime"

    def __init__(self, vectors: np.ndarray, history: list[Event], index: dict[str, int]) -> None:
        self.vectors, self.index = vectors, index
        self.mean = normalise(vectors.astype(np.float64).sum(axis=0))
        self.store = UserStore(vectors.shape[1], FeedbackRule())
        liked: dict[str, list[str]] = {}
        for e in history:
            if e.positive:
                liked.setdefault(e.user, []).append(e.item)
        keep = self.store.rule.history_len
        for user, items in liked.items():  # seeded as the eval seeds the user actors: the newest positives
            self.store.set_history(user, items[-keep:], vectors[[index[i] for i in items[-keep:]]])

    def recommend(self, user: str, k: int, seen: set[int]) -> list[int] | None:
        state = self.store.get(user)
        if state is None:
            return None
        scores = self.vectors @ state.vector
        scores[list(seen)] = -np.inf
        return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]

    def observe(self, event: Event) -> None:
        self.store.apply(event.user, event.item, event.feedback, self.vectors[self.index[event.item]], start=self.mean)


def centred(placed: np.ndarray, warm: np.ndarray) -> np.ndarray:
    """Each placed vector moved along the warm items' mean direction m (x - t m, renormalised) until its cosine
    to m equals the warm items' average cosine to m. (A vector exactly along m has no other direction to go.)"""
    m = normalise(warm.astype(np.float64).sum(axis=0))
    target = float((warm @ m).mean())
    out = []
    for x in placed.astype(np.float64):
        low, high = -4.0, 4.0  # cos(normalise(x - t m), m) falls as t grows
        for _ in range(50):
            t = (low + high) / 2
            low, high = (t, high) if float(normalise(x - t * m) @ m) > target else (low, t)
        out.append(normalise(x - t * m))
    return np.asarray(out, np.float32)


def placements(names: list[str], vectors: np.ndarray, text: np.ndarray, cold: np.ndarray) -> dict[str, np.ndarray]:
    """Item tables with the cold rows placed by each named method (rows with history keep their vectors)."""
    warm = ~cold
    unit_text = text / np.linalg.norm(text, axis=1, keepdims=True)
    out = {}
    for name in names:
        base, _, suffix = name.partition("-")
        if base == "trained":
            placed = vectors[cold]
        elif base == "ridge":  # TrainParams(text_map="ridge")'s placement
            placed = ridge_placed(text, vectors, cold)[2]
        elif base.startswith("knn") and base[3:].isdigit():
            k = int(base[3:])
            sims = unit_text[cold] @ unit_text[warm].T
            nearest = np.argsort(-sims, axis=1)[:, :k]
            weights = np.take_along_axis(sims, nearest, axis=1)
            placed = (vectors[warm][nearest] * weights[..., None]).sum(axis=1)
        else:
            raise ValueError(f"unknown placement {name!r}: trained, ridge or knnK, optionally with -centred")
        placed = placed / np.linalg.norm(placed, axis=1, keepdims=True)
        if suffix == "centred":
            placed = centred(placed, vectors[warm])
        elif suffix:
            raise ValueError(f"unknown placement suffix in {name!r} (only -centred)")
        table = vectors.copy()
        table[cold] = placed
        out[name] = table
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--withhold", type=float, default=0.1, help="share of the history's items withheld")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--placements", default="trained,ridge,ridge-centred,knn5,knn5-centred")
    parser.add_argument("--train", default="{}", help="TrainParams overrides as JSON")
    parser.add_argument("--resamples", type=int, default=200)
    args = parser.parse_args()
    if not 0 < args.withhold < 1:
        raise SystemExit(f"--withhold must be between 0 and 1, got {args.withhold}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the encoder reads its local copy only

    from rayrec.encoder import TextEncoder

    full = load_movielens()
    history, _ = full.split(0.8)  # the replayed part is never read
    seed_part, replay = Dataset(history, full.items).split(0.9)
    items = sorted({e.item for e in seed_part})
    withheld = set(np.random.default_rng(args.seed).choice(items, size=int(len(items) * args.withhold), replace=False))
    train = [e for e in seed_part if e.item not in withheld]
    ids = full.items["item_id"].to_pylist()
    index = {item: row for row, item in enumerate(ids)}
    text = TextEncoder(None).encode(full.items["text"].to_pylist())
    started = time.perf_counter()
    space = two_tower(train, index, text, TrainParams(**json.loads(args.train)))
    trained_s = time.perf_counter() - started
    cold = space.from_text  # withheld items and those without any history
    on_withheld = np.array([e.item in withheld for e in replay if e.positive])
    runs = {}
    for name, table in placements(args.placements.split(","), space.vectors, text, cold).items():
        scored, _ = run_in_order(train, replay, index, [RealtimeRule(table, train, index)])
        runs[name] = {}
        for policy in ("realtime", "popularity"):
            runs[name][policy] = {
                "all": summarise(scored[policy], len(ids), args.resamples)["hr@10"],
                "withheld_items": summarise(scored[policy].subset(on_withheld), len(ids), args.resamples)["hr@10"],
            }
        print(json.dumps({name: runs[name]}), flush=True)
    print(json.dumps({
        "protocol": "history's first 90% minus withheld items trains; its last 10% replayed in process",
        "withheld_items": len(withheld), "events": len(on_withheld), "events_on_withheld": int(on_withheld.sum()),
        "train": json.loads(args.train), "train_s": round(trained_s, 1), "placements": runs,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
