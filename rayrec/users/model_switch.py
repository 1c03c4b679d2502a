"""The user side of a model swap: which user model moves a partition's users, and the steps that change it.

A plain async class, held by the user actor (actors/user_vectors.py) beside the
swap's pause (rayrec.users.swap_state.SwapState), which calls adopt and rederive
at the switch. It reads the router only through the two callables it is handed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from rayrec.exceptions import InvalidInputError
from rayrec.system.model_swap import placer_of
from rayrec.users.rederiving import rederive_all
from rayrec.users.user_models import UserModels
from rayrec.users.user_state import UserStore

log = logging.getLogger(__name__)


class ModelSwitch:
    """The user model in use (self.name: "sequential" or "rule"; self.error: why a model due is not in use), and
    a swap's check, adoption and re-derivation of every user in the new space."""

    def __init__(
        self, configured: str | None, dim: int, store: UserStore,
        vectors_of: Callable[[list[str]], Awaitable[tuple[np.ndarray, list[bool]]]],
        cold_start: Callable[[], Awaitable[np.ndarray]],
    ) -> None:
        """configured: RayrecConfig.user_model; dim: the index's; vectors_of: the items' vectors in the served
        space and whether each was found (the router's); cold_start: the vector a user with nothing starts from."""
        self.dim, self.store = dim, store
        self.models = UserModels(configured, dim)
        self._vectors_of, self._cold_start = vectors_of, cold_start
        self.name, self.error = self.models.name, None
        self._use_current()

    def _use_current(self) -> None:
        """Has the model of self.models move the users (the rule if none), and says which."""
        error = self.models.error
        if error is not None and error != self.error:  # the rule serves, and says so
            log.warning("rayrec: %s; the feedback rule moves users", error)
        self.store.by_model.model = self.models.model
        self.name = self.models.name  # in info and every answer
        self.error = error

    async def prepare(self, space: dict[str, Any]) -> int | None:
        """Before a swap's pause: checks space's model and user model can be read here (else raises, nothing
        swapped) and keeps the user model for the switch. Returns the text dimension space places users by
        text from (None: it places none; see cannot_move)."""
        placer = await asyncio.to_thread(placer_of, space, self.dim)
        loaded = await asyncio.to_thread(self.models.load, space)
        if loaded[1] is not None:
            raise InvalidInputError(f"{loaded[1]}: nothing was swapped")
        self.models.keep(loaded)  # taken at the switch without loading it again
        return None if placer is None else placer.space.text_dim

    def cannot_move(self, text_dim: int | None) -> list[str]:
        """The users that cannot be placed in a space placing text of text_dim (prepare's answer), sorted: set by
        a raw vector, or by a text embedding of another encoder."""

        def stuck(base: Any) -> bool:
            return base is not None and (base[0] is None or (text_dim is not None and len(base[0]) != text_dim))

        return sorted(u for u, state in self.store.items() if stuck(state.base))

    def release(self) -> None:
        """After a swap's resume: drops the model kept for it (in use since the switch, or not needed)."""
        self.models.keep(None)

    async def adopt(self, space: dict[str, Any]) -> None:
        """The users are in `space` from now on (the router's): its user model moves them (none: the rule)."""
        self.models.use(await asyncio.to_thread(self.models.load, space))
        self._use_current()

    async def rederive(self, space: dict[str, Any]) -> int:
        """Every user's vector from their kept history, in `space` (the one the router now serves, its user
        model taken): by that model where it knows them, else by the rule; users set by text start from
        their text embedding placed by that model's text path (rayrec.users.rederiving). Returns the users."""
        placer = await asyncio.to_thread(placer_of, space, self.dim)
        unique = sorted({i for _, state in self.store.items() for i, _, _ in state.history})
        vectors: dict[str, np.ndarray] = {}
        if unique:
            found_vectors, found = await self._vectors_of(unique)
            vectors = {item: found_vectors[n] for n, item in enumerate(unique) if found[n]}
        mean = await self._cold_start()
        done = rederive_all(self.store, vectors, mean, None if placer is None else placer.text, space.get("version"))
        log.info("rayrec: %d users re-derived in %s, %d by the %s user model",
                 done["users"], space.get("version"), done["by_model"], self.name)
        return done["users"]
