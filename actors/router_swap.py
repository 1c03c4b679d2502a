"""The router's model-swap steps (rayrec.system.model_swap runs them): stage every item in a new item space on a
new generation of shards, then switch to it or abort.

A part of actors/router.py's Router (its base class), kept apart for size: it works on the Router's
current shard set, write gate, load lock and fan-out helpers, and on Resharding's _check_base and _discard
(its base class).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import numpy as np

from rayrec.actors.router_reshard import Resharding
from rayrec import constants as C
from rayrec.system import layout as layouts
from rayrec.catalogs.catalog import ItemBatch
from rayrec.exceptions import InvalidInputError, LayoutChangedError, ShardUnavailableError
from rayrec.routing.fanout import fan_out
from rayrec.system.generations import ShardSet, drop_files, retire, split_objects
from rayrec.system.layout import Generation
from rayrec.system.model_swap import TEXT_KEY, SpaceChangedError, placer_of, vectors_in
from rayrec.system.resharding import split_batch


class ModelSwapping(Resharding):
    """Router's item space and its model-swap steps: stage_space, switch_space, abort_space."""

    def item_space(self) -> dict[str, Any] | None:
        """The item space the system's vectors are in ({"version", "path"}), None if never set."""
        return self._space

    def set_item_space(self, space: dict[str, Any]) -> dict[str, Any]:
        """Records the item space of a new system (the first setter wins); returns the one in force."""
        if self._space is None:
            self._space = dict(space)
        return self._space

    def _check_space(self, space: str | None) -> None:
        now = None if self._space is None else self._space.get("version")
        if space is not None and now is not None and space != now:
            raise SpaceChangedError(f"the system moved to item space {now!r}; these vectors are in {space!r}")

    async def _live_items(self, on: ShardSet) -> ItemBatch:
        """Every live item of a generation, in one batch (one replica of each shard; within load_timeout_s)."""
        refs = [r[0] for r in split_objects(on, 1)]
        parts = await asyncio.wait_for(asyncio.gather(*refs), self.config.load_timeout_s)
        return ItemBatch(
            [i for p in parts for i in p.ids],
            np.concatenate([p.vectors for p in parts]) if parts else np.zeros((0, self.config.index.dim), np.float32),
            {name: [v for p in parts for v in p.metadata.get(name, [None] * len(p))]
             for name in sorted({n for p in parts for n in p.metadata})},
        )

    async def texts_to_place(self, folder: str) -> dict[str, str]:
        """Item id -> text, of the items the model in folder has no vector for and that keep their text."""
        placer = await asyncio.to_thread(placer_of, {"path": folder})
        batch = await self._on_current(self._live_items)
        texts = batch.metadata.get(TEXT_KEY) or [None] * len(batch)
        return {batch.ids[n]: texts[n] for n in placer.unknown(batch.ids) if texts[n] is not None}

    async def stage_space(
        self, groups: list[list[Any]], new: Generation, base: int, space: dict[str, Any],
        placed: dict[str, tuple[str, np.ndarray]],
    ) -> dict[str, Any]:
        """Fills a new generation of shards with every item in the space of the model at space["path"].

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
        t0 = time.monotonic()
        target = ShardSet(new, self._replica_sets(groups))
        try:
            placer = await asyncio.to_thread(placer_of, space)
            if placer.space.dim != self.config.index.dim:
                raise InvalidInputError(f"model {placer.version} is {placer.space.dim}-d, the index {self.config.index.dim}-d")
            self._check_base(base, new)
            started = await fan_out([lambda h=h: h.count.remote() for h in target.handles], C.RESHARD_START_TIMEOUT_S, 0)
            if started.errors:
                raise ShardUnavailableError(f"{len(started.errors)} new shard actors did not start")
            await self._gate.hold()
            try:
                await self._load_lock.acquire()
            except BaseException:
                self._gate.release()
                raise
            self._swap = Staged(target, dict(space), None)  # no await since the lock: abort_space undoes both
            self._check_base(base, new)
            batch = await self._live_items(self._now)
            vectors = vectors_in(placer, batch, placed)
            parts = split_batch(ItemBatch(batch.ids, vectors, batch.metadata), len(target))
            await self._all("clear", kind="write", on=target)
            replicas = [(j, h) for j, reps in enumerate(target.sets) for h in reps.handles]
            await self._fan_out([lambda h=h, j=j: h.stage_batches.remote(parts[j]) for j, h in replicas], "load")
            committed = (await self._fan_out([lambda h=h: h.commit_staged.remote() for _, h in replicas], "load")).results
            if sum(committed) != len(batch) * self.config.replicas:
                raise ShardUnavailableError("a new shard lost its staged items (restarted?): nothing was switched")
            if self._swap is None or self._swap.target is not target:
                raise LayoutChangedError(f"the model swap to generation {new.number} was abandoned while it staged")
            # The caller switches next; if it never does, the swap is dropped and writes go on.
            self._swap.timer = asyncio.get_running_loop().call_later(
                C.SWAP_TIMEOUT_S, lambda: asyncio.ensure_future(self.abort_space(new))
            )
        except BaseException:
            if not await self.abort_space(new):
                await self._discard(target)
            raise
        return {"items": len(batch), "seconds": round(time.monotonic() - t0, 3)}

    def swap_pending(self, token: str) -> bool:
        """Whether the model swap with this token (its generation's) is staged or switching."""
        return (self._swap is not None and self._swap.target.generation.token == token) or self._switching == token

    async def switch_space(self, new: Generation) -> dict[str, Any]:
        """Makes the staged generation current (its space with it), stops the old one, lets item writes go on."""
        if self._now.generation == new:  # a call resent after a router restart whose switch had happened
            return {"generation": new.number, "model_version": (self._space or {}).get("version")}
        staged = self._swap
        if staged is None or staged.target.generation != new:
            raise LayoutChangedError(f"no model swap to generation {new.number} is staged (aborted, or timed out)")
        self._swap = None
        if staged.timer is not None:
            staged.timer.cancel()
        old = self._now
        self._switching = new.token
        try:
            if self.config.storage is not None:  # the commit point: after it, a restart comes back in the new space
                try:
                    await asyncio.to_thread(layouts.write_layout, self.config, new, old.generation, staged.space)
                except BaseException:
                    await self._discard(staged.target)
                    raise
            self._now, self._space = staged.target, staged.space
            self._writes += 1  # the cached catalog mean is of the old space
            await retire(old, C.RESHARD_STOP_TIMEOUT_S)
        finally:
            self._switching = None
            self._load_lock.release()
            self._gate.release()
        if self.config.storage is not None:  # the old files, once writes go on
            await asyncio.to_thread(drop_files, self.config, old.generation, new)
        return {"generation": new.number, "model_version": staged.space.get("version")}

    async def abort_space(self, new: Generation) -> bool:
        """Drops a staged model swap to generation new (stops its shards, lets item writes go on); True if one was.

        A swap still starting its shards is marked abandoned: it stops when it gets the write gate.
        """
        self._abandoned.add(new.token)
        staged = self._swap
        if staged is None or staged.target.generation != new:
            return False
        self._swap = None
        if staged.timer is not None:
            staged.timer.cancel()
        try:
            await self._discard(staged.target)
        finally:
            self._load_lock.release()
            self._gate.release()
        return True


@dataclasses.dataclass(slots=True)
class Staged:
    """A model swap between stage_space and switch_space (item writes held at the gate): the new shards, their space."""

    target: ShardSet
    space: dict[str, Any]
    timer: asyncio.TimerHandle | None  # aborts the swap if it is not switched in time (set once staged)
