"""The router's shards, as its reads, writes, re-shards and model swaps share them.

One Topology per router: the current generation of shards (per shard, its
replica set), the system's config (whose num_shards follows the current
generation), the write gate and load lock that re-shards, swaps and loads take,
the generations their planners gave up on, and a write counter. Its helpers
run shard calls under the deadlines and retries of their kind, on the current
generation or on a named one. Plain async Python over shard handles: the
router actor (actors/router.py) and its re-sharding and model-swap steps
(actors/router_reshard.py, actors/router_swap.py) each hold the same one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np

from rayrec import constants as C
from rayrec.config import RayrecConfig
from rayrec.durability import replica_state
from rayrec.durability.storage import Storage
from rayrec.exceptions import InvalidInputError, LayoutChangedError, ShardUnavailableError
from rayrec.hashing import group_by_partition
from rayrec.index.metadata import take
from rayrec.routing.fanout import FanOutResult, describe
from rayrec.routing.replicas import SYNC_TIMEOUT_S, ReplicaSet
from rayrec.routing.search import ShardSearch, run_on_shards
from rayrec.system.generations import ShardSet, drop_files, retire
from rayrec.system.layout import Generation
from rayrec.system.resharding import WriteGate

T = TypeVar("T")
log = logging.getLogger(__name__)
# A repair that fails (its replica is down, say) is tried again after this, doubled each time up to the cap.
REPAIR_RETRY_S, REPAIR_RETRY_CAP_S, REPAIR_ATTEMPTS = 0.5, 30.0, 40
# How long a repair may hold the shard's item writes while a peer's state is copied into the lagging replica.
REPAIR_TIMEOUT_S = 120.0


def _rows(column: Any, pos: list[int]) -> Any:
    """The rows at pos of an array or of a metadata dict."""
    if isinstance(column, np.ndarray):
        return column[pos]
    if isinstance(column, dict):
        return take(column, pos)
    return [column[p] for p in pos]


class Topology:
    """The current shard generation of one router and the calls that reach it."""

    def __init__(
        self,
        config: RayrecConfig,
        shards: list[Any],
        generation: Generation,
        stop: Callable[[ShardSet, float], Awaitable[None]] = retire,
    ) -> None:
        """shards: per shard, its handle or the list of its replicas' handles (of generation).

        stop(generation, timeout_s): retires a generation's shards and stops their actors
        (rayrec.system.generations.retire; the unit tier's fake handles have no process to stop).
        """
        if len(shards) != config.num_shards or generation.num_shards != config.num_shards:
            raise InvalidInputError(f"config says {config.num_shards} shards but {len(shards)} handles were given")
        self.config = config
        self.stop = stop
        self.repairing: dict[tuple[str, int, int], asyncio.Task[None]] = {}  # (generation token, shard, replica)
        self._checked: asyncio.Task[None] | None = None  # the replicas' positions, asked once the router runs
        self.now = ShardSet(generation, self.replica_sets(shards, generation))
        self.gate = WriteGate()  # closed by a re-shard while it copies and switches, held by a model swap
        self.load_lock = asyncio.Lock()  # one load, re-shard or staged swap at a time
        self.abandoned: set[str] = set()  # tokens of generations their planners gave up on
        self.writes = 0  # bumped by every write: what is cached of the catalog is stale once it moves
        # Drivers' vector queries: the same fan-out and merge a user actor runs for its users.
        self.search = ShardSearch(config, self.current, self.behind)

    def replica_sets(self, shards: list[Any], generation: Generation) -> list[ReplicaSet]:
        groups = [list(s) if isinstance(s, (list, tuple)) else [s] for s in shards]
        if any(len(g) != self.config.replicas for g in groups):
            raise InvalidInputError(
                f"config says {self.config.replicas} replicas per shard; got {[len(g) for g in groups]}"
            )
        return [ReplicaSet(g, C.REPLICA_SUSPECT_S, self.config.replica_hedge_s, self.diverged, (generation, i),
                           self.config.write_timeout_s, self.config.load_timeout_s)
                for i, g in enumerate(groups)]

    # ----- replicas out of sync -------------------------------------------
    def ensure_checked(self) -> None:
        """Starts (once) asking every replica of the current shards its write position, so a router that
        (re)starts over replicas left at different positions takes the ones behind out of reads at once."""
        if self._checked is None and self.config.replicas > 1:
            self._checked = asyncio.ensure_future(self.check_replicas())

    async def replicas_checked(self) -> None:
        """Returns once every replica of the current shards was asked its write position (ensure_checked)."""
        self.ensure_checked()
        if self._checked is not None:
            await asyncio.shield(self._checked)

    async def check_replicas(self) -> None:
        """ReplicaSet.sync_positions on every shard whose replicas' positions the router does not know yet."""
        for replicas in self.now.sets:
            if replicas.position is None:
                try:
                    await replicas.sync_positions()
                except Exception as exc:  # no replica answered: the shard's next write asks again
                    log.warning("shard %d: replica positions unknown (%s)", replicas.where[1], describe(exc))

    async def diverged(self, replicas: ReplicaSet, lagging: list[int], why: str) -> None:
        """Replicas that missed a write a peer applied (ReplicaSet.write): marked in storage (what a restart
        reads) and told, before the write is acknowledged; then each is repaired from a peer in the background
        (whose first step tells it again, until it takes the word: one down now may come back unmarked)."""
        generation, shard = replicas.where
        log.warning("shard %d replicas %s are out of sync: %s", shard, lagging, why)
        if self.config.storage is not None:
            root = Storage(self.config.storage)
            for r in lagging:
                await asyncio.to_thread(replica_state.mark, root.child(generation.storage_name(shard, r)), why)
        told = [asyncio.wait_for(replicas.handles[r].mark_out_of_sync.remote(why), SYNC_TIMEOUT_S) for r in lagging]
        for r, answer in zip(lagging, await asyncio.gather(*told, return_exceptions=True)):
            if isinstance(answer, BaseException):  # down: its restart reads the mark, its repair tells it again
                log.warning("shard %d replica %d was not told it is out of sync: %s", shard, r, describe(answer))
        for r in lagging:
            key = (generation.token, shard, r)
            if key not in self.repairing:
                self.repairing[key] = asyncio.ensure_future(self._repair(replicas, r, key, why))

    async def _repair(self, replicas: ReplicaSet, replica: int, key: tuple[str, int, int], why: str) -> None:
        """Copies an in-sync peer's state into replica, item writes held (they resume at once after).

        Each try first tells the replica it is out of sync (so it refuses reads even if it came back from a
        restart unmarked, or a late restore of an earlier try has just brought it back) and waits for that
        under SYNC_TIMEOUT_S: a replica that is down holds nobody's writes. Only then the shard's writes are held, for
        REPAIR_TIMEOUT_S at most.
        """
        generation, shard = replicas.where
        target = replicas.handles[replica]
        wait = REPAIR_RETRY_S
        try:
            for _ in range(REPAIR_ATTEMPTS):
                if generation.number < self.now.generation.number or generation.token in self.abandoned:
                    return  # a re-shard or swap retired it (or never switched it in)
                try:
                    await asyncio.wait_for(target.mark_out_of_sync.remote(why), SYNC_TIMEOUT_S)
                    async with self.gate.closed(), replicas.writing:
                        if generation.number < self.now.generation.number:
                            return
                        sources = replicas.in_sync()
                        if not sources:
                            raise ShardUnavailableError(f"shard {shard} has no replica in sync to repair from")
                        state = replicas.handles[sources[0]].export_replica.remote()
                        position = await asyncio.wait_for(target.restore_replica.remote(state), REPAIR_TIMEOUT_S)
                        replicas.mark_in_sync(replica)
                    log.warning("shard %d replica %d repaired from replica %d (position %d)",
                                shard, replica, sources[0], position)
                    return
                except Exception as exc:
                    log.warning("shard %d replica %d: repair failed (%s); again in %.1f s",
                                shard, replica, describe(exc), wait)
                    await asyncio.sleep(wait)
                    wait = min(2 * wait, REPAIR_RETRY_CAP_S)
            log.error("shard %d replica %d stays out of sync after %d repairs", shard, replica, REPAIR_ATTEMPTS)
        finally:
            self.repairing.pop(key, None)

    def switch(self, target: ShardSet, config: RayrecConfig | None = None) -> None:
        """Makes target the current generation (with config, if its shard count changed)."""
        self.now = target
        if config is not None:
            self.config = config

    # ----- generations --------------------------------------------------
    async def current(self) -> ShardSet:
        self.ensure_checked()
        return self.now

    async def behind(self, on: ShardSet) -> bool:
        """Whether a re-shard or model swap switched away from `on`."""
        return on.generation.number < self.now.generation.number

    def check_base(self, base: int, new: Generation) -> None:
        """Refuses a planned generation whose planner gave up, or that was planned against another current one."""
        now = self.now.generation.number
        if new.token in self.abandoned:
            raise LayoutChangedError(f"generation {new.number} ({new.token}) was abandoned by its planner")
        if base != now:
            raise LayoutChangedError(f"the shards are at generation {now}, not {base}: plan the re-shard again")
        if new.number != base + 1:
            raise LayoutChangedError(f"generation {new.number} does not follow generation {base}: plan it again")

    async def retire(self, old: ShardSet) -> None:
        """Stops a generation: once this returns, none of its replicas answers a call."""
        await self.stop(old, C.RESHARD_STOP_TIMEOUT_S)

    async def discard(self, target: ShardSet) -> None:
        """Stops the actors of a generation that was never switched in and deletes its files."""
        self.abandoned.add(target.generation.token)  # its repairs stop
        await self.retire(target)
        if self.config.storage is not None:
            await asyncio.to_thread(drop_files, self.config, target.generation, None)

    # ----- shard calls --------------------------------------------------
    async def fan_out(
        self,
        calls: list[Callable[[], Awaitable[Any]]],
        kind: str,
        tolerate: bool = False,
        shard_ids: list[int] | None = None,
        on: ShardSet | None = None,
    ) -> FanOutResult[Any]:
        """Runs shard calls under the deadline and retries of their kind (see rayrec.routing.search.run_on_shards).

        on: the generation the calls went to; if a re-shard switched away from it meanwhile, any failure
        raises ShardRetiredError (the caller runs again on the current one, see on_current).
        """
        stale = None if on is None else (lambda: self.behind(on))
        return await run_on_shards(self.config, calls, kind, tolerate=tolerate, shard_ids=shard_ids, stale=stale)

    async def on_current(self, op: Callable[[ShardSet], Awaitable[T]]) -> T:
        """Runs a read on the current shards; once more on the new ones if a re-shard switched meanwhile."""
        return await self.search.on_current(op)

    @staticmethod
    def call(on: ShardSet, shard: int, method: str, args: Any, kind: str) -> Callable[[], Awaitable[Any]]:
        """A query goes to one replica of the shard; a write or load to all of them."""
        replicas = on.sets[shard]
        return replicas.read(method, *args) if kind == "query" else replicas.write(method, *args)

    async def all(
        self, method: str, *args: Any, kind: str = "query", tolerate: bool = False, on: ShardSet | None = None
    ) -> FanOutResult[Any]:
        """method(*args) on every shard of on (default the current generation)."""
        on = on or self.now
        calls = [self.call(on, s, method, args, kind) for s in range(len(on))]
        return await self.fan_out(calls, kind, tolerate, on=on)

    async def by_owner(
        self, method: str, ids: list[str], *columns: Any, kind: str = "query", on: ShardSet | None = None
    ) -> list[tuple[list[int], Any]]:
        """Calls method on each owning shard with its ids (and the matching rows of columns).

        Returns (positions in ids, shard's answer) per owning shard.
        """
        on = on or self.now
        groups = group_by_partition(ids, len(on))
        owners = sorted(groups)
        calls = []
        for shard in owners:
            pos = groups[shard]
            args = [[ids[p] for p in pos]] + [_rows(c, pos) for c in columns]
            calls.append(self.call(on, shard, method, args, kind))
        res = await self.fan_out(calls, kind, shard_ids=owners, on=on)
        return [(groups[shard], out) for shard, out in zip(owners, res.results)]
