"""A checked search request, shared by the router and its clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rayrec.validation import check_categories, check_exclude, check_k, check_vectors, per_query


@dataclass(slots=True)
class SearchRequest:
    """Query vectors (normalised) with k, per-row exclusions and category filters."""

    queries: np.ndarray
    k: int
    excludes: list[list[str] | None]
    categories: list[list[str] | None]
    with_metadata: bool = False

    @property
    def rows(self) -> int:
        return int(self.queries.shape[0])


def make_request(
    queries: Any,
    k: Any,
    exclude: Any = None,
    categories: Any = None,
    with_metadata: bool = False,
    *,
    dim: int,
    max_k: int,
) -> SearchRequest:
    """Checks a search's arguments; raises InvalidInputError naming what is wrong.

    Args:
        queries: (nq, dim) or (dim,) vectors; normalised here.
        k: results per query, 1..max_k.
        exclude: item ids never to return: one list for all queries or one per query.
        categories: allowed categories: one list for all queries or one per query.
        with_metadata: also return each result's metadata.
    """
    q = check_vectors(queries, dim, what="query vector")
    k = check_k(k, max_k)
    n = q.shape[0]
    return SearchRequest(
        q,
        k,
        per_query(exclude, n, check_exclude, "exclude"),
        per_query(categories, n, check_categories, "category"),
        bool(with_metadata),
    )
