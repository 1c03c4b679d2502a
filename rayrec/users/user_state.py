"""User interest vectors: the users of a partition, each change planned then committed, without Ray."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayrec.config import FeedbackRule
from rayrec.exceptions import InvalidInputError
from rayrec.users.feedback_rule import (
    FEEDBACK,
    HISTORY,
    REDERIVED,
    VECTOR,
    decay_factor,
    first_start,
    history_vector,
    normalise,
    update_vector,
)
from rayrec.users.model_vectors import ModelVectors, UserModel
from rayrec.validation import check_event, check_id, check_vectors


@dataclass(slots=True)
class UserChange:
    """One change to one user, as planned and as logged: its result, not its inputs.

    Replaying a change sets the user to exactly what it was, however the
    catalog (cold-start mean, item vectors) or the clock (decay) moved since.
    """

    kind: str  # FEEDBACK, VECTOR, HISTORY or REDERIVED
    user_id: str
    version: int
    vector: np.ndarray
    updated_at: float
    event_id: str | None = None
    event: str | None = None  # the feedback event type
    items: list[str] = field(default_factory=list)  # the feedback's item, or the history
    source: np.ndarray | None = None  # VECTOR: the text embedding it was placed from (None: a raw vector)


@dataclass(slots=True)
class UserState:
    """One user: interest vector, version, bounded history and applied event ids."""

    vector: np.ndarray
    version: int = 0
    updated_at: float = 0.0
    history: deque[tuple[str, str, float]] = field(default_factory=deque)
    event_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    # Set by a vector: (the text embedding it was placed from, or None for a raw vector; when). A model
    # swap starts such a user there (placed again) instead of from their history's beginning.
    base: tuple[np.ndarray | None, float] | None = None

    def export(self, user_id: str) -> dict[str, Any]:
        """Everything kept about the user (GET /users/{id}/export): as_dict, the remembered event ids, and
        the text embedding its vector was placed from."""
        out = self.as_dict(user_id)
        out["vector"] = out["vector"].tolist()
        out["event_ids"] = list(self.event_ids)
        embedding, at = self.base if self.base is not None else (None, None)
        out["placed_from"] = None if self.base is None else {
            "text_embedding": None if embedding is None else np.asarray(embedding).tolist(), "at": at}
        return out

    def as_dict(self, user_id: str) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "vector": self.vector.copy(),
            "version": self.version,
            "updated_at": self.updated_at,
            "history": [{"item_id": i, "event": e, "timestamp": t} for i, e, t in self.history],
        }


class UserStore:
    """The users of one partition, updated by the feedback rule (or by_model's user model)."""

    __slots__ = ("dim", "rule", "_clock", "_users", "by_model")  # store.by_model.model, never a store.model

    def __init__(
        self, dim: int, rule: FeedbackRule, clock: Callable[[], float] = time.time, model: UserModel | None = None
    ) -> None:
        self.dim = dim
        self.rule = rule
        self._clock = clock
        self._users: dict[str, UserState] = {}
        # The user model, if any, computes a user's vector from their recent events (None: the rule moves users).
        self.by_model = ModelVectors(dim, rule.history_len, self._kept, model)

    def _kept(self, user_id: str) -> list[tuple[str, str]]:
        state = self._users.get(user_id)
        return [] if state is None else [(i, e) for i, e, _ in state.history]

    def __len__(self) -> int:
        return len(self._users)

    def get(self, user_id: str) -> UserState | None:
        return self._users.get(user_id)

    def delete(self, user_id: str) -> bool:
        """Forgets a user entirely (vector, history, event ids); True if it was known."""
        return self._users.pop(user_id, None) is not None

    def seen(self, user_id: str) -> list[str]:
        """Item ids in the user's recent history (what exclude_seen excludes)."""
        state = self._users.get(user_id)
        return [] if state is None else list(dict.fromkeys(i for i, _, _ in state.history))

    def applied(self, user_id: str, event_id: str | None) -> bool:
        """Whether this event id was already applied to this user."""
        state = self._users.get(user_id)
        return event_id is not None and state is not None and event_id in state.event_ids

    def _state(self, user_id: str) -> UserState:
        state = self._users.get(user_id)
        if state is None:
            state = UserState(
                vector=np.zeros(self.dim, dtype=np.float32),
                history=deque(maxlen=self.rule.history_len),
            )
            self._users[user_id] = state
        return state

    def _next_version(self, user_id: str) -> int:
        state = self._users.get(user_id)
        return 1 if state is None else state.version + 1

    # ----- plan: the change an operation makes, without making it --------
    def plan_vector(
        self, user_id: str, vector: Any, event_id: str | None = None, source: np.ndarray | None = None
    ) -> UserChange | None:
        """The change that sets a user's vector; None if event_id was already applied.

        source: the text embedding the vector was placed from (kept, so a model swap can place it again).
        """
        user_id = check_id(user_id, "user id")
        vec = check_vectors(vector, self.dim, what="user vector")
        if vec.shape[0] != 1:
            raise InvalidInputError(f"a user vector is one vector, got {vec.shape[0]}")
        if self.applied(user_id, event_id):
            return None
        if source is not None:
            source = np.asarray(source, np.float32).reshape(-1)
            if not np.all(np.isfinite(source)):
                raise InvalidInputError("a user's text embedding contains NaN or infinite values")
        return UserChange(VECTOR, user_id, self._next_version(user_id), vec[0], self._clock(), event_id, source=source)

    def plan_rederived(self, user_id: str, vector: np.ndarray) -> UserChange:
        """The change that puts a user's vector computed again in another item space (history unchanged)."""
        state = self._users[user_id]
        return UserChange(
            REDERIVED, user_id, state.version + 1, normalise(np.asarray(vector, np.float32)), state.updated_at
        )

    def plan_history(
        self, user_id: str, item_ids: Sequence[str], vectors: np.ndarray, event_id: str | None = None
    ) -> UserChange | None:
        """The change that sets a user from a history (oldest first): the recency-weighted mean."""
        user_id = check_id(user_id, "user id")
        if len(item_ids) != vectors.shape[0]:
            raise InvalidInputError(f"got {len(item_ids)} history items but {vectors.shape[0]} vectors")
        if self.applied(user_id, event_id):
            return None
        items = list(item_ids)[-self.rule.history_len :]
        vec = self.by_model.of([(i, HISTORY) for i in items])
        if vec is None:
            vec = history_vector(check_vectors(vectors, self.dim, what="item vector"), self.rule.history_recency)
        return UserChange(HISTORY, user_id, self._next_version(user_id), vec, self._clock(), event_id, items=items)

    def plan_feedback(
        self,
        user_id: str,
        item_id: str,
        event: str,
        item_vector: np.ndarray | None,
        event_id: str | None = None,
        start: np.ndarray | None = None,
        model_vector: np.ndarray | None = None,
    ) -> UserChange | None:
        """The change one feedback event makes: the user's vector becomes model_vector where the model gave
        one (model_vector), else the rule moves it toward or away from item_vector (see apply)."""
        user_id = check_id(user_id, "user id")
        item_id = check_id(item_id)
        event = check_event(event)
        if self.applied(user_id, event_id):
            return None
        now = self._clock()
        if model_vector is not None:
            return UserChange(FEEDBACK, user_id, self._next_version(user_id), model_vector, now, event_id, event,
                              [item_id])
        if item_vector is None:
            raise ValueError("plan_feedback needs the item's vector when no model vector is given")
        x = check_vectors(item_vector, self.dim, what="item vector")[0]
        state = self._users.get(user_id)
        rate = self.rule.learning_rates[event]
        if state is not None:
            v = state.vector
            decay = decay_factor(now - state.updated_at, self.rule.decay_half_life_s)
        else:
            v = first_start(rate, start, self.dim)
            decay = 1.0
        vector = update_vector(v, x, rate, decay)
        return UserChange(FEEDBACK, user_id, self._next_version(user_id), vector, now, event_id, event, [item_id])

    # ----- commit: apply a planned (or logged) change ---------------------
    def commit(self, change: UserChange) -> bool:
        """Applies a change; one whose version the user already has is skipped (log replay).

        Returns whether it was applied.
        """
        state = self._users.get(change.user_id)
        if state is not None and state.version >= change.version:
            return False
        state = self._state(change.user_id)
        if change.kind == FEEDBACK:
            state.history.append((change.items[0], change.event or "", change.updated_at))
        elif change.kind == HISTORY:
            state.history.clear()
            state.history.extend((item, HISTORY, change.updated_at) for item in change.items)
            state.base = None
        elif change.kind == VECTOR:
            state.base = (change.source, change.updated_at)
        state.vector = np.asarray(change.vector, dtype=np.float32)
        state.version = change.version
        state.updated_at = change.updated_at
        if change.event_id is not None:
            state.event_ids[change.event_id] = None
            while len(state.event_ids) > self.rule.event_id_memory:
                state.event_ids.popitem(last=False)
        return True

    def restore(self, user_id: str, state: UserState) -> None:
        """Puts a user's whole state back (from a snapshot)."""
        state.history = deque(state.history, maxlen=self.rule.history_len)
        self._users[user_id] = state

    def items(self) -> list[tuple[str, UserState]]:
        """Every (user id, state), for snapshots."""
        return list(self._users.items())

    # ----- plan + commit in one step --------------------------------------
    def _done(self, user_id: str, change: UserChange | None) -> tuple[int, bool]:
        if change is None:
            return self._users[user_id].version, False
        self.commit(change)
        return change.version, True

    def set_vector(self, user_id: str, vector: Any, event_id: str | None = None) -> tuple[int, bool]:
        """Sets a user's vector. Returns (version, applied); a known event id applies nothing."""
        return self._done(user_id, self.plan_vector(user_id, vector, event_id))

    def set_history(
        self, user_id: str, item_ids: Sequence[str], vectors: np.ndarray, event_id: str | None = None
    ) -> tuple[int, bool]:
        """Sets a user from a history (oldest first): the vector is its recency-weighted mean."""
        return self._done(user_id, self.plan_history(user_id, item_ids, vectors, event_id))

    def apply(
        self,
        user_id: str,
        item_id: str,
        event: str,
        item_vector: np.ndarray,
        event_id: str | None = None,
        start: np.ndarray | None = None,
    ) -> tuple[int, bool]:
        """Applies one feedback event. Returns (version, applied).

        Args:
            item_vector: the item's (normalised) vector.
            event_id: optional; an id already applied to this user changes nothing.
            start: vector a user without one starts from (e.g. the catalog mean).
        """
        return self._done(user_id, self.plan_feedback(user_id, item_id, event, item_vector, event_id, start))
