"""Creating, finding and re-sharding the actors of a rayrec system (the driver and the ingress use this)."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any

import ray
from ray.exceptions import RayTaskError

from rayrec import constants as C
from rayrec.config import RayrecConfig
from rayrec.exceptions import InvalidInputError, LayoutChangedError, root_cause
from rayrec.system.layout import Generation, check_layout

log = logging.getLogger(__name__)

ROUTER_NAME = "router"
RESHARD_ATTEMPTS = 3  # plans made again when another re-shard won the race


def users_name(i: int) -> str:
    """The Ray actor name of user-vector actor i."""
    return f"users-{i}"


def get(ref: Any, timeout_s: float | None = None) -> Any:
    """ray.get that raises the error an actor raised, not Ray's wrapper around it."""
    try:
        return ray.get(ref, timeout=timeout_s)
    except RayTaskError as exc:
        cause = root_cause(exc)
        if cause is exc:
            raise
        raise cause from None


def shard_nodes(config: RayrecConfig) -> list[str]:
    """Ids of the live nodes that can hold a shard replica (its CPU claim and custom resources), sorted."""
    need = {"CPU": config.shard_num_cpus, **config.shard_resources}
    return sorted(
        node["NodeID"]
        for node in ray.nodes()
        if node["Alive"] and all(node["Resources"].get(k, 0) >= v for k, v in need.items() if v > 0)
    )


def replica_placement(nodes: list[str], shard: int, replica: int, replicas: int) -> Any:
    """Where replica r of shard i goes: node (i + r) mod n, so a shard's replicas never share a node.

    Soft affinity: if that node is gone when Ray restarts the replica, any node
    will do. With fewer suitable nodes than replicas: Ray's SPREAD, best effort.
    """
    if replicas == 1:
        return "DEFAULT"
    if len(nodes) < replicas:
        return "SPREAD"
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=nodes[(shard + replica) % len(nodes)], soft=True)


def _lifecycle(config: RayrecConfig, detached: bool) -> dict[str, Any]:
    """Actor options every rayrec actor shares: namespace, restarts, lifetime."""
    # Ray restarts a crashed actor (its constructor recovers its state from storage) and
    # resends the calls it was running once it is back.
    # Without storage a restarted actor would come back empty and answer wrongly: it stays dead.
    durable = config.storage is not None
    common: dict[str, Any] = {
        "namespace": config.namespace,
        "max_restarts": config.max_restarts if durable else 0,
        "max_task_retries": C.ACTOR_MAX_TASK_RETRIES if durable else 0,
    }
    if detached:
        common["lifetime"] = "detached"
    return common


def create_shards(config: RayrecConfig, generation: Generation, detached: bool) -> list[list[Any]]:
    """Starts the shard actors of one generation; per shard, its replicas' handles."""
    from rayrec.actors.shard import ShardActor

    nodes = shard_nodes(config) if config.replicas > 1 else []
    return [
        [
            ShardActor.options(
                name=generation.actor_name(i, r),
                num_cpus=config.shard_num_cpus,
                resources=config.shard_resources,
                scheduling_strategy=replica_placement(nodes, i, r, config.replicas),
                **_lifecycle(config, detached),
            ).remote(config, i, C.SHARD_SEARCH_THREADS, r, generation, True)
            for r in range(config.replicas)
        ]
        for i in range(generation.num_shards)
    ]


def attach_actors(namespace: str) -> tuple[RayrecConfig, Any, list[Any], list[Any]] | None:
    """The config, router, shards and user actors of the system in namespace (None if none runs)."""
    try:
        router = ray.get_actor(ROUTER_NAME, namespace=namespace)
    except ValueError:
        return None
    config: RayrecConfig = get(router.get_config.remote())
    shards = get(router.get_shards.remote())
    users = [ray.get_actor(users_name(i), namespace=namespace) for i in range(config.num_user_actors)]
    return config, router, shards, users


