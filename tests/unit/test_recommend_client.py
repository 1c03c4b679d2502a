"""RecommendClient over fake user actors (plain async objects), without Ray.

What the ingress relies on: each request reaches the actor that holds its user, answers come back in
the callers' order with errors kept per request, and concurrent requests for one actor share calls.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rayrec.exceptions import InvalidInputError
from rayrec.hashing import partition_of
from rayrec.users.client import RecommendClient


class FakeUserActor:
    """`actor.recommend_many.remote(flat)` answers each request with its user and k; user 'bad' fails alone."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.calls: list[int] = []  # requests per call
        self.recommend_many = self

    def remote(self, flat: list[Any]) -> Any:
        return self._answer(flat)

    async def _answer(self, flat: list[Any]) -> list[Any]:
        self.calls.append(len(flat))
        await asyncio.sleep(0.01)  # the answer comes later, as from another process
        return [
            InvalidInputError("user id 'bad' refused")
            if f[0] == "bad"
            else {"user_id": f[0], "k": f[1], "actor": self.number}
            for f in flat
        ]


def fields(user: str, k: int = 5) -> tuple[Any, ...]:
    return (user, k, False, None, None)


def test_each_request_reaches_the_actor_holding_its_user_in_order() -> None:
    actors = [FakeUserActor(n) for n in range(3)]
    client = RecommendClient(actors)
    users = [f"u{n}" for n in range(30)] + ["bad"]
    out = asyncio.run(client.recommend_many([fields(u, k=n + 1) for n, u in enumerate(users)]))
    for n, (user, got) in enumerate(zip(users, out)):
        if user == "bad":
            assert isinstance(got, InvalidInputError)
        else:
            assert got == {"user_id": user, "k": n + 1, "actor": partition_of(user, 3)}
    # one call per actor concerned
    assert sorted(len(a.calls) for a in actors) == [1, 1, 1]
    assert sum(sum(a.calls) for a in actors) == len(users)


def test_concurrent_recommendations_share_calls_and_keep_errors_apart() -> None:
    actor = FakeUserActor(0)
    client = RecommendClient([actor])

    async def many() -> list[Any]:
        return await asyncio.gather(
            *(client.recommend(fields(u)) for u in [f"u{n}" for n in range(40)] + ["bad"]), return_exceptions=True
        )

    out = asyncio.run(many())
    assert [o["user_id"] for o in out[:40]] == [f"u{n}" for n in range(40)]
    assert isinstance(out[40], InvalidInputError)
    assert sum(actor.calls) == 41
    assert client.calls_sent == len(actor.calls) < 41 // 2  # coalesced: far fewer calls than requests


def test_a_failed_call_fails_only_the_requests_it_carried() -> None:
    class Down(FakeUserActor):
        async def _answer(self, flat: list[Any]) -> list[Any]:
            raise ConnectionError("actor died")

    client = RecommendClient([Down(0), FakeUserActor(1)])
    users = [f"u{n}" for n in range(12)]
    out = asyncio.run(client.recommend_many([fields(u) for u in users]))
    for user, got in zip(users, out):
        if partition_of(user, 2) == 0:
            assert isinstance(got, ConnectionError)
        else:
            assert got["user_id"] == user
    with pytest.raises(ConnectionError):
        asyncio.run(client.recommend(fields(next(u for u in users if partition_of(u, 2) == 0))))
