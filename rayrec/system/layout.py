"""The layout of a rayrec system: its shard generation, and what a storage location was written with.

Items are placed by a stable hash of their id over the number of shards, so
re-sharding makes a new generation of shard actors (their own names and
storage directories) that runs side by side with the old one until the switch.
In storage, layout.json names the current generation; rewriting it is the
switch's commit point.
"""

from __future__ import annotations

import json
import posixpath
import socket
from dataclasses import asdict, dataclass
from typing import Any

from rayrec.config import RayrecConfig
from rayrec.durability.storage import Storage
from rayrec.exceptions import InvalidInputError, RayrecError

LAYOUT_FILE = "layout.json"
# Written once, when the system first acknowledges an item write: from then on a start never loads the
# configured catalog again, even into a system whose items were all deleted (that would undo acknowledged writes).
SEEDED_FILE = "seeded"
GENERATION_DIR_PREFIX = "gen-"
SHARD_DIR_PREFIX = "shard-"
# What must match between a configured system and its storage; the shard count may differ (re-sharding).
FIXED_KEYS = ("dim", "num_user_actors", "replicas")


@dataclass(frozen=True, slots=True)
class Generation:
    """One set of shard actors: its number (0 = the first), a token unique to it, and its shard count."""

    number: int
    token: str
    num_shards: int

    @property
    def directory(self) -> str:
        """The storage directory of this generation's shards ("" for generation 0: the root)."""
        return "" if self.number == 0 else f"{GENERATION_DIR_PREFIX}{self.number}-{self.token}"

    def storage_name(self, shard: int, replica: int = 0) -> str:
        """The storage directory of one shard replica, relative to the storage root."""
        name = f"{SHARD_DIR_PREFIX}{shard}" + (f"-replica-{replica}" if replica else "")
        return posixpath.join(self.directory, name) if self.directory else name

    def actor_name(self, shard: int, replica: int = 0) -> str:
        """The Ray actor name of one shard replica (unique across generations)."""
        name = f"shard-{shard}" + (f"-replica-{replica}" if replica else "")
        return name if self.number == 0 else f"g{self.number}-{self.token}-{name}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def first(cls, num_shards: int) -> Generation:
        return cls(0, "", num_shards)


def _fixed(config: RayrecConfig) -> dict[str, int]:
    return {"dim": config.index.dim, "num_user_actors": config.num_user_actors, "replicas": config.replicas}


def read_layout(storage: Storage) -> dict[str, Any] | None:
    """The recorded layout of a storage location (None for a new location)."""
    if not storage.exists(LAYOUT_FILE):
        return None
    try:
        layout = json.loads(storage.read_bytes(LAYOUT_FILE))
        Generation(int(layout.get("generation", 0)), str(layout.get("token", "")), int(layout["num_shards"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{storage.uri}/{LAYOUT_FILE} is not a rayrec layout file: {exc}") from None
    return layout


def generation_of(layout: dict[str, Any]) -> Generation:
    return Generation(int(layout.get("generation", 0)), str(layout.get("token", "")), int(layout["num_shards"]))


def retiring_of(layout: dict[str, Any]) -> Generation | None:
    """The generation a re-shard switched away from, while its actors and files may still exist."""
    old = layout.get("retiring")
    return None if old is None else Generation(int(old["number"]), str(old["token"]), int(old["num_shards"]))


def write_layout(
    config: RayrecConfig,
    current: Generation,
    retiring: Generation | None = None,
    item_space: dict[str, Any] | None = None,
) -> None:
    """Records the current generation (atomically: this is a re-shard's and a model swap's commit point).

    item_space: the item space the current generation's vectors are in (a model swap records it);
    None keeps the one recorded (if any).
    """
    assert config.storage is not None
    storage = Storage(config.storage)
    if item_space is None and storage.exists(LAYOUT_FILE):
        item_space = (read_layout(storage) or {}).get("item_space")
    layout: dict[str, Any] = {
        **_fixed(config),
        "num_shards": current.num_shards,
        "generation": current.number,
        "token": current.token,
    }
    if retiring is not None:
        layout["retiring"] = retiring.as_dict()
    if item_space is not None:
        layout["item_space"] = dict(item_space)
    storage.write_bytes(LAYOUT_FILE, json.dumps(layout).encode())


def check_layout(config: RayrecConfig) -> Generation:
    """Records the layout in a new storage location, or checks it against the one recorded.

    Users are placed by a hash over the number of user actors, so state written
    with another count (or dimension, or replica count) would land on the wrong
    actors: that is refused. The shard count may differ from the configured
    one: the stored generation is returned, and the caller re-shards to the
    configured count once it runs.
    """
    assert config.storage is not None
    storage = Storage(config.storage)
    have = read_layout(storage)
    if have is None:
        first = Generation.first(config.num_shards)
        write_layout(config, first)
        return first
    want = _fixed(config)
    if any(have.get(k) != v for k, v in want.items()):
        diff = ", ".join(f"{k}: stored {have.get(k)!r}, configured {v!r}" for k, v in want.items() if have.get(k) != v)
        raise InvalidInputError(
            f"storage {config.storage!r} holds a rayrec system with another layout ({diff}); "
            "start with the stored layout, or point storage at an empty location"
        )
    return generation_of(have)


class StorageNotSharedError(RayrecError):
    """An actor's node does not see the storage the system's layout was written to."""


def require_layout(config: RayrecConfig) -> None:
    """Refuses to start an actor whose node does not see the system's layout.json.

    The driver records the layout before it creates any actor; an actor that does not find it is on a node
    where the storage location is another directory (a local path on a cluster without a shared
    filesystem). Starting there would recover nothing and silently serve an empty state.
    """
    assert config.storage is not None
    storage = Storage(config.storage)
    if not storage.exists(LAYOUT_FILE):
        raise StorageNotSharedError(
            f"storage {config.storage!r} on node {socket.gethostname()} holds no {LAYOUT_FILE}: the system's "
            "layout was written elsewhere, so this node does not share the storage. Use a location every node "
            "reaches (a shared filesystem, s3://, gs://), or keep every actor on the node that holds it"
        )


def delete_generation(storage: Storage, generation: Generation, replicas: int) -> None:
    """Deletes the files of a generation's shards (after its actors are stopped)."""
    if generation.directory:
        storage.delete_tree(generation.directory)
        return
    for shard in range(generation.num_shards):
        for replica in range(replicas):
            storage.delete_tree(generation.storage_name(shard, replica))


def stray_generations(storage: Storage, keep: Generation) -> list[str]:
    """Generation directories other than keep's: left by re-shards that failed or were superseded."""
    return [d for d in storage.dirs() if d.startswith(GENERATION_DIR_PREFIX) and d != keep.directory]
