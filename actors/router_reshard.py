"""The router's re-sharding steps: a new generation of shards filled with every item, then switched in.

Part of actors/router.py's Router (which holds one Resharding and answers reshard and abandon through it):
plain async Python on the router's Topology (its current shards, write gate, load lock, shard calls).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from rayrec import constants as C
from rayrec.exceptions import InvalidInputError, ShardUnavailableError
from rayrec.routing.fanout import describe, fan_out
from rayrec.system import layout as layouts
from rayrec.system.generations import ShardSet, drop_files, split_objects
from rayrec.system.layout import Generation
from rayrec.system.topology import Topology


class Resharding:
    """Router.reshard and abandon."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    async def reshard(self, groups: list[list[Any]], new: Generation, base: int) -> dict[str, Any]:
        """Moves every item onto a new generation of shards, then switches to it.

        Queries go on against the current shards throughout, and are exact: the
        copy is taken with writes held at the gate, so the old shards stay
        complete until the switch. Writes wait for the copy and the switch, then
        go to the new shards. With storage, rewriting layout.json is the commit
        point: a crash before it keeps the old generation, after it the new one.
        If anything fails before the switch, the new actors are stopped here and
        the old generation goes on serving.

        Args:
            groups: per new shard, its replicas' handles (new actors).
            new: their generation (number base + 1, a fresh token, the new shard count).
            base: the generation number the caller planned against.

        Returns:
            {"from_shards", "to_shards", "generation", "items", "seconds"}.
        """
        topo = self.topology
        if new == topo.now.generation:  # a resent call whose switch already happened
            return {"from_shards": None, "to_shards": len(topo.now), "generation": new.number, "items": None}
        if len(groups) != new.num_shards or any(len(g) != topo.config.replicas for g in groups):
            raise InvalidInputError(
                f"a re-shard to {new.num_shards} shards of {topo.config.replicas} replicas got "
                f"{[len(g) for g in groups]}"
            )
        t0 = time.monotonic()
        target = ShardSet(new, topo.replica_sets(groups, new))
        try:
            topo.check_base(base, new)
            # Before writes are held: the new actors may take a while to start.
            started = await fan_out(
                [lambda h=h: h.count.remote() for h in target.handles], C.RESHARD_START_TIMEOUT_S, 0
            )
            if started.errors:
                first = describe(next(iter(started.errors.values())))
                raise ShardUnavailableError(f"{len(started.errors)} new shard actors did not start: {first}")
            async with topo.gate.closed(), topo.load_lock:
                old = topo.now
                topo.check_base(base, new)  # again: another re-shard may have switched meanwhile
                items = await self._copy(old, target)
                config = dataclasses.replace(topo.config, num_shards=new.num_shards)
                if config.storage is not None:  # the commit point
                    await asyncio.to_thread(layouts.write_layout, config, new, old.generation)
                topo.switch(target, config)
                await topo.retire(old)  # before writes resume: nothing reads old after this
        except BaseException:
            if topo.now is not target:
                await topo.discard(target)
            raise
        if config.storage is not None:  # the old files, once writes go on (an object store deletes slowly)
            await asyncio.to_thread(drop_files, config, old.generation, new)
        return {
            "from_shards": len(old),
            "to_shards": len(target),
            "generation": new.number,
            "items": items,
            "seconds": round(time.monotonic() - t0, 3),
        }

    async def abandon(self, new: Generation, groups: list[list[Any]]) -> bool:
        """Stops a planned generation unless it is the current one (its planner gave up); True if stopped.

        Waits for a re-shard in progress, so it never stops shards that are being switched in.
        """
        topo = self.topology
        topo.abandoned.add(new.token)
        async with topo.load_lock:
            if topo.now.generation == new:
                return False
            await topo.discard(ShardSet(new, topo.replica_sets(groups, new)))
            return True

    async def _copy(self, old: ShardSet, new: ShardSet) -> int:
        """Copies every live item of old onto the shard of new that owns it; returns the items copied.

        Each old shard splits its items by new owner into one object per new
        shard; each new replica reads its objects straight from the object store
        and applies them (a snapshot, with storage). Nothing passes through here.
        Every new replica must end with exactly the items of the old shards.
        """
        topo = self.topology
        # Empty first: a resent re-shard must not keep rows (since deleted) from its first try.
        await topo.all("clear", kind="write", on=new)
        counts = (await topo.all("count", on=old)).results
        total = int(sum(counts))
        parts = split_objects(old, len(new))  # one replica of each old shard; the copy fails whole if one fails
        replicas = [(j, r, h) for j, reps in enumerate(new.sets) for r, h in enumerate(reps.handles)]
        stage = [lambda h=h, j=j: h.stage_batches.remote(*(p[j] for p in parts)) for j, _, h in replicas]
        await topo.fan_out(stage, "load")
        commit = [lambda h=h: h.commit_staged.remote() for _, _, h in replicas]
        committed = (await topo.fan_out(commit, "load")).results
        for replica in range(topo.config.replicas):
            got = sum(c for (_, r, _), c in zip(replicas, committed) if r == replica)
            if got != total:
                raise ShardUnavailableError(
                    f"the re-shard copied {got} of {total} items to replica {replica} (a shard restarted during "
                    "the copy?): nothing was switched; re-shard again"
                )
        return total
