"""Vectors in a learned space for the server: an item's learned vector if the model has one, else its text's."""

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
            f"serve it with model {stored!r} ({'no --model' if stored == 'text' else '--model ' + stored}), or give "
            "a new storage location; to move it to another version, serve it as it is and POST /model"
        )


class Placer:
    """Places items (by id and text embedding) and text-described users in one learned space."""

    def __init__(self, space: LearnedSpace) -> None:
        self.space = space
        self._row = {item: r for r, item in enumerate(space.item_ids)}

    @property
    def version(self) -> str:
        return self.space.version

    def unknown(self, ids: list[str]) -> list[int]:
        """Positions of the ids the model holds no vector for (their text must be encoded)."""
        return [i for i, item in enumerate(ids) if item not in self._row]

    def items(self, ids: list[str], unknown_text: np.ndarray | None) -> np.ndarray:
        """(n, dim) vectors: the model's own for known ids, the text path's (of unknown_text, in the
        order of `unknown(ids)`) for the others."""
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
        return out

    def text(self, embeddings: np.ndarray) -> np.ndarray:
        """Text embeddings (of new items, or of users described by text) placed in the space."""
        return self.space.place(embeddings)
