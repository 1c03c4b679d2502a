"""The HTTP edge's plain ASGI parts, shared by the ingress's routes: the body limit, request metrics, the
HTTP status of each error, and the Server-Timing header of a recommendation."""

from __future__ import annotations

import time
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from ray.exceptions import RayError

from rayrec import constants as C
from rayrec import metrics
from rayrec.exceptions import InvalidInputError, ItemNotFoundError, LayoutChangedError, ShardUnavailableError
from rayrec.system.model_swap import CatalogChangedError, SpaceChangedError


class BodyLimit:
    """Answers 413 to a request body over C.MAX_BODY_BYTES, declared or streamed.

    The app builder sets RAYREC_MAX_BODY_BYTES in the ingress replicas' environment.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = C.MAX_BODY_BYTES
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = JSONResponse(status_code=413, content=_too_large(limit))
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(status_code=413, detail=_too_large(limit)["detail"])
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int) -> dict[str, str]:
    return {"detail": f"request body over {limit} bytes; send fewer items or texts per call", "error": "TooLarge"}


def status_of(cause: BaseException) -> int:
    """The HTTP status of an error (its root cause, once Ray's wrapping is taken off)."""
    if isinstance(cause, InvalidInputError):
        return 422
    if isinstance(cause, ItemNotFoundError):
        return 404
    if isinstance(cause, (SpaceChangedError, CatalogChangedError, LayoutChangedError)):
        return 409  # the system moved to another model version or shard layout meanwhile: sending it again works
    if isinstance(cause, (ShardUnavailableError, RayError)):
        return 503  # a shard or actor is down or restarting: retrying may succeed
    return 500


class Measure:
    """Counts every request and times it, by route template and status.

    A plain ASGI middleware: Starlette's BaseHTTPMiddleware (what @app.middleware("http") builds) runs
    each request through an extra task and memory streams.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def sent(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            name = getattr(scope.get("route"), "path", "unmatched")  # the router sets it on the shared scope
            metrics.requests_total().inc(tags={"route": name, "status": str(status[0])})
            metrics.request_latency_ms().observe((time.perf_counter() - t0) * 1000, tags={"route": name})


def server_timing(call_ms: float, timing: dict[str, float] | None, handler_ms: float) -> str:
    """The Server-Timing header of a recommendation: ingress (its own work), user (hop to the user actor and
    its queue, and its own work), search (the fan-out to the shards and the merge, in the user actor)."""
    user_ms = (timing or {}).get("user_ms", 0.0)
    search_ms = (timing or {}).get("search_ms", 0.0)
    stages = {
        "ingress": max(0.0, handler_ms - call_ms),
        "hop": max(0.0, call_ms - user_ms),
        "user": max(0.0, user_ms - search_ms),
        "search": search_ms,
    }
    for stage, ms in stages.items():
        metrics.stage_latency_ms().observe(ms, tags={"stage": stage})
    return ", ".join(f"{stage};dur={ms:.2f}" for stage, ms in stages.items())
