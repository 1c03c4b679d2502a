"""A user actor's write path without Ray: feedback, set vectors and histories, erasure, one user at a time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from rayrec import metrics
from rayrec.exceptions import CALLER_ERRORS, InvalidInputError
from rayrec.hashing import stable_hash
from rayrec.system.model_swap import SpaceChangedError
from rayrec.users.catalog_reads import CatalogReads
from rayrec.users.feedback_batch import UserEvents, group_by_user
from rayrec.users.recommending import Fields
from rayrec.users.swap_state import SwapState
from rayrec.users.user_journal import UserJournal
from rayrec.users.user_state import UserChange, UserStore
from rayrec.validation import check_event, check_history, check_id


class UserWrites:
    """The changes to one partition's users (actors/user_vectors.py delegates each write here).

    Changes to one user run one at a time, in arrival order (a lock per user stripe, the same locks a
    snapshot holds), and each finishes before its call returns, so the next recommend sees it
    (read-your-writes). A change is planned by the store, then made by the journal (logged durably
    first, with storage). Every call waits while a model swap holds the actor (swaps.serving).

    Args:
        store: the users. journal: logs and applies their changes (rayrec.users.user_journal).
        locks: the user lock stripes, shared with journal. swaps: the model swap's pause and item space.
        catalog: item vectors and the cold-start vector. fresh: per user, when the feedback behind their
            current vector arrived (shared with the read path, which reports it once). partition: for metrics.
    """

    def __init__(self, store: UserStore, journal: UserJournal, locks: list[asyncio.Lock], swaps: SwapState,
                 catalog: CatalogReads, fresh: dict[str, float], partition: str) -> None:
        self.store, self.journal, self.locks, self.swaps = store, journal, locks, swaps
        self.catalog, self.fresh, self.partition = catalog, fresh, partition

    def _lock(self, user_id: str) -> asyncio.Lock:
        return self.locks[stable_hash(user_id) % len(self.locks)]

    def _count_users(self) -> None:
        metrics.user_count().set(len(self.store), tags={"partition": self.partition})

    def _unchanged(self, user_id: str) -> dict[str, Any]:
        state = self.store.get(user_id)
        return {"user_id": user_id, "version": 0 if state is None else state.version, "applied": False}

    async def _make(self, user_id: str, change: UserChange | None) -> dict[str, Any]:
        """Logs (with storage) and applies a planned change; the caller holds the user's lock."""
        if change is None:  # its event id was applied before
            return self._unchanged(user_id)
        await self.journal.make(change)
        return {"user_id": user_id, "version": change.version, "applied": True}

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
            # The model computes the vector where it knows the item (no shard is asked); else the rule moves it.
            vector = self.store.by_model.vector(user_id, [(item_id, event)])
            out = await self._feedback_with(user_id, item_id, event, event_id, vector)
            self.fresh[user_id] = time.time() if arrived_at is None else float(arrived_at)
        self._count_users()
        return out

    async def _feedback_with(
        self, user_id: str, item_id: str, event: str, event_id: str | None, vector: np.ndarray | None
    ) -> dict[str, Any]:
        """Plans, logs and applies one checked event, the model's vector already computed (None: the rule moves
        the user by the item's vector); the caller holds the user's lock."""
        x = start = None
        if vector is None:
            x = (await self.catalog.item_vector(item_id))[0]
            start = None if self.store.get(user_id) is not None else await self.catalog.cold_start_vector()
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
                        self.fresh[user_id] = time.time()
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
            vectors, _ = await self.catalog.vectors_of(item_ids)
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
        vectors, found = await self.catalog.vectors_of(unique, False)
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
                self.fresh.pop(user_id, None)
            if existed:
                await self.journal.snapshot()
        self._count_users()
        return {"user_id": user_id, "deleted": existed}
