"""The replicas of one shard: a read goes to one live replica, a write to every replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rayrec import constants as C
from rayrec.exceptions import CALLER_ERRORS, ShardUnavailableError, root_cause
from rayrec.routing.fanout import describe

# The writes that change a shard's items: numbered per shard, so each replica's position says what it holds.
SEQUENCED = frozenset({"upsert", "delete", "clear", "commit_staged"})
# How long the router waits for a replica's write position (before a shard's first write) or for it to take
# the word that it is out of sync.
SYNC_TIMEOUT_S = 10.0
# (the replica set, the replicas that missed a write a peer applied, why): the router's marking and repair
OnDiverged = Callable[["ReplicaSet", list[int], str], Awaitable[None]]


class ReplicaSet:
    """Handles of one shard's replicas (each an actor holding the same items).

    Reads rotate over the replicas, skipping one that recently failed or was
    late ("suspect") for suspect_s; a read not answered within hedge_s is also
    sent to the next replica, and one that fails goes on to the next untried
    replica; the first answer wins, so a replica on a lost node (whose calls
    hang until Ray notices) delays reads by hedge_s at most once. Writes go to
    every replica and return when all have applied them (each durably, with
    storage); a replica Ray is restarting makes them wait.

    With several replicas, the writes that change items are numbered (SEQUENCED), one at a time per shard:
    each in-sync replica applies write n as the one after its position n - 1 (Shard.write_at). A write that
    some replicas applied and others failed (or did not answer within write_timeout_s) is acknowledged from
    those that applied it once the others are out of sync: marked so by on_diverged (the router marks them
    in storage, tells them, and repairs them from a peer), they get no reads and no writes until then.
    Before a shard's first write (and after one that no replica acknowledged) the replicas' positions are
    asked; one behind the others is out of sync too. A write whose caller stops waiting (a fan-out's
    deadline) still runs to its end, and a retry of it waits for that end instead of sending it again.
    """

    def __init__(
        self,
        handles: list[Any],
        suspect_s: float,
        hedge_s: float,
        on_diverged: OnDiverged | None = None,
        where: Any = None,
        write_timeout_s: float = C.DEFAULT_WRITE_TIMEOUT_S,
        commit_timeout_s: float = C.DEFAULT_LOAD_TIMEOUT_S,
    ) -> None:
        """where: what the owner needs to find this shard again (the router: its generation and shard number).

        write_timeout_s: how long a sequenced write waits for a replica before it counts as failed there
        (commit_timeout_s for commit_staged, which snapshots a whole load).
        """
        if not handles:
            raise ValueError("a shard needs at least one replica")
        self.handles = list(handles)
        self.suspect_s = suspect_s
        self.hedge_s = hedge_s
        self.on_diverged = on_diverged
        self.where = where
        self.write_timeout_s = write_timeout_s
        self.commit_timeout_s = commit_timeout_s
        self._turn = 0
        self._suspect_until = [0.0] * len(handles)
        self.position: int | None = None  # of the in-sync replicas; None: ask them before the next write
        self.out_of_sync: set[int] = set()  # known to the writer (a reader learns it from the replica's refusal)
        self.writing = asyncio.Lock()  # sequenced writes, position checks and repairs, one at a time

    def _pick(self, avoid: set[int] | frozenset[int] = frozenset()) -> int | None:
        """The next replica in turn that is not avoided or suspect (if all are suspect, the one cleared
        soonest; the out-of-sync ones last). None if every replica is avoided."""
        now = time.monotonic()
        n = len(self.handles)
        order = [(self._turn + step) % n for step in range(n)]
        order = [r for r in order if r not in avoid]
        if not order:
            return None
        order = [r for r in order if r not in self.out_of_sync] or order
        healthy = [r for r in order if self._suspect_until[r] <= now]
        chosen = healthy[0] if healthy else min(order, key=self._suspect_until.__getitem__)
        self._turn = (chosen + 1) % n
        return chosen

    def pick_handle(self) -> Any:
        """The handle of the replica the next read would go to."""
        return self.handles[self._pick() or 0]

    def suspect(self, replica: int) -> None:
        self._suspect_until[replica] = time.monotonic() + self.suspect_s

    def read(self, method: str, *args: Any) -> Callable[[], Awaitable[Any]]:
        """A call factory for one read: every call (a fan-out retry, say) picks a replica anew."""
        if len(self.handles) == 1:
            handle = self.handles[0]
            return lambda: getattr(handle, method).remote(*args)
        return lambda: self._hedged(method, args)

    async def _one(self, replica: int, method: str, args: tuple[Any, ...]) -> Any:
        # A read hedged away or past its deadline is not cancelled (ray.cancel) but left to finish: a cancelled
        # call leaves a gap in the order of the caller's calls to that actor, and Ray's actor then waits 30 s for
        # it and fails every call queued behind it, writes included (seen with a replica still starting).
        try:
            return await getattr(self.handles[replica], method).remote(*args)
        except Exception as exc:
            if not isinstance(root_cause(exc), CALLER_ERRORS):
                self.suspect(replica)
            raise

    async def _hedged(self, method: str, args: tuple[Any, ...]) -> Any:
        """One read: a late first replica is hedged once; each failure goes on to a replica not yet tried."""
        first = self._pick()
        assert first is not None
        tried = {first}
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
                if not done:  # the first replica is late: other replicas answer this read and the next ones
                    self.suspect(first)
                    hedged = True
                for _ in range(max(1, len(done))):  # one more replica for the late one, or for each failed one
                    nxt = self._pick(avoid=tried)
                    if nxt is not None:
                        tried.add(nxt)
                        tasks.add(asyncio.ensure_future(self._one(nxt, method, args)))
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

        Every call of it (a fan-out's retry) is the same write: while one attempt runs (its caller may have
        stopped waiting), another call waits for it; once it failed, a call tries anew.
        """
        if len(self.handles) == 1:
            handle = self.handles[0]
            return lambda: getattr(handle, method).remote(*args)

        if method not in SEQUENCED:  # staging a load or a copy: nothing changes until its commit

            async def everywhere() -> Any:
                targets = self._targets()
                return (await asyncio.gather(*(getattr(self.handles[r], method).remote(*args) for r in targets)))[0]

            return everywhere

        attempt: list[asyncio.Future[Any]] = []

        async def sequenced() -> Any:
            if not attempt or (attempt[0].done() and (attempt[0].cancelled() or attempt[0].exception() is not None)):
                attempt[:] = [asyncio.ensure_future(self._sequenced(method, args))]
            return await asyncio.shield(attempt[0])  # a cancelled caller leaves the attempt running to its end

        return sequenced

    def _targets(self) -> list[int]:
        targets = self.in_sync()
        if not targets:
            raise ShardUnavailableError(f"no replica of this shard is in sync (replicas {sorted(self.out_of_sync)} "
                                        "are out of sync, being repaired)")
        return targets

    async def _sequenced(self, method: str, args: tuple[Any, ...]) -> Any:
        """One attempt of a sequenced write, under the shard's write lock: it takes the next position."""
        async with self.writing:
            if self.position is None:
                await self._sync_positions()
            assert self.position is not None
            targets = self._targets()
            seq = self.position + 1
            self.position = seq
            timeout = self.commit_timeout_s if method == "commit_staged" else self.write_timeout_s
            answers = await asyncio.gather(
                *(asyncio.wait_for(self.handles[r].write_at.remote(seq, method, args), timeout) for r in targets),
                return_exceptions=True,
            )
            applied = {r: a for r, a in zip(targets, answers) if not isinstance(a, BaseException)}
            failed = {r: a for r, a in zip(targets, answers) if isinstance(a, BaseException)}
            if not applied:
                first = failed[targets[0]]
                if all(isinstance(root_cause(e), CALLER_ERRORS) for e in failed.values()):
                    self.position = seq - 1  # every replica refused it before applying: the position is free
                else:  # nobody acknowledged it, yet some may hold it: their positions say before the next
                    self.position = None
                raise first
            if failed:
                why = f"it failed write {seq} ({method}) that replica {min(applied)} applied: " + "; ".join(
                    describe(e) for e in failed.values()
                )
                await self.diverged(sorted(failed), why)
            return applied[min(applied)][0]

    async def diverged(self, replicas: list[int], why: str) -> None:
        """Takes replicas out of reads and writes; the owner marks them durably and repairs them."""
        self.out_of_sync.update(replicas)
        if self.on_diverged is not None:
            await self.on_diverged(self, replicas, why)

    async def sync_positions(self) -> None:
        """Asks every replica its write position, between sequenced writes (see _sync_positions)."""
        async with self.writing:
            await self._sync_positions()

    async def _sync_positions(self) -> None:
        """The in-sync replicas are those at the highest position that are not marked; the others are out of
        sync (diverged). Raises ShardUnavailableError if none is in sync. Called with no write in flight."""
        states = await asyncio.gather(
            *(asyncio.wait_for(h.sync_state.remote(), SYNC_TIMEOUT_S) for h in self.handles), return_exceptions=True
        )
        good = {r: s["position"] for r, s in enumerate(states)
                if not isinstance(s, BaseException) and s["out_of_sync"] is None and r not in self.out_of_sync}
        if not good:
            raise ShardUnavailableError(
                "no replica of this shard is in sync: "
                + "; ".join(describe(s) if isinstance(s, BaseException) else str(s["out_of_sync"]) for s in states)
            )
        top = max(good.values())
        lagging = [r for r in range(len(self.handles)) if good.get(r, -1) < top and r not in self.out_of_sync]
        self.position = top
        if lagging:
            await self.diverged(lagging, f"it is not at its peers' write position {top}")
