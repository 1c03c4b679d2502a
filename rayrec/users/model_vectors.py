"""A user model's vectors for the users of a store (rayrec.users.user_state.UserStore holds one of these).

The model computes a user's vector from their recent events; the store hands over
each user's kept history (`kept`). Every vector the model gives is checked (width,
finite) and normalised; None where it gives none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from rayrec.users.feedback_batch import windows
from rayrec.validation import check_vectors

Events = Sequence[tuple[str, str]]  # (item id, event) pairs, oldest first


class UserModel(Protocol):
    """What computes a user's vector from their recent events (rayrec.users.sequential_user.SequentialUser)."""

    def knows(self, item_id: str) -> bool: ...

    def encode(self, events: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]: ...

    def vectors_of(self, rows: np.ndarray, types: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ModelVectors:
    """The user model in use (self.model; None: the rule moves users) and the vectors it computes."""

    def __init__(self, dim: int, history_len: int, kept: Callable[[str], list[tuple[str, str]]],
                 model: UserModel | None = None) -> None:
        """dim: the index's; history_len: the events kept per user; kept: a user's kept history (events)."""
        self.dim, self.history_len, self._kept = dim, history_len, kept
        self.model = model

    def knows(self, events: Events) -> bool:
        """Whether there is a model and it knows every one of these events' items."""
        return self.model is not None and all(self.model.knows(i) for i, _ in events)

    def vector(self, user_id: str, events: Events) -> np.ndarray | None:
        """The model's vector for the user after their kept history and then events; None without a model,
        when it does not know one of these events' items (the rule moves the user then), or when it knows
        none of the user's."""
        if not self.knows(events):
            return None
        return self.of([*self._kept(user_id), *events])

    def of(self, events: Events) -> np.ndarray | None:
        """The model's vector after exactly these events; None without a model or where it gives none."""
        if self.model is None or not events:
            return None
        rows, types = self.model.encode(events)
        return self._checked(*self.model.vectors_of(rows[None], types[None]))[0]

    def vectors(self, user_id: str, events: Events) -> list[np.ndarray | None]:
        """vector at each of events in turn, as if each event before it had been committed (the kept history
        then holds them, its last history_len), in one batched pass of the model; None where vector would
        give None for that event alone."""
        return self.many([(user_id, events)])[0]

    def many(self, asks: Sequence[tuple[str, Events]], last_only: Sequence[bool] | None = None
             ) -> list[list[np.ndarray | None]]:
        """vectors of each (user id, events), every user's in one batched pass of the model; where last_only
        (one flag an ask) is set, only at that user's last event the model knows (None at the others)."""
        if self.model is None:
            return [[None] * len(events) for _, events in asks]
        encoded, asked = [], []
        for n, (user_id, events) in enumerate(asks):
            kept = self._kept(user_id)
            rows, types = self.model.encode([*kept, *events])
            mine = [t for t, (item, _) in enumerate(events) if self.model.knows(item)]
            mine = mine[-1:] if last_only is not None and last_only[n] else mine
            encoded.append((rows, types, [len(kept) + t for t in mine]))
            asked.append(mine)
        vectors = self._checked(*self.model.vectors_of(*windows(encoded, self.history_len + 1)))
        out, at = [], 0
        for (_, events), mine in zip(asks, asked, strict=True):
            got: list[np.ndarray | None] = [None] * len(events)
            for t in mine:
                got[t], at = vectors[at], at + 1
            out.append(got)
        return out

    def _checked(self, vectors: np.ndarray, live: np.ndarray) -> list[np.ndarray | None]:
        """The model's (B, dim) vectors checked (width, finite) and normalised; None where it gave none."""
        if not live.any():
            return [None] * len(live)
        ok = check_vectors(vectors[live], self.dim, what="user vector")
        out: list[np.ndarray | None] = [None] * len(live)
        for n, v in zip(np.flatnonzero(live), ok, strict=True):
            out[n] = v
        return out
