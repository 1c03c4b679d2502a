"""Fake actor handles for the unit tier: plain async objects around plain classes, without Ray.

`handle.method.remote(*args)` gives an awaitable of `obj.method(*args)` (awaited too, for an async method),
answered after one turn of the event loop (as from another process), or failing as the test says. Arguments
that are awaitable (another fake call's answer, or what an `.options(num_returns=n)` call gave, standing for
object refs) are awaited first, as Ray resolves refs passed as arguments.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


class FakeMethod:
    def __init__(self, handle: FakeHandle, name: str, num_returns: int = 1) -> None:
        self.handle, self.name, self.num_returns = handle, name, num_returns

    def options(self, num_returns: int = 1, **_: Any) -> FakeMethod:
        return FakeMethod(self.handle, self.name, num_returns)

    def remote(self, *args: Any) -> Any:
        if self.num_returns == 1:
            return self.handle.call(self.name, args)
        whole = asyncio.ensure_future(self.handle.call(self.name, args))
        loop = asyncio.get_running_loop()
        parts = [loop.create_future() for _ in range(self.num_returns)]
        whole.add_done_callback(lambda done: _deal(done, parts))
        return parts


def _deal(done: asyncio.Future[Any], parts: list[asyncio.Future[Any]]) -> None:
    """One call's list of answers, each to its own future (an error to all of them)."""
    if done.cancelled():
        for part in parts:
            part.cancel()
        return
    if done.exception() is not None:
        for part in parts:
            part.set_exception(done.exception())
        return
    for part, value in zip(parts, done.result(), strict=True):
        part.set_result(value)


class FakeHandle:
    """An actor handle over a plain object; counts calls per method; fails every call while `fail` is set."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.calls = 0
        self.by_method: dict[str, int] = {}
        self.fail: BaseException | None = None

    def __getattr__(self, name: str) -> FakeMethod:
        if name.startswith("__"):
            raise AttributeError(name)
        return FakeMethod(self, name)

    async def call(self, name: str, args: tuple[Any, ...]) -> Any:
        self.calls += 1
        self.by_method[name] = self.by_method.get(name, 0) + 1
        await asyncio.sleep(0)
        if self.fail is not None:
            for arg in args:  # another call's answer, never to be read now
                if inspect.iscoroutine(arg):
                    arg.close()
            raise self.fail
        args = tuple([await a if inspect.isawaitable(a) else a for a in args])
        answer = getattr(self.obj, name)(*args)
        return await answer if inspect.isawaitable(answer) else answer


async def turns(n: int = 50) -> None:
    """Lets every ready task run for n turns of the event loop (a fake answers in one): what has not
    finished by then waits on something, with no wall-clock time involved."""
    for _ in range(n):
        await asyncio.sleep(0)


async def until(check: Callable[[], bool], timeout_s: float = 5.0, what: str = "the condition") -> None:
    """Returns once check() holds (it may need real time: a timer); fails after timeout_s."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"{what} did not hold within {timeout_s:g} s"
        await asyncio.sleep(0.005)


async def retire_only(generation: Any, timeout_s: float) -> None:
    """A fake generation's stop (Topology's stop): each replica refuses calls from now on; no process to kill."""
    await asyncio.wait_for(asyncio.gather(*(h.retire.remote() for h in generation.handles)), timeout_s)
