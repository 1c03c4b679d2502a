"""A user actor's recommendations, as plain steps: plan each request from the user's state, answer it from its
search result. UserReads (rayrec.users.user_reads) searches all the planned requests of one call in one
batched fan-out between them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayrec.config import RayrecConfig
from rayrec.exceptions import InvalidInputError
from rayrec.routing.query import SearchRequest, make_request
from rayrec.routing.topk import SearchResult
from rayrec.users.user_state import UserStore
from rayrec.validation import check_exclude, check_id, check_k

# One recommendation's fields as they travel to a user actor: (user_id, k, exclude_seen, categories, exclude).
Fields = tuple[Any, Any, Any, Any, Any]


@dataclass(slots=True)
class Planned:
    """A checked recommendation: whose, the version of the vector used, and its search."""

    user_id: str
    version: int
    cold_start: bool
    request: SearchRequest


def check_fields(fields: Any, max_k: int) -> tuple[str, int, bool, Any, list[str]]:
    """One request's fields, checked (InvalidInputError naming the field otherwise)."""
    if not isinstance(fields, (tuple, list)) or len(fields) != 5:
        raise InvalidInputError("a recommendation is (user_id, k, exclude_seen, categories, exclude)")
    user_id, k, exclude_seen, categories, exclude = fields
    return check_id(user_id, "user id"), check_k(k, max_k), bool(exclude_seen), categories, check_exclude(exclude) or []


def plan(
    store: UserStore,
    config: RayrecConfig,
    fields: tuple[str, int, bool, Any, list[str]],
    cold_vector: np.ndarray | None,
) -> Planned:
    """The search for one checked request; cold_vector serves a user without a vector (the catalog mean).

    Vector and version are read together, with no await between: a change that comes in later is
    not used by this answer (and its freshness is not claimed).
    """
    user_id, k, exclude_seen, categories, excluded = fields
    state = store.get(user_id)
    if exclude_seen:
        excluded = excluded + store.seen(user_id)
    vector = state.vector if state is not None else cold_vector
    dim, max_k = config.index.dim, config.index.max_k
    request = make_request(vector, k, excluded or None, categories, True, dim=dim, max_k=max_k)
    return Planned(user_id, 0 if state is None else state.version, state is None, request)


def answer(
    planned: Planned, result: SearchResult, store: UserStore, fresh: dict[str, float], space: str | None
) -> dict[str, Any]:
    """recommend's answer for one planned request from its search result.

    fresh: per user, when the feedback behind their current vector arrived; popped by the first answer
    that used that vector (its freshness_ms), unless a newer change came in while searching.
    """
    current = store.get(planned.user_id)
    arrived = None
    if current is not None and current.version == planned.version:
        arrived = fresh.pop(planned.user_id, None)
    return {
        "freshness_ms": None if arrived is None else max(0.0, (time.time() - arrived) * 1000),
        "user_id": planned.user_id,
        "items": result.query(0),
        "version": planned.version,
        "cold_start": planned.cold_start,
        "partial": result.partial,
        "failed_shards": result.failed_shards,
        "space": space,
    }
