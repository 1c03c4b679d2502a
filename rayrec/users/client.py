"""RecommendClient: one process's concurrent recommendations, coalesced into few calls per user actor."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from rayrec import constants as C
from rayrec.hashing import partition_of
from rayrec.routing.fanout import Coalescer
from rayrec.users.recommending import Fields


class RecommendClient:
    """Sends recommendations to the user actors that hold the users (the ingress's side of the read path).

    Each Ray call costs about a millisecond of CPU on each side, so the concurrent requests bound for
    one user actor travel together: while a call is at the actor, new ones queue and leave as the
    next single call (a lone request is sent at once), and the actor searches them as one batch.
    """

    def __init__(self, actors: Sequence[Any], max_batch: int = C.DEFAULT_MAX_BATCH_QUERIES) -> None:
        self._actors = list(actors)
        self._coalescers: list[Coalescer[list[Fields], list[Any]]] = [
            Coalescer(
                lambda parcels, a=actor: self._send(a, parcels),
                max_size=max_batch,
                size_of=len,
                max_in_flight=C.CLIENT_BATCHES_IN_FLIGHT,
            )
            for actor in self._actors
        ]

    @property
    def calls_sent(self) -> int:
        """User actor calls made so far (fewer than requests under concurrency)."""
        return sum(c.batches_run for c in self._coalescers)

    def partition_of(self, user_id: str) -> int:
        return partition_of(user_id, len(self._actors))

    async def recommend(self, fields: Fields) -> dict[str, Any]:
        """One recommendation (fields as UserVectors.recommend_many takes them); raises its own error."""
        out = (await self._coalescers[self.partition_of(str(fields[0]))].submit([fields]))[0]
        if isinstance(out, BaseException):
            raise out
        return out

    async def recommend_many(self, requests: Sequence[Fields]) -> list[dict[str, Any] | BaseException]:
        """Many recommendations, one call per user actor concerned; per request its answer or its own error."""

        parts: dict[int, list[int]] = {}
        for n, fields in enumerate(requests):
            parts.setdefault(self.partition_of(str(fields[0])), []).append(n)
        answers = await asyncio.gather(
            *(self._coalescers[p].submit([requests[n] for n in pos]) for p, pos in parts.items()),
            return_exceptions=True,
        )
        out: list[Any] = [None] * len(requests)
        for pos, got in zip(parts.values(), answers):
            for m, n in enumerate(pos):
                # a call that failed whole (the actor died) fails the requests it carried, not the others
                out[n] = got if isinstance(got, BaseException) else got[m]
        return out

    @staticmethod
    async def _send(actor: Any, parcels: list[list[Fields]]) -> list[list[Any]]:
        flat = [fields for parcel in parcels for fields in parcel]
        answers = await actor.recommend_many.remote(flat)
        out, start = [], 0
        for parcel in parcels:
            out.append(answers[start : start + len(parcel)])
            start += len(parcel)
        return out
