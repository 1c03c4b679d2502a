"""Concurrent calls with a deadline and retries, and coalescing of concurrent requests."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rayrec.exceptions import CALLER_ERRORS, root_cause

T = TypeVar("T")
R = TypeVar("R")


def describe(exc: BaseException) -> str:
    """One line naming an error: its type and the last line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"


@dataclass(slots=True)
class FanOutResult(Generic[T]):
    """Per target, its answer (None where it failed), and the error of each failed target."""

    results: list[T | None]
    errors: dict[int, BaseException] = field(default_factory=dict)

    @property
    def failed(self) -> list[int]:
        return sorted(self.errors)

    def caller_error(self) -> BaseException | None:
        """The first error that blames the request rather than a target, if any."""
        for i in sorted(self.errors):
            if isinstance(self.errors[i], CALLER_ERRORS):
                return self.errors[i]
        return None


def _start(call: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
    """Starts a call; returns a future of its answer.

    A Ray ObjectRef gives its future directly (no wrapper task). A call that
    raises while being started (a dead handle, say) gives a failed future.
    """
    try:
        awaitable = call()
    except Exception as exc:
        failed: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed
    future = getattr(awaitable, "future", None)  # ray.ObjectRef.future(): a concurrent.futures.Future
    if callable(future):
        return asyncio.wrap_future(future())
    return asyncio.ensure_future(awaitable)


async def fan_out(
    calls: Sequence[Callable[[], Awaitable[T]]],
    timeout_s: float,
    retries: int,
) -> FanOutResult[T]:
    """Runs every call concurrently under one deadline per round; failed calls are retried.

    Each round starts the calls still owed an answer and waits at most
    timeout_s for them. A call that raised a caller error (bad input) is not
    retried; other failures and late answers are, up to `retries` more rounds.
    Only the wait for a late call ends: a Ray actor call goes on to its end
    (ray.cancel of actor calls stalls the actor; see ReplicaSet._one).
    """
    result: FanOutResult[T] = FanOutResult(results=[None] * len(calls))
    todo = list(range(len(calls)))
    for attempt in range(retries + 1):
        if not todo:
            break
        futures = {i: _start(calls[i]) for i in todo}
        done, _ = await asyncio.wait(futures.values(), timeout=timeout_s)
        todo = []
        for i, fut in futures.items():
            if fut not in done:
                fut.cancel()
                result.errors[i] = TimeoutError(f"no answer within {timeout_s:g} s ({attempt + 1} tries)")
                todo.append(i)
            elif fut.cancelled():
                result.errors[i] = asyncio.CancelledError("the call was cancelled")
                todo.append(i)
            elif fut.exception() is not None:
                cause = root_cause(fut.exception())
                if isinstance(cause, CALLER_ERRORS):
                    result.errors[i] = cause
                else:
                    result.errors[i] = fut.exception()  # type: ignore[assignment]
                    todo.append(i)
            else:
                result.results[i] = fut.result()
                result.errors.pop(i, None)
        if not todo:
            break
    return result


class Coalescer(Generic[T, R]):
    """Turns concurrent submit() calls into batched runs.

    Requests queue while a batch is in flight; the next batch takes everything
    queued (up to max_size). No timer: a lone request is sent at once, and under
    load batches grow by themselves. run returns one result per request; a
    result that is an exception is raised to that request's caller alone.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R]]],
        max_size: int,
        size_of: Callable[[T], int] = lambda _: 1,
        max_in_flight: int = 1,
    ) -> None:
        if max_size <= 0 or max_in_flight <= 0:
            raise ValueError("max_size and max_in_flight must be >= 1")
        self._run = run
        self._max_size = max_size
        self._size_of = size_of
        self._max_in_flight = max_in_flight
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._in_flight = 0
        self.batches_run = 0

    async def submit(self, request: T) -> R:
        if not self._queue and self._in_flight < self._max_in_flight:
            # Nothing waiting: run this request at once, in the caller's task.
            self._in_flight += 1
            self.batches_run += 1
            try:
                results = await self._run([request])
            finally:
                self._in_flight -= 1
                self._kick()
            if len(results) != 1:
                raise RuntimeError(f"batch run returned {len(results)} results for 1 request")
            if isinstance(results[0], BaseException):
                raise results[0]
            return results[0]
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._kick()
        return await future

    def _kick(self) -> None:
        """Starts a drain task when requests wait and a batch slot is free."""
        if self._queue and self._in_flight < self._max_in_flight:
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._drain())

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch = [self._queue.popleft()]
        size = self._size_of(batch[0][0])
        while self._queue and size + self._size_of(self._queue[0][0]) <= self._max_size:
            item = self._queue.popleft()
            size += self._size_of(item[0])
            batch.append(item)
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                self.batches_run += 1
                try:
                    results = await self._run([req for req, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"batch run returned {len(results)} results for {len(batch)} requests")
                except Exception as exc:  # every caller of the batch sees the error
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), res in zip(batch, results):
                    if fut.done():
                        continue
                    if isinstance(res, BaseException):  # this request alone failed
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
        finally:
            self._in_flight -= 1
