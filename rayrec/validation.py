"""Checks of caller input, shared by the driver, the router and the shards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rayrec import constants as C
from rayrec.config import EVENT_TYPES
from rayrec.exceptions import DimensionMismatchError, InvalidInputError

# Below this norm a vector has no direction to normalise.
_MIN_NORM = C.MIN_NORM


def check_id(value: Any, what: str = "item id") -> str:
    """Returns the id as a string; rejects empty, non-string and non-integer ids."""
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
        raise InvalidInputError(f"{what} must be a non-empty string (or an integer), got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise InvalidInputError(f"{what} must be a non-empty string, got {value!r}")
    return text


def check_ids(values: Sequence[Any], what: str = "item id") -> list[str]:
    """check_id on every element of a sequence (a bare string is refused)."""
    if isinstance(values, (str, bytes)):
        raise InvalidInputError(f"expected a list of {what}s, got a single string {values!r}; wrap it in a list")
    try:
        items = list(values)
    except TypeError:
        raise InvalidInputError(f"expected a list of {what}s, got {type(values).__name__}") from None
    return [check_id(v, what) for v in items]


def check_vectors(vectors: Any, dim: int, *, normalise: bool = True, what: str = "vector") -> np.ndarray:
    """Returns a C-contiguous float32 (n, dim) array, L2-normalised when asked.

    Raises InvalidInputError on a wrong shape, NaN/inf, or a zero vector, and
    DimensionMismatchError when the width is not dim.
    """
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what}s must be numeric arrays of shape (n, {dim}): {exc}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InvalidInputError(f"{what}s must have shape (n, {dim}) or ({dim},), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise DimensionMismatchError(f"{what} dimension is {arr.shape[1]}, but the index holds {dim}-d vectors")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(f"{what} at position {row} contains NaN or infinite values")
    arr = np.ascontiguousarray(arr)
    if normalise and arr.shape[0]:
        # In float64: a float32 norm overflows above ~1e19 and underflows below ~1e-19;
        # every finite float32 vector has a finite float64 norm.
        wide = arr.astype(np.float64)
        norms = np.linalg.norm(wide, axis=1)
        if (norms < _MIN_NORM).any():
            row = int(np.flatnonzero(norms < _MIN_NORM)[0])
            raise InvalidInputError(f"{what} at position {row} is all zeros: it has no direction to score by")
        arr = wide / norms[:, None]
    return arr.astype(np.float32, copy=False)


def check_k(k: Any, max_k: int) -> int:
    """Returns k as int; rejects k <= 0, non-integers and k above max_k."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidInputError(f"k must be an integer, got {type(k).__name__}")
    if k <= 0:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    if k > max_k:
        raise InvalidInputError(f"k={k} is above the configured maximum max_k={max_k}")
    return int(k)


def check_event(event: Any) -> str:
    """Returns the event type if rayrec knows it."""
    if event not in EVENT_TYPES:
        raise InvalidInputError(f"unknown event type {event!r}; accepted: {', '.join(EVENT_TYPES)}")
    return str(event)


def check_categories(categories: Any) -> list[str] | None:
    """A category filter: None (no filter) or a non-empty list of strings."""
    if categories is None:
        return None
    if isinstance(categories, str) or not isinstance(categories, (list, tuple, set, frozenset)):
        raise InvalidInputError(f"category filter must be a list of strings, got {categories!r}")
    if not categories:
        raise InvalidInputError("category filter is an empty list: it would match nothing; pass None for no filter")
    out = []
    for c in categories:
        if not isinstance(c, str):
            raise InvalidInputError(f"category filter entries must be strings, got {c!r}")
        out.append(c)
    return out


def check_exclude(exclude: Any) -> list[str] | None:
    """An exclusion set: None or a collection of item ids."""
    if exclude is None:
        return None
    if isinstance(exclude, (str, bytes)):
        raise InvalidInputError(f"exclude must be a list of item ids, got a single string {exclude!r}")
    return check_ids(list(exclude))


def per_query(value: Any, n: int, check: Any, what: str) -> list[Any]:
    """Expands one filter/exclusion (or a list of n of them) to a list of n."""
    if value is None:
        return [None] * n
    if (
        isinstance(value, list)
        and value
        and all(v is None or isinstance(v, (list, tuple, set, frozenset)) for v in value)
    ):
        if len(value) != n:
            raise InvalidInputError(f"got {len(value)} {what} lists for {n} queries; give one per query or one for all")
        return [check(v) for v in value]
    checked = check(value)
    return [checked] * n
