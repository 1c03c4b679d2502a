"""The replay protocol: for each replayed positive event, score the policy's top-k first, then feed it the event.

Every policy sees the same events in the same order, with the same items
excluded (all the user interacted with before, history included). A policy
that has nothing for a user yet (a cold user) answers None and gets the
popularity list of that moment, the same way in every policy.
"""

from __future__ import annotations

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


class BatchPolicy(Protocol):
    """A policy asked for many users at once: one answer per (user, k, seen) request, None for a user it has
    nothing for; observe_many gets events in time order (several per user, their order kept)."""

    name: str

    async def recommend_many(self, requests: list[tuple[str, int, set[int]]]) -> list[list[int] | None]: ...

    async def observe_many(self, events: list[Event]) -> None: ...


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


async def run_in_rounds(
    history: list[Event],
    replay: list[Event],
    index: dict[str, int],
    policy: BatchPolicy,
    cold: dict[int, list[int]],
    progress: Callable[[int], None] | None = None,
) -> Scored:
    """The same protocol for a policy whose state is per user (rayrec's), users in lockstep: round r feeds
    every user the events since their last scored one (one observe_many), then scores every user's next
    positive together (one recommend_many). Each user's events stay in time order and users do not share
    state, so the answers equal run_in_order's; the calls number about twice the most positives any one
    user has, whatever the number of users.

    cold: the popularity list of each scored event (from run_in_order), for cold users.
    """
    seen = initial_seen(history, index)
    timelines: dict[str, list[int]] = {}
    for pos, event in enumerate(replay):
        timelines.setdefault(event.user, []).append(pos)
    cursor = dict.fromkeys(timelines, 0)  # per user: their next event not yet observed
    ranks: dict[int, int] = {}
    tops: dict[int, list[int]] = {}
    while cursor:
        feed: list[Event] = []
        asks: list[tuple[str, int]] = []  # (user, position of the positive event to score)
        for user, at in list(cursor.items()):
            line = timelines[user]
            if at < len(line) and line[at] in ranks:  # scored last round: now it may be observed
                feed.append(replay[line[at]])
                at += 1
            while at < len(line) and not replay[line[at]].positive:
                feed.append(replay[line[at]])
                at += 1
            if at < len(line):
                asks.append((user, line[at]))
                cursor[user] = at
            else:
                del cursor[user]
        if feed:
            await policy.observe_many(feed)
            for event in feed:
                seen.setdefault(event.user, set()).add(index[event.item])
        warm = [(user, pos) for user, pos in asks if seen.get(user)]
        answers = await policy.recommend_many([(user, K, seen[user]) for user, _ in warm]) if warm else []
        got = {pos: top for (_, pos), top in zip(warm, answers, strict=True)}
        for _, pos in asks:
            top = got.get(pos)
            top = cold[pos] if top is None else top
            ranks[pos] = _rank(top, index[replay[pos].item])
            tops[pos] = top[:10]
        if progress is not None:
            progress(len(feed))
    order = sorted(ranks)
    return Scored(
        [replay[p].user for p in order], np.array([ranks[p] for p in order], dtype=np.int64), [tops[p] for p in order]
    )


class InRounds:
    """An in-process policy behind the batch interface (to check run_in_rounds against run_in_order)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.name = policy.name

    async def recommend_many(self, requests: list[tuple[str, int, set[int]]]) -> list[list[int] | None]:
        return [self.policy.recommend(user, k, set(seen)) for user, k, seen in requests]

    async def observe_many(self, events: list[Event]) -> None:
        for event in events:
            self.policy.observe(event)
