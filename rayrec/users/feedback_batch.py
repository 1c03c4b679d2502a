"""Many feedback events in one call: checked, grouped per user in the order given, planned per user (no Ray)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

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


def prefix_histories(
    kept: list[tuple[str, str]], events: list[tuple[str, str]], keep: int, at: list[int]
) -> list[list[tuple[str, str]]]:
    """What a user model sees at each event of `at` (positions in events): the kept history as committing
    the events before it leaves it (its last `keep`), then that event.

    Args:
        kept: the user's kept (item id, event) history now, oldest first (at most `keep`).
        events: the new (item id, event) events, in order.
        keep: how many events the history keeps (RayrecConfig's feedback.history_len).
    """
    whole = kept + events
    return [whole[max(0, len(kept) + t - keep) : len(kept) + t + 1] for t in at]


class UserEvents:
    """One user's events of a feedback_many call, in order, each with whether it is new (its event id neither
    applied before nor earlier in the call) and the user model's vector for it (None: the rule moves the
    user). The vectors of all the new events come from one batched pass of the model, as each would be
    computed once the events before it are committed; after failed() (an event that was not committed) the
    rest are planned one at a time against the store as it is then."""

    def __init__(self, store: UserStore, user_id: str, mine: list[Checked]) -> None:
        self.store, self.user_id, self.mine = store, user_id, mine
        seen: set[str] = set()
        self.planned: list[bool] = []
        for _, _, _, event_id in mine:
            self.planned.append(not store.applied(user_id, event_id) and event_id not in seen)
            if event_id is not None:
                seen.add(event_id)
        try:
            self._batch = iter(store.model_vectors(user_id, [(m[1], m[2]) for m, new in zip(mine, self.planned)
                                                               if new]))
            self.exact = True
        except CALLER_ERRORS:
            self.exact = False

    def failed(self) -> None:
        """The last event given out was not committed: plan the rest one at a time."""
        self.exact = False

    def __iter__(self) -> Iterator[tuple[Checked, bool, np.ndarray | None]]:
        for checked, new in zip(self.mine, self.planned, strict=True):
            _, item_id, event, event_id = checked
            if self.exact:
                vector = next(self._batch) if new else None
            else:
                new = not self.store.applied(self.user_id, event_id)
                vector = self.store.model_vector(self.user_id, [(item_id, event)]) if new else None
            yield checked, new, vector
