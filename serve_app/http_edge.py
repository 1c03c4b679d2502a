"""The HTTP edge's plain ASGI parts, shared by the ingress's routes: the body limit, request metrics, the
HTTP status of each error, and the Server-Timing header of a recommendation."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from ray.exceptions import RayError

from rayrec import constants as C
from rayrec import metrics
from rayrec.exceptions import InvalidInputError, ItemNotFoundError, LayoutChangedError, ShardUnavailableError
from rayrec.system.model_swap import CatalogChangedError, SpaceChangedError
from rayrec.validation import parse_json


class BadBody(HTTPException):
    """A body that is JSON to Python but not to the JSON standard (rayrec.validation.parse_json): 422."""

    def __init__(self, error: InvalidInputError) -> None:
        super().__init__(status_code=422, detail=str(error))


class StrictJSONRequest(Request):
    """A request whose JSON body is parsed by rayrec.validation.parse_json (no NaN, no lone surrogates)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = parse_json(await self.body())
            except InvalidInputError as exc:
                raise BadBody(exc) from None
        return self._json


OPEN, READ, WRITE = "open", "read", "write"


class Guard:
    """Who may call a route: the API key (a write route always needs it when one is set, a read route only
    with protect_reads, an open route never) and the Host header, checked before any body is read.

    Args:
        key_digest: the API key's SHA-256 hex digest, None for no key.
        protect_reads: whether read routes need the key too.
        allowed_hosts: Host header names answered ("*" any, "*.example.com" its subdomains); others get 400,
            so a web page cannot reach a loopback API through a DNS name rebound to 127.0.0.1.
        access: (method, route path) -> OPEN, READ or WRITE; a route not named is READ.
    """

    def __init__(
        self, key_digest: str | None, protect_reads: bool, allowed_hosts: list[str],
        access: dict[tuple[str, str], str],
    ) -> None:
        self.key_digest = key_digest
        self.protect_reads = protect_reads
        self.any_host = "*" in allowed_hosts
        self.hosts = {h.lower() for h in allowed_hosts if not h.startswith("*")}
        self.suffixes = tuple(h[1:].lower() for h in allowed_hosts if h.startswith("*.") and len(h) > 2)
        self.access = access

    def host_allowed(self, host: str | None) -> bool:
        if self.any_host:
            return True
        if not host:
            return False
        name = host.lower()
        name = name[: name.index("]") + 1] if name.startswith("[") and "]" in name else name.rsplit(":", 1)[0]
        return name in self.hosts or (bool(self.suffixes) and name.endswith(self.suffixes))

    def check_key(self, request: Request, method: str, path: str) -> None:
        """Refuses (401) a request without the API key where its route needs one."""
        kind = self.access.get((method, path), READ)
        if self.key_digest is None or kind == OPEN or (kind == READ and not self.protect_reads):
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key_digest(token.strip()), self.key_digest):
            raise HTTPException(
                status_code=401,
                detail="this route needs the API key: send the header 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )


def key_digest(key: str) -> str:
    """The SHA-256 hex digest an API key is configured and compared by (the key itself is never stored)."""
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_digest(env_name: str | None) -> str | None:
    """The API key's digest from this process's environment, or None for no key.

    A variable named (env_name) must be set and not empty; unnamed, C.API_KEY_ENV is read if it is set, and
    set but empty is an error too: a misnamed or empty variable never means "no key".
    """
    name = env_name or C.API_KEY_ENV
    value = os.environ.get(name)
    if value is None:
        if env_name:
            raise InvalidInputError(
                f"api_key_env names {env_name}, which is not set in this environment: set it to the API key, "
                "or leave api_key_env out to serve without a key"
            )
        return None
    if not value.strip():
        raise InvalidInputError(f"{name} is set but empty: set it to the API key, or unset it to serve without a key")
    return key_digest(value.strip())


# Until an ingress replica sets the app's guard: loopback names only, no key (nothing is routed before then).
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
DEFAULT_GUARD = Guard(None, False, LOOPBACK_HOSTS, {})


def guard_of(app: Any) -> Guard:
    return getattr(app.state, "guard", DEFAULT_GUARD)


class HostCheck:
    """Answers 400 to a request whose Host header the app's Guard does not allow (every route, docs too)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if not guard_of(scope["app"]).host_allowed(host):
                response = JSONResponse(status_code=400, content={
                    "detail": f"Host {host[:100]!r} is not one this server answers to: add it to allowed_hosts",
                    "error": "HostNotAllowed"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class StrictJSONRoute(APIRoute):
    """Every route of the app checks the API key first, then reads its body through StrictJSONRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        path = self.path

        async def strict(request: Request) -> Response:
            guard_of(request.app).check_key(request, request.method, path)  # before the body is read
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


async def bad_body(_: Request, exc: BadBody) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": exc.detail, "error": "InvalidInputError"})


def _json_safe(value: Any) -> Any:
    """value with what JSON cannot carry (NaN, infinities, lone surrogates, other objects) as its repr."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            return ascii(value)
        return value
    if isinstance(value, dict):
        return {_json_safe(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return repr(value)


async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a request its models refuse, with the refused input echoed only as JSON can carry it."""
    return JSONResponse(status_code=422, content={"detail": _json_safe(json.loads(json.dumps(
        exc.errors(), default=repr, allow_nan=True)))})


class BodyLimit:
    """Answers 413 to a request body over the app's limit (app.state.max_body_bytes, which the ingress replica
    sets from its settings; C.MAX_BODY_BYTES until then), declared or streamed."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = getattr(scope["app"].state, "max_body_bytes", C.MAX_BODY_BYTES)
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
