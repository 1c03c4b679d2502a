"""Many feedback events in one call: checked, then grouped per user in the order given (no Ray)."""

from __future__ import annotations

from typing import Any

from rayrec.exceptions import CALLER_ERRORS, InvalidInputError
from rayrec.validation import check_event, check_id

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
