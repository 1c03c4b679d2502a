"""Checks of caller input, shared by the driver, the router and the shards."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from rayrec import constants as C
from rayrec.config import EVENT_TYPES
from rayrec.exceptions import DimensionMismatchError, InvalidInputError

# Below this norm a vector has no direction to normalise.
_MIN_NORM = C.MIN_NORM


# What an id may not hold: control characters (a NUL would vanish in the shards' fixed-width id arrays),
# "/" (ids are path segments of /items/{id} and /users/{id}) and lone surrogates (not UTF-8 text).
_BAD_ID_CHAR = re.compile("[\x00-\x1f\x7f-\x9f/\ud800-\udfff]")
_BAD_EVENT_ID_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(value: Any, what: str, max_chars: int = C.MAX_TEXT_CHARS) -> str:
    """Returns value if it is a str of valid Unicode text (no lone surrogates) of at most max_chars."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise InvalidInputError(f"{what} is {len(value)} characters long; at most {max_chars} are accepted")
    if not value.isascii():
        bad = _SURROGATE.search(value)
        if bad is not None:
            raise InvalidInputError(
                f"{what} is not valid UTF-8 text: a lone surrogate {bad.group()!r} at position {bad.start()}"
            )
    return value


def check_id(value: Any, what: str = "item id", *, event: bool = False) -> str:
    """Returns the id as a string: non-empty, at most C.MAX_ID_CHARS (event ids C.MAX_EVENT_ID_CHARS)
    characters, without control characters, lone surrogates or (but in event ids) "/"."""
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
        raise InvalidInputError(f"{what} must be a non-empty string (or an integer), got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise InvalidInputError(f"{what} must be a non-empty string, got {value!r}")
    most = C.MAX_EVENT_ID_CHARS if event else C.MAX_ID_CHARS
    if len(text) > most:
        raise InvalidInputError(f"{what} is {len(text)} characters long; at most {most} are accepted")
    bad = (_BAD_EVENT_ID_CHAR if event else _BAD_ID_CHAR).search(text)
    if bad is not None:
        raise InvalidInputError(
            f"{what} {text[:40]!r} holds {bad.group()!r} at position {bad.start()}: ids may not hold control "
            "characters" + ("" if event else ", '/'") + " or lone surrogates"
        )
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


def check_history(values: Sequence[Any], allow_empty: bool = False) -> list[str]:
    """A user's history: 1 (0 if allow_empty) to C.MAX_HISTORY_IDS item ids, checked before any item vector
    is fetched."""
    ids = check_ids(values)
    if not ids and not allow_empty:
        raise InvalidInputError("a user history needs at least one item id")
    if len(ids) > C.MAX_HISTORY_IDS:
        raise InvalidInputError(f"history holds {len(ids)} item ids; at most {C.MAX_HISTORY_IDS} are accepted")
    return ids


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
    if len(categories) > C.MAX_FILTER_CATEGORIES:
        raise InvalidInputError(
            f"category filter names {len(categories)} categories; at most {C.MAX_FILTER_CATEGORIES} are accepted"
        )
    out = []
    for c in categories:
        if not isinstance(c, str):
            raise InvalidInputError(f"category filter entries must be strings, got {c!r}")
        out.append(check_text(c, "a category filter entry", C.MAX_METADATA_VALUE_CHARS))
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


# A JSON escape of a UTF-16 surrogate (paired ones decode to one character; a lone one stays a surrogate).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(body: bytes) -> Any:
    """A request body as JSON, refusing what Python's json module lets through but JSON text may not hold:
    bytes that are not UTF-8, NaN and Infinity, numbers too large for a float, lone surrogates.

    Raises InvalidInputError naming the place (as body.field[3].name); json.JSONDecodeError on malformed JSON.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = body[exc.start : exc.start + 1]
        raise InvalidInputError(f"body: not UTF-8 text (byte {exc.start} is {bad!r})") from None
    suspect = []

    def constant(name: str) -> float:
        suspect.append(name)
        return float(name)

    def number(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            suspect.append(literal)
        return value

    value = json.loads(text, parse_constant=constant, parse_float=number)
    if suspect or _SURROGATE_ESCAPE.search(text):
        problem = _first_bad(value, "body")
        if problem is not None:
            raise InvalidInputError(problem)
    return value


def _first_bad(value: Any, where: str) -> str | None:
    """Where in a parsed JSON value a non-finite number or a lone surrogate is, and what it is."""
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"{where}: {value} is not a finite number (NaN or infinite values are not accepted)"
    if isinstance(value, str):
        bad = _SURROGATE.search(value)
        return None if bad is None else (
            f"{where}: not valid UTF-8 text (a lone surrogate {bad.group()!r} at position {bad.start()})"
        )
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _first_bad(v, f"{where}[{i}]"))), None)
    if isinstance(value, dict):
        for key, v in value.items():
            shown = key if _SURROGATE.search(key) is None else ascii(key)
            problem = _first_bad(key, f"{where} (a key)") or _first_bad(v, f"{where}.{shown}")
            if problem is not None:
                return problem
    return None
