"""`rayrec eval`: the replay through the real system (Ray actors, the text encoder) and the baselines."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rayrec.evaluation.baselines import ItemKNN
from rayrec.evaluation.data import Dataset, Event
from rayrec.evaluation.ease import VALIDATION_MAX_EVENTS, VALIDATION_SHARE, tune
from rayrec.evaluation.metrics import Scored, summarise
from rayrec.evaluation.replay import K, run_in_order, run_in_rounds
from rayrec.evaluation.spaces import SPACES, svd_space
from rayrec.exceptions import InvalidInputError
from rayrec.hashing import partition_of

POLICIES = ("popularity", "itemknn", "ease", "static", "realtime", "sequential")
HISTORY_CHUNK = 5000  # about this many history events (whole users) per feedback_many call of the sequential feed
CALL_BATCH = 256  # recommendations per recommend_many call in the replay (a shard call carries them all)


class SystemPolicy:
    """rayrec as a policy: users start from their history's positives; `realtime` also gets every event
    as feedback, `static` never does. Each policy's users live under their own prefix in one system.
    A round's requests travel as one recommend_many (and its events as one feedback_many) per user actor,
    in parcels of at most CALL_BATCH."""

    def __init__(self, system: Any, name: str, index: dict[str, int], known: set[str], update: bool) -> None:
        self.system = system
        self.name = name
        self.index = index
        self.items = list(index)
        self.known = set(known)  # users the system holds a vector for
        self.update = update
        self.calls = 0

    async def _per_actor(self, method: str, rows: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Calls method on the actor of each row's user, CALL_BATCH rows a call, every call at once;
        returns the answers in the rows' order (each user's rows stay in order within one call's list)."""
        actors = self.system.users
        parts: dict[int, list[int]] = {}
        for n, (uid, _) in enumerate(rows):
            parts.setdefault(partition_of(uid, len(actors)), []).append(n)
        # Feedback goes whole to each actor: split over concurrent calls, one user's events could interleave.
        size = max(1, len(rows)) if method == "feedback_many" else CALL_BATCH
        chunks = [(p, pos[start : start + size]) for p, pos in parts.items() for start in range(0, len(pos), size)]
        answers = await asyncio.gather(
            *(getattr(actors[p], method).remote([rows[n][1] for n in pos]) for p, pos in chunks))
        self.calls += len(chunks)
        out: list[Any] = [None] * len(rows)
        for (_, pos), got in zip(chunks, answers, strict=True):
            for n, answer in zip(pos, got, strict=True):
                if isinstance(answer, BaseException):
                    raise answer
                out[n] = answer
        return out

    async def recommend_many(self, requests: list[tuple[str, int, set[int]]]) -> list[list[int] | None]:
        asked = [(user, k, seen) for user, k, seen in requests if user in self.known]
        rows = [(f"{self.name}:{user}", (f"{self.name}:{user}", k, False, None, [self.items[j] for j in sorted(seen)]))
                for user, k, seen in asked]
        answers = iter(await self._per_actor("recommend_many", rows) if rows else [])
        return [[self.index[i["item_id"]] for i in next(answers)["items"]] if user in self.known else None
                for user, _, _ in requests]

    async def observe_many(self, events: list[Event]) -> None:
        if not self.update:
            return
        rows = [(f"{self.name}:{e.user}", (f"{self.name}:{e.user}", e.item, e.feedback, f"{e.time}/{e.item}"))
                for e in events]
        await self._per_actor("feedback_many", rows)
        self.known.update(e.user for e in events)


