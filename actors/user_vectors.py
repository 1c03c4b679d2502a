"""UserVectorActor: one partition of users, updated in real time by feedback."""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from rayrec import constants as C
from rayrec.config import RayrecConfig
from rayrec.exceptions import LayoutChangedError
from rayrec.users.catalog_reads import CatalogReads
from rayrec.users.item_cache import ItemVectorCache
from rayrec.users.model_switch import ModelSwitch
from rayrec.users.recommending import Fields
from rayrec.users.swap_state import SwapState
from rayrec.users.user_journal import UserJournal
from rayrec.users.user_reads import UserReads
from rayrec.users.user_state import UserStore
from rayrec.users.user_writes import UserWrites


class UserVectors:
    """The users of one partition; recommends by searching the shards itself.

    Plain collaborators in rayrec.users, composed: the users (UserStore), the write path (UserWrites:
    feedback, set vectors and histories, erasure, one user at a time), the read path (UserReads:
    recommendations, a user's state), the catalog as read from here (CatalogReads: the shards searched,
    item vectors kept for feedback, the catalog mean), the durability (UserJournal: with storage, a change
    is logged before it applies; a restarted actor recovers its snapshot plus the log after it) and a model
    swap's state (SwapState, ModelSwitch). The router stays the control plane (layout, item writes, the
    catalog mean): ingress -> user actor -> shards. UserVectorActor is this class as a Ray async actor.
    """

    def __init__(self, config: RayrecConfig, router: Any, partition: int = 0, require_shared: bool = False) -> None:
        self.router = router
        self.store = UserStore(config.index.dim, config.feedback)
        # Item vectors for feedback, dropped by the router before it acknowledges a write of the item.
        self.items = ItemVectorCache(C.ITEM_VECTOR_CACHE_SIZE, C.ITEM_VECTOR_CACHE_TTL_S)
        self.catalog = CatalogReads(config, router, self.items)
        # Which user model moves the users: the configured one, until the item space they are in names its own
        # (a model swap to or from a sequential version; rayrec.users.model_switch).
        self.models = ModelSwitch(config.user_model, config.index.dim, self.store,
                                  lambda item_ids: self.catalog.vectors_of(item_ids, False),
                                  self.catalog.cold_start_vector)
        locks = [asyncio.Lock() for _ in range(C.USER_LOCK_STRIPES)]  # per user stripe: writes and snapshots
        self._partition = str(partition)
        # Model swaps: the item space the vectors are in, and the pause a swap holds (rayrec.users.swap_state).
        self.swaps = SwapState(
            ask_space=lambda: self.router.item_space.remote(),
            rederive=self.models.rederive,
            snapshot=self.snapshot,
            swap_pending=lambda swap: self.router.swap_pending.remote(swap),
            checked=self.catalog.space_checked,
            recovered=config.storage is not None,
            adopt=self.models.adopt,
        )
        # Durability (with storage): the log each change is written to first, snapshots, recovery.
        self.durable = UserJournal(config, self._partition, self.store, locks, self.swaps.version, require_shared)
        if self.durable.journal is not None:
            self.swaps.recorded = self.durable.recover()
        # Per user, when the feedback behind their current vector arrived, until a
        # recommendation uses that vector (the feedback freshness metric).
        fresh: dict[str, float] = {}
        self.writes = UserWrites(self.store, self.durable, locks, self.swaps, self.catalog, fresh, self._partition)
        self.reads = UserReads(config, self.store, self.catalog, self.swaps, self.models, fresh)

    async def snapshot(self) -> None:
        """Writes every user to storage and drops the log it covers (no-op without storage; UserJournal)."""
        await self.durable.snapshot()

    def forget_items(self, item_ids: list[str] | None) -> int:
        """Drops kept item vectors (None: all): the router calls it for every item write before acknowledging
        it, and after a model swap's switch. Returns how many were kept."""
        return self.items.forget(item_ids)

    # ----- writes (rayrec.users.user_writes) -----
    async def feedback(
        self, user_id: Any, item_id: Any, event: str, event_id: str | None = None, arrived_at: float | None = None
    ) -> dict[str, Any]:
        """Applies one event to the user's vector: {"user_id", "version", "applied"} (UserWrites.feedback)."""
        return await self.writes.feedback(user_id, item_id, event, event_id, arrived_at)

    async def feedback_many(
        self, events: list[Fields], last_only: bool = False
    ) -> list[dict[str, Any] | BaseException]:
        """Several events in one call: per event, feedback's answer or its own error (UserWrites.feedback_many)."""
        return await self.writes.feedback_many(events, last_only)

    async def set_vector(
        self, user_id: Any, vector: Any, event_id: str | None = None, source: Any = None, space: str | None = None
    ) -> dict[str, Any]:
        """Sets a user's interest vector directly (UserWrites.set_vector)."""
        return await self.writes.set_vector(user_id, vector, event_id, source, space)

    async def set_history(self, user_id: Any, item_ids: Any, event_id: str | None = None) -> dict[str, Any]:
        """Sets a user from the items they engaged with, oldest first (UserWrites.set_history)."""
        return await self.writes.set_history(user_id, item_ids, event_id)

    async def set_histories(self, histories: dict[str, list[str]]) -> int:
        """Sets many users from their histories; returns how many were set (UserWrites.set_histories)."""
        return await self.writes.set_histories(histories)

    async def delete_user(self, user_id: Any) -> dict[str, Any]:
        """Erases a user, from every file with storage: {"user_id", "deleted"} (UserWrites.delete_user)."""
        return await self.writes.delete_user(user_id)

    # ----- reads (rayrec.users.user_reads) -----
    async def export_user(self, user_id: Any) -> dict[str, Any] | None:
        """Everything this actor keeps about a user (UserState.export), or None if unknown."""
        return await self.reads.export_user(user_id)

    async def get(self, user_id: Any) -> dict[str, Any] | None:
        """The user's state (vector, version, history, updated_at), or None if unknown."""
        return await self.reads.get(user_id)

    async def recommend(
        self,
        user_id: Any,
        k: int,
        exclude_seen: bool = True,
        categories: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> dict[str, Any]:
        """Top-k items for a user; an unknown user gets the items nearest the catalog mean. The answer is one
        request's of recommend_many (see UserReads.recommend_many for its fields); its error is raised."""
        out = (await self.reads.recommend_many([(user_id, k, exclude_seen, categories, exclude)]))[0]
        if isinstance(out, BaseException):
            raise out
        return out

    async def recommend_many(self, requests: list[Fields]) -> list[dict[str, Any] | BaseException]:
        """Several recommendations in one batched fan-out: per request (user_id, k, exclude_seen, categories,
        exclude), its answer or the error it alone caused (UserReads.recommend_many)."""
        return await self.reads.recommend_many(requests)

    # ----- model swap (rayrec.system.model_swap runs the steps; rayrec.users.swap_state holds the state) -----
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
            "search_batches": self.catalog.search.batches_run,  # fan-outs to the shards this actor made itself
            "item_vectors_kept": len(self.items),
            "item_vector_hits": self.items.hits,
            "item_vector_misses": self.items.misses,
            "user_model": self.models.name,  # "sequential", or "rule"
            "user_model_error": self.models.error,  # why a user model due is not in use
        }


UserVectorActor = ray.remote(UserVectors)
