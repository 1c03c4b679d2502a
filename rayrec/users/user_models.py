"""Which user model moves a user actor's users in each item space, without Ray.

A sequential model version holds its user model in <version>/user_model/ (rayrec.learning.store.USER_MODEL):
in that item space every user is computed from their events by it. Another version has none: the feedback
rule moves its users. A space without a model folder (the encoder's text space, a driver's unnamed one)
keeps the one the system was configured with (RayrecConfig.user_model). A model of fewer dimensions than
the index (served padded, see rayrec.learning.placement.pad) gives padded user vectors too (Padded).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayrec.exceptions import InvalidInputError
from rayrec.users import model_files
from rayrec.users.sequential_user import SequentialUser

RULE = "rule"  # what answers name when no user model moves the users: the feedback rule


@dataclass(frozen=True, slots=True)
class Padded:
    """A user model whose vectors are served in an index of more dimensions: zeros after the model's own."""

    model: SequentialUser
    dim: int  # the index's

    def knows(self, item_id: str) -> bool:
        return self.model.knows(item_id)

    def encode(self, events: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        return self.model.encode(events)

    def vectors_of(self, rows: np.ndarray, types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from rayrec.learning.placement import pad

        vectors, live = self.model.vectors_of(rows, types)
        return pad(vectors, self.dim), live

    def vector(self, events: Sequence[tuple[str, str]]) -> np.ndarray | None:
        vectors, live = self.vectors_of(*(a[None] for a in self.encode(events)))
        return vectors[0] if live[0] else None


Model = SequentialUser | Padded
Loaded = tuple[Model | None, str | None, str | None]  # (the model, why none where one was due, its folder)


def folder_of(space: dict[str, Any] | None, configured: str | None) -> tuple[str | None, int | None]:
    """(the user model folder of an item space, the dimension its users have: None for the index's own).

    Args:
        space: rayrec.system.model_swap.space_of record ({"version", "path"}), or None (not known yet).
        configured: RayrecConfig.user_model.

    Raises:
        InvalidInputError: the version's manifest is unreadable, or names no dim.
    """
    from rayrec.learning import store

    path = (space or {}).get("path")
    if not path:
        return configured, None
    info = store.manifest(path)
    if info.get("kind") != model_files.KIND:
        return None, None
    try:
        return os.path.join(str(path), store.USER_MODEL), int(info["dim"])
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError(f"model folder {path}: its manifest names no dim") from None


def of_space(space: dict[str, Any] | None, configured: str | None, dim: int) -> Loaded:
    """The user model of an item space served in a dim-d index, loaded (see folder_of for which one).

    A version's model is checked against the version's own dimension, then padded to dim if that is smaller.
    Returns (model, None, folder), (None, why it cannot serve, folder), or (None, None, None) for a space
    without a user model.
    """
    try:
        folder, model_dim = folder_of(space, configured)
    except InvalidInputError as exc:
        return None, f"the user model of item space {(space or {}).get('version')!r} is unknown: {exc}", None
    if folder is None:
        return None, None, None
    model_dim = dim if model_dim is None else model_dim
    if model_dim > dim:
        return None, f"user model {folder!r} not loaded: its users are {model_dim}-d, the index {dim}-d", folder
    model, error = model_files.load_checked(folder, model_dim)
    if model is not None and model_dim < dim:
        return Padded(model, dim), None, folder
    return model, error, folder


class UserModels:
    """The user model in use (of the item space the users are in), and the one a model swap prepared.

    load() reads files (run it off the event loop); keep() and use() only assign (run them on it).
    """

    def __init__(self, configured: str | None, dim: int) -> None:
        """configured: RayrecConfig.user_model, in use until a space is taken. dim: the index's."""
        self.configured, self.dim = configured, dim
        self.model, self.error, self.folder = of_space(None, configured, dim)
        self.prepared: Loaded | None = None  # loaded at a swap's pause, used from its switch on

    @property
    def name(self) -> str:
        """What moves the users: "sequential" (the model), or "rule"."""
        return RULE if self.model is None else model_files.KIND

    def load(self, space: dict[str, Any]) -> Loaded:
        """Space's user model: the one in use or prepared if it is the same folder's, else loaded now."""
        try:
            folder, _ = folder_of(space, self.configured)
        except InvalidInputError:
            folder = None
        for loaded in ((self.model, self.error, self.folder), self.prepared):
            if loaded is not None and folder is not None and loaded[2] == folder and loaded[0] is not None:
                return loaded  # a version's folder is written once: the same folder holds the same model
        return of_space(space, self.configured, self.dim)

    def keep(self, loaded: Loaded | None) -> None:
        """Holds a model loaded ahead of a switch (None: drops it)."""
        self.prepared = loaded

    def use(self, loaded: Loaded) -> None:
        """Moves the users by loaded's model from now on (the rule if it is None)."""
        self.model, self.error, self.folder = loaded
        self.prepared = None
