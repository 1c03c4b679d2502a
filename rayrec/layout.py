"""The layout a storage location was written with: shards, user actors and dimension must match."""

from __future__ import annotations

import json

from rayrec.config import RayrecConfig
from rayrec.exceptions import InvalidInputError
from rayrec.storage import Storage

LAYOUT_FILE = "layout.json"


def layout_of(config: RayrecConfig) -> dict[str, int | str]:
    return {
        "dim": config.index.dim,
        "num_shards": config.num_shards,
        "num_user_actors": config.num_user_actors,
        "replicas": config.replicas,
    }


def check_layout(config: RayrecConfig) -> None:
    """Records the layout in a new storage location, or checks it against the one recorded.

    Items and users are placed by a hash over the number of shards and user
    actors, so state written with other numbers would land on the wrong actors.
    """
    assert config.storage is not None
    storage = Storage(config.storage)
    want = layout_of(config)
    if not storage.exists(LAYOUT_FILE):
        storage.write_bytes(LAYOUT_FILE, json.dumps(want).encode())
        return
    try:
        have = json.loads(storage.read_bytes(LAYOUT_FILE))
    except ValueError as exc:
        raise InvalidInputError(f"{config.storage}/{LAYOUT_FILE} is not a rayrec layout file: {exc}") from None
    if have != want:
        diff = ", ".join(f"{k}: stored {have.get(k)!r}, configured {v!r}" for k, v in want.items() if have.get(k) != v)
        raise InvalidInputError(
            f"storage {config.storage!r} holds a rayrec system with another layout ({diff}); "
            "start with the stored layout, or point storage at an empty location"
        )
