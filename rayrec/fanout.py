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


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def call_with_retry(call: Callable[[], Awaitable[T]], timeout_s: float, retries: int) -> T:
    """Awaits call() within timeout_s, calling again up to `retries` times on failure.

    A caller error (bad input) is raised at once, as the actor raised it; other
    errors are retried. Raises the last error, or TimeoutError when the last
    try missed the deadline.
    """
    for attempt in range(retries + 1):
        try:
            return await asyncio.wait_for(_await(call()), timeout_s)
        except asyncio.TimeoutError:
            if attempt == retries:
                raise TimeoutError(f"no answer within {timeout_s:g} s ({retries + 1} tries)") from None
        except Exception as exc:
            cause = root_cause(exc)
            if isinstance(cause, CALLER_ERRORS):
                raise cause from None
            if attempt == retries:
                raise
    raise AssertionError("unreachable")


async def fan_out(calls: Sequence[Callable[[], Awaitable[T]]], timeout_s: float, retries: int) -> FanOutResult[T]:
    """Runs every call concurrently, each with its own deadline and retries."""
    outcomes = await asyncio.gather(
        *(call_with_retry(c, timeout_s, retries) for c in calls), return_exceptions=True
    )
    result: FanOutResult[T] = FanOutResult(results=[None] * len(calls))
    for i, out in enumerate(outcomes):
        if isinstance(out, asyncio.CancelledError):
            raise out
        if isinstance(out, BaseException):
            result.errors[i] = out
        else:
            result.results[i] = out
    return result


class Coalescer(Generic[T, R]):
    """Turns concurrent submit() calls into batched runs.

    Requests queue while a batch is in flight; the next batch takes everything
    queued (up to max_size). No timer: a lone request is sent at once, and under
    load batches grow by themselves.
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
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await future

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
            await asyncio.sleep(0)  # let requests that arrive in this tick join the batch
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
                    if not fut.done():
                        fut.set_result(res)
        finally:
            self._in_flight -= 1
