"""The ingress's request and answer bodies as plain functions: requests checked and turned into the actors' arguments,
answers into the API's responses."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse
from rayrec.serve_app.http_edge import status_of
from rayrec.serve_app.models import ItemIn, RecommendRequest

from rayrec import constants as C
from rayrec.exceptions import InvalidInputError, root_cause
from rayrec.system.model_swap import TEXT_KEY


def finite(values: list[float], field: str) -> list[float]:
    """values, if every one is finite; else InvalidInputError naming the field."""
    if not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"{field} contains NaN or infinite values")
    return values


def unknown(what: str, name: str) -> JSONResponse:
    """404 for an unknown user or item."""
    return JSONResponse(status_code=404, content={"detail": f"unknown {what} {name!r}"})


# ----- recommendations -----
def recommend_fields(body: RecommendRequest) -> tuple[Any, ...]:
    """A POST /recommend body as the user actors take one request (rayrec.users.recommending.Fields)."""
    return (body.user_id, body.k, body.exclude_seen, body.filter.category if body.filter else None, None)


def recommended(out: dict[str, Any], model_version: str) -> dict[str, Any]:
    """A user actor's answer as the API gives it (RecommendResponse); model_version: this replica's space,
    for an answer that names none."""
    return {
        "user_id": out["user_id"],
        "user_version": out["version"],
        "cold_start": out["cold_start"],
        "partial": out["partial"],
        "items": out["items"],
        "model_version": out["space"] or model_version,
        "freshness_ms": None if out.get("freshness_ms") is None else round(out["freshness_ms"], 2),
        "user_model": out.get("user_model", "rule"),
    }


def batch_results(requests: list[RecommendRequest], outs: list[Any], model_version: str) -> list[dict[str, Any]]:
    """POST /recommend/batch's results: per request its answer, or its error's status, detail and name."""
    results = []
    for req, out in zip(requests, outs):
        if isinstance(out, BaseException):
            cause = root_cause(out)
            results.append({"user_id": req.user_id, "status": status_of(cause), "detail": str(cause),
                            "error": type(cause).__name__})
        else:
            results.append(recommended(out, model_version))
    return results


# ----- users -----
def user_version(out: dict[str, Any]) -> dict[str, Any]:
    """A user actor's write answer as the API gives it (UserVersion)."""
    return {"user_id": out["user_id"], "user_version": out["version"], "applied": out["applied"]}


def user_out(state: dict[str, Any]) -> dict[str, Any]:
    """A user actor's state as GET /users/{id} gives it (UserOut): no vector."""
    return {
        "user_id": state["user_id"],
        "user_version": state["version"],
        "history": state["history"],
        "updated_at": state["updated_at"],
    }


# ----- items -----
def items_to_write(items: list[ItemIn], dim: int) -> tuple[np.ndarray, list[int], dict[str, list[Any]]]:
    """A PUT /items body as the router writes it.

    Returns:
        (vectors (n, dim): each item's embedding, zeros for those placed by text; the positions of those;
        metadata: per field, a value per item: category, every other field given, and the text an item is
        placed by, kept so that a model swap places it again in the new space).
    """
    vectors = np.zeros((len(items), dim), dtype=np.float32)
    to_encode = [i for i, item in enumerate(items) if item.embedding is None]
    for i, item in enumerate(items):
        if item.embedding is not None:
            if len(item.embedding) != dim:
                raise InvalidInputError(
                    f"items[{i}].embedding has {len(item.embedding)} values; the index holds {dim}-d vectors"
                )
            vectors[i] = finite(item.embedding, f"items[{i}].embedding")
    extra = sorted({name for item in items for name in (item.model_extra or {}) if name != TEXT_KEY})
    metadata: dict[str, list[Any]] = {"category": [item.category for item in items]}
    metadata.update({name: [(item.model_extra or {}).get(name) for item in items] for name in extra})
    metadata[TEXT_KEY] = [item.text if item.embedding is None else None for item in items]
    return vectors, to_encode, metadata


def check_item_ids(ids: list[str], max_items_per_call: int) -> list[str]:
    """GET /items's ids, each once in the order asked; InvalidInputError over the limit."""
    ids = list(dict.fromkeys(ids))
    most = min(max_items_per_call, C.MAX_IDS_PER_GET)  # a longer URL than proxies pass
    if len(ids) > most:
        raise InvalidInputError(f"{len(ids)} item ids in one call; at most {most} are accepted")
    return ids


def item_answer(record: dict[str, Any], embedding: bool) -> dict[str, Any]:
    """A router record as the API answers it: its metadata, and its vector as `embedding` when asked."""
    vector = record.pop("vector")
    if embedding:
        record["embedding"] = vector.tolist()
    return record


def categories_answer(counts: dict[str, int]) -> dict[str, Any]:
    """GET /categories: every category with its live items, most items first (then by name)."""
    return {"categories": [{"name": n, "items": c} for n, c in sorted(counts.items(), key=lambda nc: (-nc[1], nc[0]))]}
