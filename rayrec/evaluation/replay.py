"""The replay protocol: for each replayed positive event, score the policy's top-k first, then feed it the event.

Every policy sees the same events in the same order, with the same items
excluded (all the user interacted with before, history included). A policy
that has nothing for a user yet (a cold user) answers None and gets the
popularity list of that moment, the same way in every policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from rayrec.evaluation.baselines import Popularity
from rayrec.evaluation.data import Event
from rayrec.evaluation.metrics import MISS, Scored

K = 20  # the longest list scored (HR@20)


class Policy(Protocol):
    name: str

    def recommend(self, user: str, k: int, seen: set[int]) -> list[int] | None: ...

    def observe(self, event: Event) -> None: ...


class AsyncPolicy(Protocol):
    name: str

    async def recommend(self, user: str, k: int, seen: set[int]) -> list[int] | None: ...

    async def observe(self, event: Event) -> None: ...


def initial_seen(history: list[Event], index: dict[str, int]) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = {}
    for e in history:
        seen.setdefault(e.user, set()).add(index[e.item])
    return seen


def _rank(top: list[int], target: int) -> int:
    return top.index(target) + 1 if target in top else MISS


def run_in_order(
    history: list[Event],
    replay: list[Event],
    index: dict[str, int],
    policies: list[Policy],
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Scored], dict[int, list[int]]]:
    """Replays every event in time order against in-process policies (popularity always among them).

    Returns per policy its Scored answers, and per scored event (its position
    in replay) the popularity list shown then (the cold-start answer).
    """
    popularity = Popularity(index, history)
    everyone: list[Any] = [popularity, *policies]
    seen = initial_seen(history, index)
    ranks: dict[str, list[int]] = {p.name: [] for p in everyone}
    tops: dict[str, list[list[int]]] = {p.name: [] for p in everyone}
    users: list[str] = []
    cold: dict[int, list[int]] = {}
    for pos, event in enumerate(replay):
        mine = seen.setdefault(event.user, set())
        if event.positive:
            target = index[event.item]
            cold[pos] = popularity.recommend(event.user, K, mine)
            users.append(event.user)
            for policy in everyone:
                top = policy.recommend(event.user, K, mine) if mine else None
                top = cold[pos] if top is None else top
                ranks[policy.name].append(_rank(top, target))
                tops[policy.name].append(top[:10])
        for policy in everyone:  # only after scoring: no peeking at the event
            policy.observe(event)
        mine.add(index[event.item])
        if progress is not None:
            progress(1)
    scored = {name: Scored(users, np.array(ranks[name], dtype=np.int64), tops[name]) for name in ranks}
    return scored, cold


async def run_by_user(
    history: list[Event],
    replay: list[Event],
    index: dict[str, int],
    policy: AsyncPolicy,
    cold: dict[int, list[int]],
    concurrency: int = 32,
    progress: Callable[[int], None] | None = None,
) -> Scored:
    """The same protocol for a policy whose state is per user (rayrec's): users run concurrently, each
    user's events in time order, so the answers equal those of run_in_order's single loop.

    cold: the popularity list of each scored event (from run_in_order), for cold users.
    """
    seen = initial_seen(history, index)
    timelines: dict[str, list[int]] = {}
    for pos, event in enumerate(replay):
        timelines.setdefault(event.user, []).append(pos)
    ranks: dict[int, int] = {}
    tops: dict[int, list[int]] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one_user(user: str, positions: list[int]) -> None:
        mine = seen.setdefault(user, set())
        async with gate:
            for pos in positions:
                event = replay[pos]
                if event.positive:
                    top = await policy.recommend(user, K, mine) if mine else None
                    top = cold[pos] if top is None else top
                    ranks[pos] = _rank(top, index[event.item])
                    tops[pos] = top[:10]
                await policy.observe(event)
                mine.add(index[event.item])
                if progress is not None:
                    progress(1)

    await asyncio.gather(*(one_user(u, p) for u, p in timelines.items()))
    order = sorted(ranks)
    return Scored(
        [replay[p].user for p in order], np.array([ranks[p] for p in order], dtype=np.int64), [tops[p] for p in order]
    )


def as_async(policy: Policy) -> AsyncPolicy:
    """An in-process policy behind the async interface (to check run_by_user against run_in_order)."""

    class Wrapped:
        name = policy.name

        async def recommend(self, user: str, k: int, seen: set[int]) -> list[int] | None:
            await asyncio.sleep(0)  # let other users interleave, as Ray calls do
            return policy.recommend(user, k, seen)

        async def observe(self, event: Event) -> None:
            await asyncio.sleep(0)
            policy.observe(event)

    return Wrapped()


