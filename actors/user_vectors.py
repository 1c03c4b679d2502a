"""UserVectorActor: one partition of users, updated in real time by feedback."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import ray

from rayrec import constants as C
from rayrec import metrics
from rayrec.config import RayrecConfig
from rayrec.exceptions import CALLER_ERRORS, InvalidInputError, ItemNotFoundError, LayoutChangedError
from rayrec.hashing import partition_of, stable_hash
from rayrec.routing.replicas import ReplicaSet
from rayrec.routing.search import ShardSearch
from rayrec.system.generations import ShardSet
from rayrec.system.model_swap import SpaceChangedError
from rayrec.users import recommending
from rayrec.users.feedback_batch import UserEvents, group_by_user
from rayrec.users.item_cache import ItemVectorCache
from rayrec.users.model_switch import ModelSwitch
from rayrec.users.recommending import Fields
from rayrec.users.swap_state import SwapState
from rayrec.users.user_journal import UserJournal
from rayrec.users.user_state import UserChange, UserStore
from rayrec.validation import check_event, check_history, check_id

log = logging.getLogger(__name__)


class UserVectors:
    """The users of one partition; recommends by searching the shards itself.

    A recommendation runs the router's fan-out and exact merge (rayrec.routing.search) here, where
    the user's vector is, over the shard handles the router names (asked once, and again when a
    re-shard or model swap retires them): ingress -> user actor -> shards. The router stays the
    control plane (layout, item writes, the catalog mean). Plain async Python over a router handle;
    UserVectorActor is this class as a Ray async actor. Changes to one user run one at a time, in arrival order
    (a lock per user stripe), and each finishes before its call returns, so the
    next recommend sees it (read-your-writes). With storage, a change is
    planned, logged durably (see GroupCommit), then applied, all under its
    user's lock; a restarted actor recovers its snapshot plus the log after it.
    """

    def __init__(self, config: RayrecConfig, router: Any, partition: int = 0, require_shared: bool = False) -> None:
        self.config = config
        self.router = router
        self.store = UserStore(config.index.dim, config.feedback)
        # The current shard generation and its shards' replicas, asked of the router on first use.
        self._shards: ShardSet | None = None
        # Item vectors for feedback, dropped by the router before it acknowledges a write of the item.
        self.items = ItemVectorCache(C.ITEM_VECTOR_CACHE_SIZE, C.ITEM_VECTOR_CACHE_TTL_S)
        self.search = ShardSearch(config, self._view, self._switched)
        # Which user model moves the users: the configured one, until the item space they are in names its own
        # (a model swap to or from a sequential version; rayrec.users.model_switch).
        self.models = ModelSwitch(config.user_model, config.index.dim, self.store,
                                  lambda item_ids: self.router.vectors_of.remote(item_ids, False),
                                  self._cold_start_vector)
        self._locks = [asyncio.Lock() for _ in range(C.USER_LOCK_STRIPES)]
        # Per user, when the feedback behind their current vector arrived, until a
        # recommendation uses that vector (the feedback freshness metric).
        self._fresh: dict[str, float] = {}
        self._partition = str(partition)
        # Model swaps: the item space the vectors are in, and the pause a swap holds (rayrec.users.swap_state).
        self.swaps = SwapState(
            ask_space=lambda: self.router.item_space.remote(),
            rederive=self.models.rederive,
            snapshot=self.snapshot,
            swap_pending=lambda swap: self.router.swap_pending.remote(swap),
            checked=self._space_checked,
            recovered=config.storage is not None,
            adopt=self.models.adopt,
        )
        # Durability (with storage): the log each change is written to first, snapshots, recovery.
        self.durable = UserJournal(config, self._partition, self.store, self._locks, self.swaps.version,
                                   require_shared)
        if self.durable.journal is not None:
            self.swaps.recorded = self.durable.recover()

    async def _make(self, user_id: str, change: UserChange | None) -> dict[str, Any]:
        """Logs (with storage) and applies a planned change; the caller holds the user's lock."""
        if change is None:  # its event id was applied before
            return self._unchanged(user_id)
        await self.durable.make(change)
        return {"user_id": user_id, "version": change.version, "applied": True}

    async def snapshot(self) -> None:
        """Writes every user to storage and drops the log it covers (no-op without storage; UserJournal)."""
        await self.durable.snapshot()

    def _count_users(self) -> None:
        metrics.user_count().set(len(self.store), tags={"partition": self._partition})

    def _lock(self, user_id: str) -> asyncio.Lock:
        return self._locks[stable_hash(user_id) % len(self._locks)]

    async def _cold_start_vector(self) -> np.ndarray:
        mean = await self.router.mean_vector.remote()
        if mean is None:  # empty catalog, or vectors that cancel out: a fixed direction
            mean = np.zeros(self.config.index.dim, dtype=np.float32)
            mean[0] = 1.0
        return mean

    async def _refresh_shards(self) -> ShardSet:
        """Asks the router for the current shards (a re-shard or model swap may have switched)."""
        generation, groups = await self.router.shard_view.remote()
        if self._shards is None or generation != self._shards.generation:
            sets = [ReplicaSet(g, C.REPLICA_SUSPECT_S, self.config.replica_hedge_s) for g in groups]
            self._shards = ShardSet(generation, sets)
        return self._shards

    async def _view(self) -> ShardSet:
        return self._shards if self._shards is not None else await self._refresh_shards()

    async def _switched(self, on: ShardSet) -> bool:
        """Whether the shards `on` were switched away from (a call to them failed): asks the router."""
        return (await self._refresh_shards()).generation != on.generation

    async def _item_vector(self, item_id: str) -> np.ndarray:
        """One item's vector (1, dim): kept from an earlier event, else asked of its owning shard directly."""
        kept = self.items.get(item_id)
        if kept is not None:
            return kept

        async def read(on: ShardSet) -> tuple[np.ndarray, list[bool]]:
            return await on.sets[partition_of(item_id, len(on))].read("vectors_of", [item_id])()

        epoch = self.items.epoch
        vectors, found = await self.search.on_current(read)
        if not found[0]:
            raise ItemNotFoundError(f"unknown item id(s): [{item_id!r}]; upsert the items first")
        self.items.put(item_id, vectors, epoch)
        return vectors

    def forget_items(self, item_ids: list[str] | None) -> int:
        """Drops kept item vectors (None: all): the router calls it for every item write before acknowledging
        it, and after a model swap's switch. Returns how many were kept."""
        return self.items.forget(item_ids)

    def _unchanged(self, user_id: str) -> dict[str, Any]:
        state = self.store.get(user_id)
        return {"user_id": user_id, "version": 0 if state is None else state.version, "applied": False}

    async def feedback(
        self, user_id: Any, item_id: Any, event: str, event_id: str | None = None, arrived_at: float | None = None
    ) -> dict[str, Any]:
        """Applies one event (click, like, purchase, skip, dislike) to the user's vector.

        arrived_at (epoch seconds) is when the request reached the system, for the
        freshness metric; default: now.

        Returns:
            {"user_id", "version", "applied"}; applied is False when event_id was
            already applied (nothing changes then).
        """
        user_id = check_id(user_id, "user id")
        item_id = check_id(item_id)
        event = check_event(event)
        event_id = None if event_id is None else check_id(event_id, "event id", event=True)
        async with self.swaps.serving(), self._lock(user_id):
            if self.store.applied(user_id, event_id):
                return self._unchanged(user_id)
            out = await self._feedback(user_id, item_id, event, event_id)
            self._fresh[user_id] = time.time() if arrived_at is None else float(arrived_at)
        self._count_users()
        return out

    async def _feedback(self, user_id: str, item_id: str, event: str, event_id: str | None) -> dict[str, Any]:
        """Plans, logs and applies one checked event; the caller holds the user's lock. The model computes
        the vector where it knows the item (no shard is asked); else the rule moves it by the item's vector."""
        return await self._feedback_with(user_id, item_id, event, event_id,
                                         self.store.by_model.vector(user_id, [(item_id, event)]))

    async def _feedback_with(
        self, user_id: str, item_id: str, event: str, event_id: str | None, vector: np.ndarray | None
    ) -> dict[str, Any]:
        """_feedback with the model's vector already computed (None: the rule moves the user)."""
        x = start = None
        if vector is None:
            x = (await self._item_vector(item_id))[0]
            start = None if self.store.get(user_id) is not None else await self._cold_start_vector()
        change = self.store.plan_feedback(user_id, item_id, event, x, event_id, start, model_vector=vector)
        return await self._make(user_id, change)

    async def feedback_many(
        self, events: list[Fields], last_only: bool = False
    ) -> list[dict[str, Any] | BaseException]:
        """Several events in one call (a replay or a bulk import): per user in the order given, users
        concurrently (their log records share group commits).

        Args:
            events: per event (user_id, item_id, event, event_id), as feedback takes them.
            last_only: a bulk import of past events: with a user model, each user's vector is computed once,
                at their last event of the call (rayrec.users.feedback_batch.UserEvents.many).

        Returns:
            Per event, feedback's answer, or the error that event alone caused.
        """
        out: list[dict[str, Any] | BaseException | None] = [None] * len(events)
        by_user, errors = group_by_user(events)
        for n, exc in errors.items():
            out[n] = exc

        async def one_user(user_id: str, plan: UserEvents) -> None:
            async with self._lock(user_id):
                for (n, item_id, event, event_id), new, vector in plan:
                    try:
                        out[n] = (await self._feedback_with(user_id, item_id, event, event_id, vector) if new
                                  else self._unchanged(user_id))
                        self._fresh[user_id] = time.time()
                    except CALLER_ERRORS as exc:
                        out[n] = exc
                        plan.failed()

        async with self.swaps.serving():
            # Every user's vectors in one pass of the model; a user changed meanwhile is planned again.
            plans = UserEvents.many(self.store, by_user, last_only)
            await asyncio.gather(*(one_user(u, plan) for u, plan in plans.items()))
        self._count_users()
        return out  # type: ignore[return-value]

    async def set_vector(
        self, user_id: Any, vector: Any, event_id: str | None = None, source: Any = None, space: str | None = None
    ) -> dict[str, Any]:
        """Sets a user's interest vector directly. Returns {"user_id", "version", "applied"}.

        source: the text embedding the vector was placed from (kept: a model swap places it again;
        without it the vector is raw, and a swap is refused while such a user exists). space: the item
        space (model version) the vector is in; SpaceChangedError if the system moved to another meanwhile.
        """
        user_id = check_id(user_id, "user id")
        event_id = None if event_id is None else check_id(event_id, "event id", event=True)
        async with self.swaps.serving(), self._lock(user_id):
            now = (await self.swaps.current() or {}).get("version")
            if space is not None and now is not None and space != now:
                raise SpaceChangedError(f"the system moved to item space {now!r}; this vector is in {space!r}")
            out = await self._make(user_id, self.store.plan_vector(user_id, vector, event_id, source))
        self._count_users()
        return out

    async def set_history(self, user_id: Any, item_ids: Any, event_id: str | None = None) -> dict[str, Any]:
        """Sets a user from the items they engaged with, oldest first.

        The vector becomes the recency-weighted mean of the items' vectors and
        the history is replaced. Returns {"user_id", "version", "applied"}.
        """
        user_id = check_id(user_id, "user id")
        item_ids = check_history(item_ids)
        event_id = None if event_id is None else check_id(event_id, "event id", event=True)
        async with self.swaps.serving(), self._lock(user_id):
            if self.store.applied(user_id, event_id):
                return self._unchanged(user_id)
            vectors, _ = await self.router.vectors_of.remote(item_ids)
            out = await self._make(user_id, self.store.plan_history(user_id, item_ids, vectors, event_id))
        self._count_users()
        return out

    async def set_histories(self, histories: dict[str, list[str]]) -> int:
        """Sets many users from their histories (oldest first) with one lookup of the item vectors.

        Items the catalog lacks are left out of a history; a user none of whose
        items exist is skipped. Returns how many users were set.
        """
        if not isinstance(histories, dict):
            raise InvalidInputError(f"histories must be a dict of user id to item ids, got {type(histories).__name__}")
        checked = {check_id(u, "user id"): check_history(items, True) for u, items in histories.items()}
        unique = sorted({i for items in checked.values() for i in items})
        if not unique:
            return 0
        async with self.swaps.serving():
            return await self._set_histories(checked, unique)

    async def _set_histories(self, checked: dict[str, list[str]], unique: list[str]) -> int:
        vectors, found = await self.router.vectors_of.remote(unique, False)
        row = {item: r for r, (item, ok) in enumerate(zip(unique, found)) if ok}

        async def set_one(user_id: str, known: list[str]) -> None:
            async with self._lock(user_id):
                await self._make(user_id, self.store.plan_history(user_id, known, vectors[[row[i] for i in known]]))

        # Concurrently: with storage, the users' log records share group commits.
        todo = [(u, [i for i in items if i in row]) for u, items in checked.items()]
        todo = [(u, known) for u, known in todo if known]
        await asyncio.gather(*(set_one(u, known) for u, known in todo))
        self._count_users()
        return len(todo)

    async def delete_user(self, user_id: Any) -> dict[str, Any]:
        """Erases a user: vector, history, remembered event ids. With storage, no file holds the user once
        this returns: a snapshot without the user replaces every snapshot and log segment that did.

        Returns {"user_id", "deleted"}: deleted is False for a user this actor does not know.
        """
        user_id = check_id(user_id, "user id")
        async with self.swaps.serving():
            async with self._lock(user_id):  # no change of this user is between its log write and apply
                existed = self.store.delete(user_id)
                self._fresh.pop(user_id, None)
            if existed:
                await self.snapshot()
        self._count_users()
        return {"user_id": user_id, "deleted": existed}

    async def export_user(self, user_id: Any) -> dict[str, Any] | None:
        """Everything this actor keeps about a user (UserState.export), or None if unknown."""
        user_id = check_id(user_id, "user id")
        async with self.swaps.serving():
            state = self.store.get(user_id)
            return None if state is None else state.export(user_id)

    async def get(self, user_id: Any) -> dict[str, Any] | None:
        """The user's state (vector, version, history, updated_at), or None if unknown."""
        user_id = check_id(user_id, "user id")
        async with self.swaps.serving():
            state = self.store.get(user_id)
            return None if state is None else state.as_dict(user_id)

    async def recommend(
        self,
        user_id: Any,
        k: int,
        exclude_seen: bool = True,
        categories: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> dict[str, Any]:
        """Top-k items for a user; an unknown user gets the items nearest the catalog mean.

        Returns:
            {"user_id", "items": [{"item_id", "score", metadata...}], "version"
            (of the vector used), "cold_start", "partial", "failed_shards", "space"
            (the item space's version: a model swap waits for this call, so one space answers it),
            "freshness_ms" (on the first answer that uses a feedback event's vector: ms since its arrival, else None),
            "timing" ({"user_ms": in this actor, "search_ms": of that, the fan-out and merge})}.
        """
        out = (await self.recommend_many([(user_id, k, exclude_seen, categories, exclude)]))[0]
        if isinstance(out, BaseException):
            raise out
        return out

    async def recommend_many(self, requests: list[Fields]) -> list[dict[str, Any] | BaseException]:
        """Several recommendations in one call, searched as one batched fan-out (an ingress's coalesced
        calls, or POST /recommend/batch).

        Args:
            requests: per request (user_id, k, exclude_seen, categories, exclude), as recommend takes them.

        Returns:
            Per request, recommend's answer, or the error that request alone caused (bad input).
        """
        t0 = time.perf_counter()
        out: list[dict[str, Any] | BaseException | None] = [None] * len(requests)
        checked = []
        for n, fields in enumerate(requests):
            try:
                checked.append((n, recommending.check_fields(fields, self.config.index.max_k)))
            except CALLER_ERRORS as exc:
                out[n] = exc
        async with self.swaps.serving():
            space = (await self.swaps.current() or {}).get("version")
            moved_by = self.models.name  # of that space: a swap waits for this call
            cold = None
            if any(self.store.get(f[0]) is None for _, f in checked):
                cold = await self._cold_start_vector()
            planned = []
            for n, fields in checked:  # no await from here to the search: each reads one state of its user
                try:
                    planned.append((n, recommending.plan(self.store, self.config, fields, cold)))
                except CALLER_ERRORS as exc:
                    out[n] = exc
            t1 = time.perf_counter()
            results = await self.search.search_parcel([p.request for _, p in planned]) if planned else []
            search_ms = (time.perf_counter() - t1) * 1000
        for (n, p), result in zip(planned, results):
            out[n] = answer = recommending.answer(p, result, self.store, self._fresh, space)
            if answer["freshness_ms"] is not None:
                metrics.feedback_freshness_ms().observe(answer["freshness_ms"])
        timing = {"user_ms": (time.perf_counter() - t0) * 1000, "search_ms": search_ms}
        for answer in out:
            if isinstance(answer, dict):
                answer["timing"] = timing
                answer["user_model"] = moved_by
        return out  # type: ignore[return-value]

    # ----- model swap (rayrec.system.model_swap runs the steps; rayrec.users.swap_state holds the state) -----
    def _space_checked(self) -> None:
        """After the state was checked against the router's space: a swap may have come between."""
        self._shards = None  # it retired the shards searched before: ask for the new ones
        self.items.forget(None)  # and the item vectors kept are of the old space

    async def pause(self, swap: str, space: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Holds every call until resume(swap), once those in flight finish; checks users can move to space.

        With storage, first records the state and its space in a snapshot (a restart after the switch
        then knows its state is in the old space). If resume does not come within timeout_s, the pause
        ends by itself unless the router is still switching (see SwapState.pause).

        Returns {"cannot_move": some users that cannot be placed in space (set by a raw vector, or by a
        text embedding of another encoder), "cannot_move_count"}.
        """
        if self.swaps.paused is not None:
            raise LayoutChangedError("this user actor is paused for another model swap")
        text_dim = await self.models.prepare(space)  # also: the model and its user model are readable here
        await self.swaps.pause(swap, timeout_s)
        users = self.models.cannot_move(text_dim)  # once the calls in flight finished
        return {"cannot_move": users[:10], "cannot_move_count": len(users)}

    async def resume(self, swap: str) -> dict[str, Any]:
        """Ends swap's pause; every user re-derived first if the router switched space (see SwapState.resume).

        Returns {"resumed": whether this swap's pause was ended, "users": users re-derived}.
        """
        try:
            return await self.swaps.resume(swap)
        finally:
            self.models.release()  # used since the switch, or not needed (the swap was aborted)

    async def count(self) -> int:
        """Users held by this actor."""
        return len(self.store)

    async def info(self) -> dict[str, Any]:
        """Partition, users, whether durable, changes replayed from the log at the last start, and which user
        model moves the users (of the item space they are in: checked with the router first, unless paused)."""
        if self.swaps.paused is None:
            await self.swaps.ensure()
        return {
            "partition": int(self._partition),
            "users": len(self.store),
            "durable": self.durable.journal is not None,
            "recovered_changes": self.durable.recovered_changes,
            "search_batches": self.search.batches_run,  # fan-outs to the shards this actor made itself
            "item_vectors_kept": len(self.items),
            "item_vector_hits": self.items.hits,
            "item_vector_misses": self.items.misses,
            "user_model": self.models.name,  # "sequential", or "rule"
            "user_model_error": self.models.error,  # why a user model due is not in use
        }


UserVectorActor = ray.remote(UserVectors)