def _sequential_replay(
    space: Any, history: list[Event], replay: list[Event], index: dict[str, int], ids: list[str], dataset: Dataset,
    num_cpus: int | None, num_shards: int, cold: dict[int, list[int]],
    progress: Callable[[int], None], log: Callable[[str], None],
) -> Scored:
    """The sequential policy through a real system: its item vectors in the shards, its user model in the
    user actors; every history event is sent as feedback (batched per actor, each user's order kept), then
    the replay runs as for the other system policies."""
    import tempfile

    import ray

    from rayrec import IndexConfig, Rayrec, RayrecConfig
    from rayrec.users import model_files

    with tempfile.TemporaryDirectory(prefix="rayrec-eval-user-model-") as folder:
        model_files.save(space.user, folder)
        config = RayrecConfig(index=IndexConfig(dim=space.user.dim, factory="Flat", max_k=K), num_shards=num_shards,
                              shard_num_cpus=0.1, router_num_cpus=0.1, user_actor_num_cpus=0.1,
                              namespace="rayrec-eval-sequential", user_model=folder)
        with Rayrec.start(config, num_cpus=num_cpus) as system:
            system.upsert(ids, space.vectors, {"category": dataset.items["category"].to_pylist()})
            log(f"sequential: feeding the users their {len(history)} history events")
            actors = system.users
            by_user: dict[str, list[tuple[str, str, str, str]]] = {}
            for e in history:
                uid = f"sequential:{e.user}"
                by_user.setdefault(uid, []).append((uid, e.item, e.feedback, f"{e.time}/{e.item}"))
            # Whole users a call, each user's events together and in order, as a bulk import: the actor keeps
            # every event in the user's history and computes the vector once, after the user's last (users
            # are independent, so their order does not matter).
            parcels: dict[int, list[list[tuple[str, str, str, str]]]] = {}
            for uid, events in by_user.items():
                mine = parcels.setdefault(partition_of(uid, len(actors)), [[]])
                if mine[-1] and len(mine[-1]) + len(events) > HISTORY_CHUNK:
                    mine.append([])
                mine[-1].extend(events)
            calls = [actors[p].feedback_many.remote(parcel, last_only=True) for p, mine in parcels.items()
                     for parcel in mine]
            for answers in ray.get(calls):
                failed = [a for a in answers if isinstance(a, BaseException)]
                if failed:
                    raise failed[0]
            info = ray.get(actors[0].info.remote())
            if info["user_model"] != "sequential":
                raise RuntimeError(f"the user actors did not load the sequential model: {info['user_model_error']}")
            log("replaying sequential through the system")
            policy = SystemPolicy(system, "sequential", index, {e.user for e in history}, True)
            return asyncio.run(run_in_rounds(history, replay, index, policy, cold, progress))


def _stamped(log: Callable[[str], None], t0: float) -> Callable[[str], None]:
    """log with the seconds since t0 before each line: where an evaluation's time goes."""
    return lambda message: log(f"[{time.perf_counter() - t0:.0f} s] {message}")


def _hit_curve(replay: list[Event], scored: Scored, bins: int) -> list[float | None]:
    """HR@10 per equal slice of the replay's time span (None for a slice without scored events)."""
    times = np.array([e.time for e in replay if e.positive])
    hits = (scored.ranks > 0) & (scored.ranks <= 10)
    edges = np.linspace(times.min(), times.max(), bins + 1) if len(times) else np.zeros(bins + 1)
    which = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, bins - 1)
    return [float(hits[which == b].mean()) if (which == b).any() else None for b in range(bins)]


def _cold_metrics(
    history: list[Event], replay: list[Event], scored: dict[str, Scored], catalog: int, resamples: int
) -> dict[str, Any]:
    """HR@10 on the scored events whose item the history never saw, and on those of users it never saw."""
    items = {e.item for e in history}
    users = {e.user for e in history}
    positives = [e for e in replay if e.positive]
    subsets = {
        "items_without_history": np.array([e.item not in items for e in positives], dtype=bool),
        "users_without_history": np.array([e.user not in users for e in positives], dtype=bool),
    }
    out: dict[str, Any] = {}
    for subset, mask in subsets.items():
        out[subset] = {"events": int(mask.sum())}
        for name in POLICIES:
            out[subset][name] = (
                summarise(scored[name].subset(mask), catalog, resamples)["hr@10"] if mask.any() else None
            )
    return out


