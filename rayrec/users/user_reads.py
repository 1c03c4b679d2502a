"""A user actor's read path without Ray: recommendations (one batched search per call) and a user's state."""

from __future__ import annotations

import time
from typing import Any

from rayrec import metrics
from rayrec.config import RayrecConfig
from rayrec.exceptions import CALLER_ERRORS
from rayrec.users import recommending
from rayrec.users.catalog_reads import CatalogReads
from rayrec.users.model_switch import ModelSwitch
from rayrec.users.recommending import Fields
from rayrec.users.swap_state import SwapState
from rayrec.users.user_state import UserStore
from rayrec.validation import check_id


class UserReads:
    """What one partition's users are asked (actors/user_vectors.py delegates each read here).

    A recommendation runs ingress -> user actor -> shards: the user's vector is read here and searched
    over the shards by catalog (rayrec.users.catalog_reads). Every call waits while a model swap holds
    the actor (swaps.serving), so one item space answers it.

    Args:
        config: the system's settings (index dim, max_k). store: the users. catalog: searches and the
            cold-start vector. swaps: the item space the users are in. models: which user model moves them.
        fresh: per user, when the feedback behind their current vector arrived (written by the write path;
            the first answer that uses that vector reports and drops it).
    """

    def __init__(self, config: RayrecConfig, store: UserStore, catalog: CatalogReads, swaps: SwapState,
                 models: ModelSwitch, fresh: dict[str, float]) -> None:
        self.config, self.store, self.catalog = config, store, catalog
        self.swaps, self.models, self.fresh = swaps, models, fresh

    async def get(self, user_id: Any) -> dict[str, Any] | None:
        """The user's state (vector, version, history, updated_at), or None if unknown."""
        user_id = check_id(user_id, "user id")
        async with self.swaps.serving():
            state = self.store.get(user_id)
            return None if state is None else state.as_dict(user_id)

    async def export_user(self, user_id: Any) -> dict[str, Any] | None:
        """Everything kept about a user (UserState.export), or None if unknown."""
        user_id = check_id(user_id, "user id")
        async with self.swaps.serving():
            state = self.store.get(user_id)
            return None if state is None else state.export(user_id)

    async def recommend_many(self, requests: list[Fields]) -> list[dict[str, Any] | BaseException]:
        """Top-k items for each of several users, searched as one batched fan-out (a single recommendation,
        an ingress's coalesced calls, or POST /recommend/batch); an unknown user gets the items nearest the
        catalog mean.

        Args:
            requests: per request (user_id, k, exclude_seen, categories, exclude).

        Returns:
            Per request, the error that request alone caused (bad input), or its answer:
            {"user_id", "items": [{"item_id", "score", metadata...}], "version"
            (of the vector used), "cold_start", "partial", "failed_shards", "space"
            (the item space's version: a model swap waits for this call, so one space answers it),
            "freshness_ms" (on the first answer that uses a feedback event's vector: ms since its arrival, else None),
            "timing" ({"user_ms": in this actor, "search_ms": of that, the fan-out and merge}), "user_model"}.
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
                cold = await self.catalog.cold_start_vector()
            planned = []
            for n, fields in checked:  # no await from here to the search: each reads one state of its user
                try:
                    planned.append((n, recommending.plan(self.store, self.config, fields, cold)))
                except CALLER_ERRORS as exc:
                    out[n] = exc
            t1 = time.perf_counter()
            results = await self.catalog.search.search_parcel([p.request for _, p in planned]) if planned else []
            search_ms = (time.perf_counter() - t1) * 1000
        for (n, p), result in zip(planned, results):
            out[n] = answer = recommending.answer(p, result, self.store, self.fresh, space)
            if answer["freshness_ms"] is not None:
                metrics.feedback_freshness_ms().observe(answer["freshness_ms"])
        timing = {"user_ms": (time.perf_counter() - t0) * 1000, "search_ms": search_ms}
        for answer in out:
            if isinstance(answer, dict):
                answer["timing"] = timing
                answer["user_model"] = moved_by
        return out  # type: ignore[return-value]