def build_actors(
    config: RayrecConfig, detached: bool = False, attach: bool = False
) -> tuple[Any, list[Any], list[Any]]:
    """Creates the named shard, router and user-vector actors of a rayrec system.

    The configured shard count is the one the system ends with: a system
    attached to, or recovered from storage, with another count is re-sharded
    to it (see reshard).

    Args:
        config: the system's settings (its namespace names the actors).
        detached: keep the actors alive after the creating process exits.
        attach: if a system with an equal config (but for its shard count) already runs there, return it.

    Returns:
        (router, shards, user_actors) handles.
    """
    from rayrec.actors.router import RouterActor
    from rayrec.actors.user_vectors import UserVectorActor

    existing = attach_actors(config.namespace)
    if existing is not None and attach and dataclasses.replace(existing[0], num_shards=config.num_shards) == config:
        router = existing[1]
        try:
            reshard(router, config.num_shards)
        except Exception as exc:  # the system serves on at its current count: say so, do not fail the caller
            log.warning(
                "rayrec: re-sharding to %d shards failed (%s); serving with the current shards", config.num_shards, exc
            )
        return router, get(router.get_shards.remote()), existing[3]
    if existing is not None:
        raise InvalidInputError(
            f"a rayrec system already runs in Ray namespace {config.namespace!r}: attach to it with "
            "Rayrec.connect(namespace=...) or start this one in another namespace"
        )
    generation = check_layout(config) if config.storage is not None else Generation.first(config.num_shards)
    stored = dataclasses.replace(config, num_shards=generation.num_shards)
    created: list[Any] = []  # stopped again if the system does not come up (e.g. refused by the writer fence)
    try:
        groups = create_shards(stored, generation, detached)
        created += [replica for group in groups for replica in group]
        common = _lifecycle(config, detached)
        control = {"resources": config.control_resources}
        router = RouterActor.options(name=ROUTER_NAME, num_cpus=config.router_num_cpus, **control, **common).remote(
            stored, groups, generation, detached, require_shared=True
        )
        created.append(router)
        users = []
        for i in range(config.num_user_actors):
            options = {"name": users_name(i), "num_cpus": config.user_actor_num_cpus, **control, **common}
            users.append(UserVectorActor.options(**options).remote(stored, router, i, True))
            created.append(users[-1])
        get(router.count.remote())  # waits until every shard and the router are up
        get(router.check_replicas.remote())  # replicas left behind their peers by a crash get no reads from now on
        get([u.count.remote() for u in users])
    except BaseException:
        for actor in created:  # a half-built system must not keep its names (or its storage) taken
            ray.kill(actor, no_restart=True)
        raise
    if generation.num_shards != config.num_shards:
        reshard(router, config.num_shards)
    return router, get(router.get_shards.remote()), users


def reshard(router: Any, num_shards: int) -> dict[str, Any]:
    """Re-shards a running system to num_shards shards (no-op if it has that many).

    Starts the new generation's actors here (same lifetime and placement rules
    as the first; this process owns them unless the system is detached), then
    the router copies every item onto them and switches; reads go on
    throughout, writes wait for the copy. On failure the router stops the new
    actors and the system keeps its old shards.

    Returns:
        The router's summary ({"from_shards", "to_shards", "generation", "items", "seconds"}),
        or {"to_shards": n, "changed": False} when there was nothing to do.
    """
    if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
        raise InvalidInputError(f"the number of shards must be a positive integer, got {num_shards!r}")
    for _ in range(RESHARD_ATTEMPTS):
        config, current, detached = get(router.get_layout.remote())
        if current.num_shards == num_shards:
            return {"to_shards": num_shards, "changed": False}
        new = Generation(current.number + 1, uuid.uuid4().hex[:8], num_shards)
        groups = create_shards(dataclasses.replace(config, num_shards=num_shards), new, detached)
        try:
            return {**get(router.reshard.remote(groups, new, current.number)), "changed": True}
        except LayoutChangedError:  # another re-shard switched first; the router stopped these actors
            continue
        except BaseException:
            # The router decides: it stops them unless they were switched in (it may still be working).
            router.abandon.remote(new, groups)
            raise
    raise LayoutChangedError(f"other re-shards kept changing the shards; {RESHARD_ATTEMPTS} attempts made")
