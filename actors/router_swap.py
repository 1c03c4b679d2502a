"""The router's model-swap steps (rayrec.system.model_swap runs them): stage every item in a new item space on a
new generation of shards, then switch to it or abort.

Part of actors/router.py's Router (which holds one ModelSwaps and answers the swap calls through it):
plain async Python on the router's Topology (its current shards, write gate, load lock, shard calls), which
re-sharding shares.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import numpy as np

from rayrec import constants as C
from rayrec.catalogs.catalog import ItemBatch
from rayrec.exceptions import LayoutChangedError, ShardUnavailableError
from rayrec.routing.fanout import fan_out
from rayrec.system import layout as layouts
from rayrec.system.generations import ShardSet, drop_files, split_objects
from rayrec.system.layout import Generation
from rayrec.system.model_swap import TEXT_KEY, SpaceChangedError, placer_of, vectors_in
from rayrec.system.resharding import split_batch
from rayrec.system.topology import Topology


class ModelSwaps:
    """The system's item space and the model-swap steps: stage_space, switch_space, abort_space."""

    def __init__(self, topology: Topology, space: dict[str, Any] | None) -> None:
        """space: the item space the vectors are in now (rayrec.system.model_swap.space_of), None if never set."""
        self.topology = topology
        self.space = space
        self.staged: Staged | None = None  # a model swap's generation, staged with item writes held
        self.switching: str | None = None  # the token of a model swap switching now

    def item_space(self) -> dict[str, Any] | None:
        """The item space the system's vectors are in ({"version", "path"}), None if never set."""
        return self.space

    def set_item_space(self, space: dict[str, Any]) -> dict[str, Any]:
        """Records the item space of a new system (the first setter wins); returns the one in force."""
        if self.space is None:
            self.space = dict(space)
        return self.space

    def check_space(self, space: str | None) -> None:
        now = None if self.space is None else self.space.get("version")
        if space is not None and now is not None and space != now:
            raise SpaceChangedError(f"the system moved to item space {now!r}; these vectors are in {space!r}")

    async def _live_items(self, on: ShardSet) -> ItemBatch:
        """Every live item of a generation, in one batch (one replica of each shard; within load_timeout_s)."""
        config = self.topology.config
        refs = [r[0] for r in split_objects(on, 1)]
        parts = await asyncio.wait_for(asyncio.gather(*refs), config.load_timeout_s)
        return ItemBatch(
            [i for p in parts for i in p.ids],
            np.concatenate([p.vectors for p in parts]) if parts else np.zeros((0, config.index.dim), np.float32),
            {name: [v for p in parts for v in p.metadata.get(name, [None] * len(p))]
             for name in sorted({n for p in parts for n in p.metadata})},
        )

    async def texts_to_place(self, folder: str) -> dict[str, str]:
        """Item id -> text, of the items the model in folder has no vector for and that keep their text."""
        placer = await asyncio.to_thread(placer_of, {"path": folder})
        batch = await self.topology.on_current(self._live_items)
        texts = batch.metadata.get(TEXT_KEY) or [None] * len(batch)
        return {batch.ids[n]: texts[n] for n in placer.unknown(batch.ids) if texts[n] is not None}

    async def stage_space(
        self, groups: list[list[Any]], new: Generation, base: int, space: dict[str, Any],
        placed: dict[str, tuple[str, np.ndarray]],
    ) -> dict[str, Any]:
        """Fills a new generation of shards with every item in the space of the model at space["path"]
        (padded with zeros to the index's dimension where the model has fewer).

        Item writes wait from here until switch_space or abort_space (or SWAP_TIMEOUT_S after it
        returns, which aborts); queries go on against the current shards. On failure the new actors are stopped.

        Args:
            groups: per new shard, its replicas' handles (new actors of generation new).
            new, base: as reshard.
            space: rayrec.system.model_swap.space_of the new model.
            placed: item id -> (text, vector) for the items the model lacks (rayrec.system.model_swap.vectors_in).

        Returns:
            {"items", "seconds"}.
        """
        topo = self.topology
        t0 = time.monotonic()
        target = ShardSet(new, topo.replica_sets(groups, new))
        try:
            placer = await asyncio.to_thread(placer_of, space, topo.config.index.dim)  # refuses a larger model
            topo.check_base(base, new)
            started = await fan_out(
                [lambda h=h: h.count.remote() for h in target.handles], C.RESHARD_START_TIMEOUT_S, 0
            )
            if started.errors:
                raise ShardUnavailableError(f"{len(started.errors)} new shard actors did not start")
            await topo.gate.hold()
            try:
                await topo.load_lock.acquire()
            except BaseException:
                topo.gate.release()
                raise
            self.staged = Staged(target, dict(space), None)  # no await since the lock: abort_space undoes both
            topo.check_base(base, new)
            batch = await self._live_items(topo.now)
            vectors = vectors_in(placer, batch, placed)
            parts = split_batch(ItemBatch(batch.ids, vectors, batch.metadata), len(target))
            await topo.all("clear", kind="write", on=target)
            replicas = [(j, h) for j, reps in enumerate(target.sets) for h in reps.handles]
            await topo.fan_out([lambda h=h, j=j: h.stage_batches.remote(parts[j]) for j, h in replicas], "load")
            commits = [lambda h=h: h.commit_staged.remote() for _, h in replicas]
            committed = (await topo.fan_out(commits, "load")).results
            if sum(committed) != len(batch) * topo.config.replicas:
                raise ShardUnavailableError("a new shard lost its staged items (restarted?): nothing was switched")
            if self.staged is None or self.staged.target is not target:
                raise LayoutChangedError(f"the model swap to generation {new.number} was abandoned while it staged")
            # The caller switches next; if it never does, the swap is dropped and writes go on.
            self.staged.timer = asyncio.get_running_loop().call_later(
                C.SWAP_TIMEOUT_S, lambda: asyncio.ensure_future(self.abort_space(new))
            )
        except BaseException:
            if not await self.abort_space(new):
                await topo.discard(target)
            raise
        return {"items": len(batch), "seconds": round(time.monotonic() - t0, 3)}

    def swap_pending(self, token: str) -> bool:
        """Whether the model swap with this token (its generation's) is staged or switching."""
        return (self.staged is not None and self.staged.target.generation.token == token) or self.switching == token

    async def switch_space(self, new: Generation) -> dict[str, Any]:
        """Makes the staged generation current (its space with it), stops the old one, lets item writes go on."""
        topo = self.topology
        if topo.now.generation == new:  # a call resent after a router restart whose switch had happened
            return {"generation": new.number, "model_version": (self.space or {}).get("version")}
        staged = self.staged
        if staged is None or staged.target.generation != new:
            raise LayoutChangedError(f"no model swap to generation {new.number} is staged (aborted, or timed out)")
        self.staged = None
        if staged.timer is not None:
            staged.timer.cancel()
        old = topo.now
        self.switching = new.token
        try:
            if topo.config.storage is not None:  # the commit point: after it, a restart comes back in the new space
                try:
                    await asyncio.to_thread(layouts.write_layout, topo.config, new, old.generation, staged.space)
                except BaseException:
                    await topo.discard(staged.target)
                    raise
            topo.switch(staged.target)
            self.space = staged.space
            topo.writes += 1  # the cached catalog mean is of the old space
            await topo.retire(old)
        finally:
            self.switching = None
            topo.load_lock.release()
            topo.gate.release()
        if topo.config.storage is not None:  # the old files, once writes go on
            await asyncio.to_thread(drop_files, topo.config, old.generation, new)
        return {"generation": new.number, "model_version": staged.space.get("version")}

    async def abort_space(self, new: Generation) -> bool:
        """Drops a staged model swap to generation new (stops its shards, lets item writes go on); True if one was.

        A swap still starting its shards is marked abandoned: it stops when it gets the write gate.
        """
        topo = self.topology
        topo.abandoned.add(new.token)
        staged = self.staged
        if staged is None or staged.target.generation != new:
            return False
        self.staged = None
        if staged.timer is not None:
            staged.timer.cancel()
        try:
            await topo.discard(staged.target)
        finally:
            topo.load_lock.release()
            topo.gate.release()
        return True


@dataclasses.dataclass(slots=True)
class Staged:
    """A model swap between stage_space and switch_space (item writes held at the gate): its shards and space."""

    target: ShardSet
    space: dict[str, Any]
    timer: asyncio.TimerHandle | None  # aborts the swap if it is not switched in time (set once staged)
