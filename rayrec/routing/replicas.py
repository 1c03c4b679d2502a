"""The replicas of one shard: a read goes to one live replica, a write to every replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rayrec.exceptions import CALLER_ERRORS, ShardUnavailableError, root_cause
from rayrec.routing.fanout import describe

# The writes that change a shard's items: numbered per shard, so each replica's position says what it holds.
SEQUENCED = frozenset({"upsert", "delete", "clear", "commit_staged"})
# How long the router waits for a replica's write position (before a shard's first write) or for it to take
# the word that it is out of sync.
SYNC_TIMEOUT_S = 10.0
# (the replica set, the replicas that missed a write a peer applied, why): the router's marking and repair
OnDiverged = Callable[["ReplicaSet", list[int], str], Awaitable[None]]


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

    With several replicas, the writes that change items are numbered (SEQUENCED): each replica applies
    write n as its position n (Shard.write_at). A write that some replicas applied and others failed is
    acknowledged from those that applied it once the others are out of sync: marked so by on_diverged
    (the router marks them in storage, tells them, and repairs them from a peer), they get no reads and
    no writes until then. Before a shard's first write (and after one no replica acknowledged) the
    replicas' positions are asked; one behind the others is out of sync too.
    """

    def __init__(
        self,
        handles: list[Any],
        suspect_s: float,
        hedge_s: float,
        on_diverged: OnDiverged | None = None,
        where: Any = None,
    ) -> None:
        """where: what the owner needs to find this shard again (the router: its generation and shard number)."""
        if not handles:
            raise ValueError("a shard needs at least one replica")
        self.handles = list(handles)
        self.suspect_s = suspect_s
        self.hedge_s = hedge_s
        self.on_diverged = on_diverged
        self.where = where
        self._turn = 0
        self._suspect_until = [0.0] * len(handles)
        self.position: int | None = None  # of the in-sync replicas; None: ask them before the next write
        self.out_of_sync: set[int] = set()  # known to the writer (a reader learns it from the replica's refusal)

    def _pick(self, avoid: int | None = None) -> int:
        """The next replica in turn that is not suspect (if all are, the one cleared soonest)."""
        now = time.monotonic()
        n = len(self.handles)
        order = [(self._turn + step) % n for step in range(n)]
        order = [r for r in order if r not in self.out_of_sync] or order
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

    def in_sync(self) -> list[int]:
        return [r for r in range(len(self.handles)) if r not in self.out_of_sync]

    def mark_in_sync(self, replica: int) -> None:
        self.out_of_sync.discard(replica)
        self._suspect_until[replica] = 0.0

    def write(self, method: str, *args: Any) -> Callable[[], Awaitable[Any]]:
        """A call factory for one write to every in-sync replica; its answer is the first one's.

        Every call of it (a fan-out's retry) is the same write: a sequenced one keeps its position.
        """
        if len(self.handles) == 1:
            handle = self.handles[0]
            return lambda: getattr(handle, method).remote(*args)

        if method not in SEQUENCED:  # staging a load or a copy: nothing changes until its commit

            async def everywhere() -> Any:
                calls = [getattr(self.handles[r], method).remote(*args) for r in self.in_sync()]
                return (await asyncio.gather(*calls))[0]

            return everywhere

        seq: list[int] = []

        async def sequenced() -> Any:
            if self.position is None:
                await self.sync_positions()
            assert self.position is not None
            targets = self.in_sync()
            if not seq:
                self.position += 1
                seq.append(self.position)
            answers = await asyncio.gather(
                *(self.handles[r].write_at.remote(seq[0], method, args) for r in targets), return_exceptions=True
            )
            applied = {r: a for r, a in zip(targets, answers) if not isinstance(a, BaseException)}
            failed = {r: a for r, a in zip(targets, answers) if isinstance(a, BaseException)}
            if not applied:  # nobody acknowledged it, yet some may hold it: their positions say before the next
                self.position = None
                raise failed[targets[0]]
            if failed:
                why = f"it failed write {seq[0]} ({method}) that replica {min(applied)} applied: " + "; ".join(
                    describe(e) for e in failed.values()
                )
                await self.diverged(sorted(failed), why)
            return applied[min(applied)][0]

        return sequenced

    async def diverged(self, replicas: list[int], why: str) -> None:
        """Takes replicas out of reads and writes; the owner marks them durably and repairs them."""
        self.out_of_sync.update(replicas)
        if self.on_diverged is not None:
            await self.on_diverged(self, replicas, why)

    async def sync_positions(self) -> None:
        """Asks every replica its write position: the in-sync ones are those at the highest position that are
        not marked; the others are out of sync (diverged). Raises ShardUnavailableError if none is in sync."""
        states = await asyncio.gather(
            *(asyncio.wait_for(h.sync_state.remote(), SYNC_TIMEOUT_S) for h in self.handles), return_exceptions=True
        )
        good = {r: s["position"] for r, s in enumerate(states)
                if not isinstance(s, BaseException) and s["out_of_sync"] is None}
        if not good:
            raise ShardUnavailableError(
                "no replica of this shard is in sync: "
                + "; ".join(describe(s) if isinstance(s, BaseException) else str(s["out_of_sync"]) for s in states)
            )
        top = max(good.values())
        lagging = [r for r in range(len(self.handles)) if good.get(r, -1) < top]
        self.position = top
        self.out_of_sync -= set(good) - set(lagging)
        if lagging:
            await self.diverged(lagging, f"it is not at its peers' write position {top}")
