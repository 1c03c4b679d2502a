"""Every user of a store computed again in a new item space (a model swap), without Ray.

Where the store has a user model (the new space's, see rayrec.users.user_models), a user is computed by it
from their kept history, as their next feedback would compute them (rayrec.users.model_vectors). Else,
and for a user the model knows nothing of, the feedback rule's steps are taken again over the new space's
item vectors (rayrec.users.feedback_rule.rederive). A user whose vector was set last (by text, or a raw vector), with no
event since, starts from it: their text embedding placed by the new space's text path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from rayrec.exceptions import InvalidInputError
from rayrec.users.feedback_rule import HISTORY, rederive
from rayrec.users.user_state import UserState, UserStore

log = logging.getLogger(__name__)


def rederive_all(
    store: UserStore,
    vectors: dict[str, np.ndarray],
    mean: np.ndarray,
    place_text: Callable[[np.ndarray], np.ndarray] | None,
    space: str | None = None,
) -> dict[str, int]:
    """Commits every user's vector in the new space (a REDERIVED change each, history unchanged).

    Args:
        store: the users; store.by_model.model is the new space's user model (None: the rule).
        vectors: item id -> its vector in the new space, for the items the histories hold (deleted ones lack).
        mean: the new space's cold-start vector (the catalog mean): where a user starts when nothing else says.
        place_text: (n, e) text embeddings -> (n, dim) vectors by the new space's text path; None: no text path.
        space: the new space's version, for the log.

    Returns:
        {"users": users re-derived, "by_model": of them, those the user model computed}.
    """
    users, by_model = store.items(), 0
    for user_id, state in users:
        vector = store.by_model.vector(user_id, []) if _model_moves(state) else None
        by_model += vector is not None
        if vector is None:
            try:
                vector = _by_rule(store, state, vectors, mean, place_text)
            except (InvalidInputError, ValueError):  # vectors that cancel out, an embedding of another length
                log.warning("user %s could not be re-derived in %s: set to the catalog mean", user_id, space)
        store.commit(store.plan_rederived(user_id, mean if vector is None else vector))
    return {"users": len(users), "by_model": by_model}


def _model_moves(state: UserState) -> bool:
    """Whether a user model would have computed this user last: not when their vector was set after their
    last event (by text or a raw vector), which then stands."""
    if state.base is None:
        return True
    return any(e != HISTORY and t >= state.base[1] for _, e, t in state.history)


def _by_rule(
    store: UserStore,
    state: UserState,
    vectors: dict[str, np.ndarray],
    mean: np.ndarray,
    place_text: Callable[[np.ndarray], np.ndarray] | None,
) -> np.ndarray | None:
    """The rule's steps again in the new space (None: nothing in the history is left to derive from)."""
    start, since = mean, None
    if state.base is not None and state.base[0] is not None and place_text is not None:
        start, since = place_text(state.base[0][None, :])[0], state.base[1]
    return rederive(list(state.history), vectors, store.rule, start, since)