def evaluate(
    dataset: Dataset,
    history_share: float = 0.8,
    model_dir: str | None = None,
    num_cpus: int | None = None,
    num_shards: int = 2,
    resamples: int = 1000,
    bins: int = 20,
    progress: bool = True,
    feedback: Any = None,
    space: str = "two-tower",
    train_params: Any = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Runs the replay for every policy; returns one JSON-ready dict of parameters, metrics and curves.

    feedback: a rayrec.config.FeedbackRule for the real-time policy (default: rayrec's default rule).
    space: "two-tower" or "svd" (item vectors learned from the history, see rayrec.evaluation.spaces),
        or "text" (the encoder's embeddings).
    train_params: a rayrec.learning.model.TrainParams for "two-tower" (default: its defaults).
    """
    if space not in SPACES:
        raise InvalidInputError(f"unknown item space {space!r}: one of {list(SPACES)}")
    from tqdm import tqdm

    from rayrec import IndexConfig, Rayrec, RayrecConfig
    from rayrec.encoder import TextEncoder

    t0 = time.perf_counter()
    log = _stamped(log, t0)
    history, replay = dataset.split(history_share)
    ids = dataset.items["item_id"].to_pylist()
    index = {item: j for j, item in enumerate(ids)}
    log("choosing EASE's lambda, recency decay and click weight on the history's last 10%")
    ease = tune(history, index)
    baselines = [ItemKNN(index, history), ease.policy(history, index)]
    bar = tqdm(total=4 * len(replay), desc="replay", unit="event", disable=not progress, file=sys.stderr)
    log(f"replaying {len(replay)} events: popularity, itemknn, ease (in process)")
    scored, cold = run_in_order(history, replay, index, baselines, progress=bar.update)

    log(f"encoding {len(ids)} item texts")
    encoder = TextEncoder(model_dir)
    vectors = text = encoder.encode(dataset.items["text"].to_pylist())
    from_text = len(ids)
    towers = None  # the two-tower spaces trained on the history's first 90% and on all of it
    if space == "svd":
        vectors, _, cold_items = svd_space(history, index, vectors)
        from_text = int(cold_items.sum())
    elif space == "two-tower":
        from rayrec.learning.model import TrainParams
        from rayrec.learning.spaces import validated_two_tower

        params = TrainParams() if train_params is None else train_params
        log(f"training the two-tower model on the history (at most {params.epochs} epochs, stopped early on its "
            f"last {VALIDATION_SHARE:.0%}, at most {VALIDATION_MAX_EVENTS} events)")
        towers = validated_two_tower(history, index, vectors, params, VALIDATION_SHARE, log)
        learned = towers[1]
        vectors, from_text = learned.vectors, int(learned.from_text.sum())
    config = RayrecConfig(index=IndexConfig(dim=vectors.shape[1], factory="Flat", max_k=K), num_shards=num_shards,
                          shard_num_cpus=0.1, router_num_cpus=0.1, user_actor_num_cpus=0.1, namespace="rayrec-eval",
                          **({"feedback": feedback} if feedback is not None else {}))
    with Rayrec.start(config, num_cpus=num_cpus) as system:
        system.upsert(ids, vectors, {"category": dataset.items["category"].to_pylist()})
        liked: dict[str, list[str]] = {}
        for e in history:
            if e.positive:
                liked.setdefault(e.user, []).append(e.item)
        for name in ("static", "realtime"):
            system.set_histories({f"{name}:{u}": items for u, items in liked.items()})
        for name, update in (("static", False), ("realtime", True)):
            log(f"replaying {name} through the system")
            policy = SystemPolicy(system, name, index, set(liked), update)
            scored[name] = asyncio.run(run_in_rounds(history, replay, index, policy, cold, bar.update))
        rule = system.config.feedback
    from rayrec.learning.sequential_space import train_space

    log("training the sequential user model on the history")
    # Its two-tower part: the pair above where it was trained with the defaults, else its own.
    reuse = None if towers is None or train_params is not None else (towers[0].vectors, towers[1].vectors)
    sequential = train_space(history, index, text, log=log, ease=ease, towers=reuse,  # EASE's choice made above
                             on_epoch=lambda e: log(f"sequential epoch {e['epoch']}: {e['seconds']:.0f} s" + (
                                 f", HR@10 {e['validation']['hr@10']:.4f}" if "validation" in e else "")))
    scored["sequential"] = _sequential_replay(sequential, history, replay, index, ids, dataset, num_cpus, num_shards,
                                              cold, bar.update, log)
    bar.close()
    log("replays done")
    catalog = len(ids)
    return {
        "params": {
            "history_share": history_share,
            "history_events": len(history),
            "replayed_events": len(replay),
            "items": catalog,
            "users": len({e.user for e in dataset.events}),
            "dropped_unknown_items": dataset.dropped_unknown_items,
            # Scored events of users with no positive history: every policy starts them on popularity.
            "scored_events_of_users_without_history": sum(1 for e in replay if e.positive and e.user not in liked),
            "item_space": space,
            "item_vectors": (f"text encoder ({model_dir or 'all-MiniLM-L6-v2'}), {encoder.dim}-d" if space == "text"
                             else f"{space} trained on the history, {vectors.shape[1]}-d; "
                                  f"{from_text} items without history placed from text"),
            "feedback_rule": {"learning_rates": rule.learning_rates, "decay_half_life_s": rule.decay_half_life_s,
                              "history_recency": rule.history_recency},
            "ease": {"lambda": ease.lam, "decay": ease.decay, "click": ease.click,
                     "validation_hr@10": ease.validation_hr10,
                     "validation": f"the history's last {VALIDATION_SHARE:.0%} (at most {VALIDATION_MAX_EVENTS} "
                                   "events), fitted on the rest",
                     "grid": ease.grid},
            "sequential": {k: v for k, v in sequential.info.items() if k != "epochs"}
            | {"epochs": len(sequential.info["epochs"]), "item_vectors": f"{sequential.vectors.shape[1]}-d, "
               f"{int(sequential.from_text.sum())} items without a positive interaction placed from text"},
            "bootstrap_resamples": resamples,
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "metrics": {name: summarise(scored[name], catalog, resamples) for name in POLICIES},
        "cold": _cold_metrics(history, replay, scored, catalog, resamples),
        "hr@10_over_time": {name: _hit_curve(replay, scored[name], bins) for name in POLICIES},
    }
