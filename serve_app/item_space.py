"""The item space an ingress replica places text in, kept the system's through model swaps (POST /model)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np

from rayrec.exceptions import InvalidInputError, root_cause
from rayrec.learning import store
from rayrec.learning.placement import check_stored_space
from rayrec.system.deploy import create_shards
from rayrec.system.model_swap import TEXT_SPACE, SpaceChangedError, placer_of, space_of, swap_model

log = logging.getLogger("ray.serve")
T = TypeVar("T")


async def start_placer(encoder: Any, model: str | None, index_dim: int) -> Any:
    """The placer of the space the settings name (a learned model's folder; None: the encoder's own space),
    checked against the encoder and the index before any actor is made. At start the space is the index's own
    dimension; after a swap it may be smaller."""
    placer = placer_of({"path": model})
    encoder_dim = await encoder.dim.remote()
    space_dim = placer.space.dim if placer else encoder_dim
    if placer is not None and placer.space.text_dim != encoder_dim:
        raise InvalidInputError(
            f"model {placer.version} was trained on {placer.space.text_dim}-d text embeddings but the "
            f"encoder gives {encoder_dim}-d ones: serve it with the encoder (model_dir) it was trained with"
        )
    if space_dim != index_dim:
        raise InvalidInputError(
            f"the item space is {space_dim}-d but the item index holds {index_dim}-d "
            "vectors: set the index dim to the space's (the encoder's, or the model's)"
        )
    return placer


class ItemSpace:
    """Which item space this replica serves (self.placer: a learned model's Placer, or None for the encoder's own)
    and how it places text there: items and users by the model's text path, encoded by the encoder deployment.

    The system's space is the router's: a model swap, run by any replica, moves it, and a write that placed
    text in the old one is refused (SpaceChangedError); in_current places it again in the new one.
    """

    def __init__(self, encoder: Any, router: Any, users: list[Any], placer: Any, index_dim: int,
                 models_root: str | None) -> None:
        self.encoder, self.router, self.users = encoder, router, users
        self.placer, self.index_dim, self.models_root = placer, index_dim, models_root
        self.last_swap: dict[str, Any] | None = None  # the last POST /model this replica ran (GET /healthz)

    @property
    def version(self) -> str:
        """The item space's name: the learned model's version, or `text` (the encoder's own space)."""
        return self.placer.version if self.placer is not None else TEXT_SPACE

    async def join(self, storage: str | None, holds_items: bool, model: str | None) -> None:
        """Takes the space of the system this replica joins. A running system, or one a model swap recorded in
        storage, may be in another version than the settings name: serve that one. Else recovered vectors
        must be in the space this replica serves."""
        recorded = await self.router.item_space.remote()
        if recorded is None and storage:
            check_stored_space(storage, self.version, holds_items)
        await self.follow(await self.router.set_item_space.remote(space_of(self.version, model)))

    async def follow(self, space: dict[str, Any] | None = None) -> None:
        """Places text in the item space the system is in now (the router's), loading its model if it moved."""
        space = space if space is not None else await self.router.item_space.remote()
        if space is None or space.get("version") == self.version:
            return
        log.warning("rayrec: the system is in item space %s (a model swap), not %s: serving %s",
                    space.get("version"), self.version, space.get("version"))
        self.placer = placer_of(space, self.index_dim)  # a smaller model's vectors padded to the index's

    async def in_current(self, call: Callable[[], Awaitable[T]]) -> T:
        """Runs call() (which places text and writes it, naming the space) again if a model swap came between."""
        for _ in range(2):
            try:
                return await call()
            except Exception as exc:
                if not isinstance(root_cause(exc), SpaceChangedError):
                    raise
                await self.follow()
        return await call()  # a third try: its error, whatever it is, is the answer

    async def encode(self, texts: list[str]) -> np.ndarray:
        """Text embeddings (n, e) from the encoder deployment."""
        return await self.encoder.encode.remote(texts)

    async def item_vectors(self, ids: list[str], texts: list[str]) -> np.ndarray:
        """Items' vectors: a learned model's own for the items it knows, their text's otherwise."""
        if self.placer is None:
            return await self.encode(texts)
        unknown = self.placer.unknown(ids)
        return self.placer.items(ids, await self.encode([texts[i] for i in unknown]) if unknown else None)

    async def user_vector(self, text: str) -> tuple[str, np.ndarray, np.ndarray]:
        """(the space, a user's vector placed by text there, the text embedding it was placed from)."""
        space, placer = self.version, self.placer
        embedding = await self.encode([text])
        return space, (embedding if placer is None else placer.text(embedding))[0], embedding[0]

    async def swap(self, model: str) -> dict[str, Any]:
        """Moves the running system to another trained model version under traffic (rayrec.system.model_swap):
        model is `latest`, a version or a folder name under the models root. Returns swap_model's answer."""
        folder = store.resolve_named(model, self.models_root).resolve()
        text_dim = int(store.manifest(folder).get("text_dim", 0))
        if text_dim != await self.encoder.dim.remote():
            raise InvalidInputError(
                f"model {folder.name} was trained on {text_dim}-d text embeddings, not this encoder's"
            )
        out = await swap_model(self.router, self.users, str(folder), self.encode, create_shards)
        # Recorded before this replica loads the model: GET /healthz names the new version from the moment the
        # router switched, and its record of the swap follows as soon as the swap has ended.
        self.last_swap = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          **{key: out[key] for key in ("model_version", "previous", "seconds", "users", "items")}}
        await self.follow()
        return out
