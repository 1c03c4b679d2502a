"""Vectors in a learned space for the server: an item's learned vector if the model has one, else its text's.

A space of a smaller dimension than the index it is served in (a system started in the 384-d text
space, swapped live to a 64-d model) is served padded: every item and user vector gets zeros after
its own coordinates, which leaves every dot product and cosine as it was.
"""

from __future__ import annotations

import json

import numpy as np

from rayrec.exceptions import InvalidInputError
from rayrec.learning.store import LearnedSpace

SPACE_MARKER = "item_space.json"  # in a durable system's storage: which item space its vectors are in


def check_stored_space(storage_uri: str, serving: str, holds_items: bool) -> None:
    """Refuses to serve `serving` (a model version, or `text`) over durable state in another item space.

    The space a model swap recorded in layout.json wins; else the marker file; a storage
    without either is taken to hold `text` vectors if it holds items (systems from
    before learned spaces); an empty one is marked for `serving`.
    """
    from rayrec.durability.storage import Storage
    from rayrec.system.layout import read_layout

    storage = Storage(storage_uri)
    swapped = (read_layout(storage) or {}).get("item_space")  # a model swap's record (its commit point)
    if swapped is not None:
        stored = str(swapped["version"])
    elif storage.exists(SPACE_MARKER):
        stored = str(json.loads(storage.read_bytes(SPACE_MARKER))["item_space"])
    elif holds_items:
        stored = "text"
    else:
        storage.write_bytes(SPACE_MARKER, json.dumps({"item_space": serving}).encode())
        return
    if stored != serving:
        raise InvalidInputError(
            f"the storage {storage_uri!r} holds item and user vectors of item space {stored!r}, not {serving!r}: "
            f"serve it with model {stored!r} (--model {stored}), or give "
            "a new storage location; to move it to another version, serve it as it is and POST /model"
        )


def pad(vectors: np.ndarray, dim: int) -> np.ndarray:
    """(n, m) vectors as (n, dim) float32, zeros after their own m <= dim coordinates (dot products unchanged).

    Raises:
        InvalidInputError: m > dim (a space cannot be served in an index of fewer dimensions).
    """
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"pad takes an (n, m) matrix of vectors, got shape {x.shape}")
    if x.shape[1] > dim:
        raise InvalidInputError(f"{x.shape[1]}-d vectors cannot be served in a {dim}-d index (at most {dim}-d)")
    if x.shape[1] == dim:
        return x
    out = np.zeros((x.shape[0], dim), dtype=np.float32)
    out[:, : x.shape[1]] = x
    return out


class Placer:
    """Places items (by id and text embedding) and text-described users in one learned space, as vectors of
    the index it is served in (padded with zeros where the space has fewer dimensions)."""

    def __init__(self, space: LearnedSpace, dim: int | None = None) -> None:
        """dim: the index's dimension (default: the space's); InvalidInputError if the space has more."""
        self.space = space
        self.dim = space.dim if dim is None else int(dim)
        if space.dim > self.dim:
            raise InvalidInputError(
                f"model {space.version} is {space.dim}-d but the index is {self.dim}-d: a model is served in an "
                "index of its own dimension or a larger one (padded), never a smaller one"
            )
        self._row = {item: r for r, item in enumerate(space.item_ids)}

    @property
    def version(self) -> str:
        return self.space.version

    def unknown(self, ids: list[str]) -> list[int]:
        """Positions of the ids the model holds no vector for (their text must be encoded)."""
        return [i for i, item in enumerate(ids) if item not in self._row]

    def items(self, ids: list[str], unknown_text: np.ndarray | None) -> np.ndarray:
        """(n, self.dim) vectors: the model's own for known ids, the text path's (of unknown_text, in the
        order of `unknown(ids)`) for the others; padded to the index's dimension."""
        out = np.empty((len(ids), self.space.dim), dtype=np.float32)
        missing = self.unknown(ids)
        known = [i for i in range(len(ids)) if ids[i] in self._row]
        out[known] = self.space.vectors[[self._row[ids[i]] for i in known]]
        if missing:
            if unknown_text is None or len(unknown_text) != len(missing):
                raise ValueError(
                    f"{len(missing)} items need a text embedding, "
                    f"got {0 if unknown_text is None else len(unknown_text)}"
                )
            out[missing] = self.space.place(unknown_text)
        return pad(out, self.dim)

    def text(self, embeddings: np.ndarray) -> np.ndarray:
        """Text embeddings (of new items, or of users described by text) placed in the space: (n, self.dim)."""
        return pad(self.space.place(embeddings), self.dim)
