"""Many feedback events in one call: checked, grouped per user in the order given, planned per user (no Ray)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rayrec.exceptions import CALLER_ERRORS, InvalidInputError
from rayrec.validation import check_event, check_id

if TYPE_CHECKING:
    from rayrec.users.user_state import UserStore

Checked = tuple[int, str, str, str | None]  # (position in the call, item id, event, event id)


def group_by_user(events: list[Any]) -> tuple[dict[str, list[Checked]], dict[int, BaseException]]:
    """Per user, their checked events in call order; and per position, the error of an event that is bad."""
    by_user: dict[str, list[Checked]] = {}
    errors: dict[int, BaseException] = {}
    for n, fields in enumerate(events):
        try:
            user_id, item_id, event, event_id = fields
            user = check_id(user_id, "user id")
            checked = (n, check_id(item_id), check_event(event),
                       None if event_id is None else check_id(event_id, "event id", event=True))
        except CALLER_ERRORS as exc:
            errors[n] = exc
            continue
        except (TypeError, ValueError):
            errors[n] = InvalidInputError("each event is (user_id, item_id, event, event_id)")
            continue
        by_user.setdefault(user, []).append(checked)
    return by_user, errors


def windows(
    encoded: list[tuple[np.ndarray, np.ndarray, list[int]]], width: int
) -> tuple[np.ndarray, np.ndarray]:
    """The windows a user model sees, as arrays: for each (item rows, event types, ends) of one user's encoded
    events (oldest first), the `width` events up to and including each end (fewer at the start: -1 before
    them), one window a row, every user's in turn.

    Args:
        encoded: per user, their events encoded (rayrec.users.sequential_user.SequentialUser.encode) and the
            positions whose window is asked.
        width: the events a window holds: an event and the history kept before it (history_len + 1).
    """
    width = max(1, min(width, max([len(rows) for rows, _, _ in encoded] + [1])))
    out_rows, out_types = [], []
    for rows, types, ends in encoded:
        pad = np.full(width - 1, -1, np.int64)
        at = np.asarray(ends, np.int64)
        out_rows.append(sliding_window_view(np.concatenate([pad, rows]), width)[at])
        out_types.append(sliding_window_view(np.concatenate([pad * 0, types]), width)[at])
    if not out_rows:
        return np.zeros((0, width), np.int64), np.zeros((0, width), np.int64)
    return np.concatenate(out_rows), np.concatenate(out_types)


class UserEvents:
    """One user's events of a feedback_many call, in order, each with whether it is new (its event id neither
    applied before nor earlier in the call) and the user model's vector for it (None: the rule moves the
    user). The vectors of all the new events come from one batched pass of the model (of every user of the
    call: many), as each would be computed once the events before it are committed. The plan holds while the
    user is at the version it was made at: if another call changed the user first, or after failed() (an
    event that was not committed), the rest are planned one at a time against the store as it is then."""

    def __init__(self, store: UserStore, user_id: str, mine: list[Checked],
                 vectors: list[np.ndarray | None] | None = None) -> None:
        self.store, self.user_id, self.mine = store, user_id, mine
        self.planned = _new_events(store, user_id, mine)
        state = store.get(user_id)
        self.version = 0 if state is None else state.version
        self.exact = True
        self.last_only = False  # see many
        if vectors is None:
            try:
                vectors = store.by_model.vectors(user_id, self.asked())
            except CALLER_ERRORS:
                self.exact = False
        self._batch = iter(vectors or [])

    def asked(self) -> list[tuple[str, str]]:
        """The (item id, event) of each new event: what the model computes a vector for."""
        return [(m[1], m[2]) for m, new in zip(self.mine, self.planned, strict=True) if new]

    @classmethod
    def many(cls, store: UserStore, by_user: dict[str, list[Checked]], last_only: bool = False
             ) -> dict[str, UserEvents]:
        """Every user's plan, the model run once over all of their new events.

        last_only: a bulk import of past events. Where the model knows every new event's item, it computes
        the user's vector once, at their last: the vector the events give one at a time, as the model's
        vector is a function of the kept history. The events before it keep the vector the user has (the
        history, and so the next vector, holds them all). A user with an item the model lacks is planned
        event by event (the rule moves such a user, and the rule depends on every step)."""
        plans = {user_id: cls(store, user_id, mine, vectors=[]) for user_id, mine in by_user.items()}
        if last_only:
            for plan in plans.values():
                plan.last_only = store.by_model.knows(plan.asked())
        try:
            got = store.by_model.many([(u, p.asked()) for u, p in plans.items()],
                                      [p.last_only for p in plans.values()])
        except CALLER_ERRORS:
            for plan in plans.values():
                plan.exact = False
            return plans
        for plan, vectors in zip(plans.values(), got, strict=True):
            plan._batch = iter(vectors)
        return plans

    def failed(self) -> None:
        """The last event given out was not committed: plan the rest one at a time."""
        self.exact = False

    def __iter__(self) -> Iterator[tuple[Checked, bool, np.ndarray | None]]:
        state = self.store.get(self.user_id)
        if (0 if state is None else state.version) != self.version:  # changed since the plan was made
            self.exact = False
        for checked, new in zip(self.mine, self.planned, strict=True):
            _, item_id, event, event_id = checked
            if self.exact:
                vector = next(self._batch) if new else None
                if new and vector is None and self.last_only:  # before the user's last event: kept as it is
                    state = self.store.get(self.user_id)
                    vector = np.zeros(self.store.dim, np.float32) if state is None else state.vector
            else:
                new = not self.store.applied(self.user_id, event_id)
                vector = self.store.by_model.vector(self.user_id, [(item_id, event)]) if new else None
            yield checked, new, vector


def _new_events(store: UserStore, user_id: str, mine: list[Checked]) -> list[bool]:
    """Per event, whether it is new: its event id neither applied to the user nor earlier in mine."""
    seen: set[str] = set()
    out = []
    for _, _, _, event_id in mine:
        out.append(not store.applied(user_id, event_id) and event_id not in seen)
        if event_id is not None:
            seen.add(event_id)
    return out
