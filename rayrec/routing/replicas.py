"""The replicas of one shard: a read goes to one live replica, a write to every replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rayrec.exceptions import CALLER_ERRORS, root_cause


def cancel_call(ref: Any) -> None:
    """Cancels a Ray call nobody waits for any more (late, or hedged away), so work does not pile up."""
    try:
        import ray

        ray.cancel(ref)
    except Exception:  # already finished, or not a Ray call: nothing to cancel
        pass


class ReplicaSet:
    """Handles of one shard's replicas (each an actor holding the same items).

    Reads rotate over the replicas, skipping one that recently failed or was
    late ("suspect") for suspect_s; a read not answered within hedge_s is also
    sent to the next replica and the first answer wins, so a replica on a lost
    node (whose calls hang until Ray notices) delays reads by hedge_s at most
    once. Writes go to every replica and return when all have applied them
    (each durably, with storage); a replica Ray is restarting makes them wait.
    """

    def __init__(self, handles: list[Any], suspect_s: float, hedge_s: float) -> None:
        if not handles:
            raise ValueError("a shard needs at least one replica")
        self.handles = list(handles)
        self.suspect_s = suspect_s
        self.hedge_s = hedge_s
        self._turn = 0
        self._suspect_until = [0.0] * len(handles)

    def _pick(self, avoid: int | None = None) -> int:
        """The next replica in turn that is not suspect (if all are, the one cleared soonest)."""
        now = time.monotonic()
        n = len(self.handles)
        order = [(self._turn + step) % n for step in range(n)]
        healthy = [r for r in order if self._suspect_until[r] <= now and r != avoid]
        if healthy:
            chosen = healthy[0]
        else:
            chosen = min((r for r in order if r != avoid), key=self._suspect_until.__getitem__, default=order[0])
        self._turn = (chosen + 1) % n
        return chosen

    def pick_handle(self) -> Any:
        """The handle of the replica the next read would go to."""
        return self.handles[self._pick()]

    def suspect(self, replica: int) -> None:
        self._suspect_until[replica] = time.monotonic() + self.suspect_s

    def read(self, method: str, *args: Any) -> Callable[[], Awaitable[Any]]:
        """A call factory for one read: every call (a fan-out retry, say) picks a replica anew."""
        if len(self.handles) == 1:
            handle = self.handles[0]
            return lambda: getattr(handle, method).remote(*args)
        return lambda: self._hedged(method, args)

    async def _one(self, replica: int, method: str, args: tuple[Any, ...]) -> Any:
        ref = getattr(self.handles[replica], method).remote(*args)
        try:
            return await ref
        except asyncio.CancelledError:
            cancel_call(ref)
            raise
        except Exception as exc:
            if not isinstance(root_cause(exc), CALLER_ERRORS):
                self.suspect(replica)
            raise

    async def _hedged(self, method: str, args: tuple[Any, ...]) -> Any:
        first = self._pick()
        tasks = {asyncio.ensure_future(self._one(first, method, args))}
        hedged = False
        last: BaseException | None = None
        try:
            while tasks:
                done, _ = await asyncio.wait(
                    tasks, timeout=None if hedged else self.hedge_s, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    tasks.discard(task)
                    if task.exception() is None:
                        return task.result()
                    last = task.exception()
                    if isinstance(root_cause(last), CALLER_ERRORS):
                        raise last
                if not hedged and not (done and tasks):  # the first replica is late or failed
                    if not done:
                        self.suspect(first)  # late: other replicas answer this read and the next ones
                    hedged = True
                    tasks.add(asyncio.ensure_future(self._one(self._pick(avoid=first), method, args)))
            assert last is not None
            raise last
        finally:
            for task in tasks:
                task.cancel()

    def write(self, method: str, *args: Any) -> Callable[[], Awaitable[Any]]:
        """A call factory for one write to every replica; its answer is the first replica's."""
        if len(self.handles) == 1:
            handle = self.handles[0]
            return lambda: getattr(handle, method).remote(*args)

        async def everywhere() -> Any:
            answers = await asyncio.gather(*(getattr(h, method).remote(*args) for h in self.handles))
            return answers[0]

        return everywhere
