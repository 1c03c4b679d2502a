"""Generations of shard actors as the router holds them: the current set, finding it after a restart,
splitting the old one into the new, and stopping the old one after a re-shard."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import ray
from ray.exceptions import RayActorError

from rayrec.config import RayrecConfig
from rayrec.durability.storage import Storage
from rayrec.routing.fanout import fan_out
from rayrec.routing.replicas import ReplicaSet
from rayrec.system import layout as layouts
from rayrec.system.layout import Generation, delete_generation, stray_generations

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ShardSet:
    """One generation of shards: per shard, the set of its replicas."""

    generation: Generation
    sets: list[ReplicaSet]

    def __len__(self) -> int:
        return len(self.sets)

    @property
    def handles(self) -> list[Any]:
        """Every replica's handle, shard by shard."""
        return [h for replicas in self.sets for h in replicas.handles]


def stored_shards(
    config: RayrecConfig, shards: list[Any], generation: Generation
) -> tuple[RayrecConfig, list[Any], Generation]:
    """The shards storage's layout.json names, for a router Ray restarted with its first arguments.

    Also finishes the clean-up a router did not get to: the generation a
    re-shard switched away from is stopped (by actor name) and its files
    deleted, and so are the files of generations never switched in.

    Returns:
        (config with the current shard count, per shard its replicas' handles, the current generation).
    """
    storage = Storage(config.storage)  # type: ignore[arg-type]
    stored = layouts.read_layout(storage)
    if stored is None:
        return config, shards, generation
    current = layouts.generation_of(stored)
    if current != generation:
        config = dataclasses.replace(config, num_shards=current.num_shards)
        shards = [
            [ray.get_actor(current.actor_name(i, r), namespace=config.namespace) for r in range(config.replicas)]
            for i in range(current.num_shards)
        ]
    for stray in stray_generations(storage, current):  # files of re-shards that never switched
        storage.delete_tree(stray)
    retiring = layouts.retiring_of(stored)
    if retiring is not None:
        for i in range(retiring.num_shards):
            for r in range(config.replicas):
                try:
                    ray.kill(ray.get_actor(retiring.actor_name(i, r), namespace=config.namespace))
                except ValueError:  # already gone
                    pass
        delete_generation(storage, retiring, config.replicas)
        layouts.write_layout(config, current)
    return config, shards, current


def split_objects(old: ShardSet, num_parts: int) -> list[list[Any]]:
    """Asks one replica of each old shard to split its items by new owner.

    Returns, per old shard, num_parts object refs (part j: the items new shard j
    owns); they stay in the object store until the new shards read them.
    """
    parts = []
    for replicas in old.sets:
        refs = replicas.pick_handle().split.options(num_returns=num_parts).remote(num_parts)
        parts.append(refs if num_parts > 1 else [refs])
    return parts


async def retire(old: ShardSet, timeout_s: float) -> None:
    """Stops a generation: once this returns, none of its replicas answers a call.

    Each replica first refuses calls (retire), so a user actor still holding
    its handle learns to ask for the new shards; then it is killed. A replica
    that did not confirm its retirement is waited for until Ray reports it gone
    (a kill is asynchronous), so no stale read can follow.
    """
    handles = old.handles
    res = await fan_out([lambda h=h: h.retire.remote() for h in handles], timeout_s, 0)
    for handle in handles:
        try:
            ray.kill(handle)
        except Exception:  # already dead
            pass
    await asyncio.gather(*(_gone(handles[i], timeout_s) for i in res.errors))


async def _gone(handle: Any, timeout_s: float) -> None:
    """Returns once calls to a killed actor fail (or after timeout_s, logging it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(asyncio.wrap_future(handle.info.remote().future()), 5)
        except RayActorError:
            return
        except Exception:  # slow, or some other failure: ask again
            pass
        await asyncio.sleep(0.2)
    log.warning("a stopped shard actor was not confirmed gone within %s s", timeout_s)


def drop_files(config: RayrecConfig, old: Generation, current: Generation | None) -> None:
    """Deletes a stopped generation's files; with current, records that nothing is retiring any more."""
    storage = Storage(config.storage)  # type: ignore[arg-type]
    delete_generation(storage, old, config.replicas)
    if current is not None:
        layouts.write_layout(config, current)
