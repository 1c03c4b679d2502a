"""The HTTP ingress: a FastAPI app under Serve that composes the encoder and the rayrec actors."""


import asyncio
import logging
import math
import time
import uuid
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.exceptions import RayError
from rayrec.serve_app import demo_page
from rayrec.serve_app.catalogs import load_catalog
from rayrec.serve_app.http_edge import (
    LOOPBACK_HOSTS,
    OPEN,
    WRITE,
    BadBody,
    BodyLimit,
    Guard,
    HostCheck,
    Measure,
    StrictJSONRoute,
    api_key_digest,
    bad_body,
    invalid_request,
    server_timing,
    status_of,
)
from rayrec.serve_app.models import (
    EncodeRequest,
    EncodeResponse,
    FeedbackRequest,
    ItemsPut,
    ModelSwap,
    ModelSwapped,
    RecommendBatchRequest,
    RecommendBatchResponse,
    RecommendRequest,
    RecommendResponse,
    UserDeleted,
    UserExport,
    UserOut,
    UserPut,
    UserVersion,
)

from rayrec import constants as C
from rayrec import metrics
from rayrec.config import RayrecConfig
from rayrec.exceptions import (
    InvalidInputError,
    RayrecError,
    root_cause,
)
from rayrec.hashing import partition_of
from rayrec.learning import store
from rayrec.learning.placement import check_stored_space
from rayrec.system.deploy import build_actors, create_shards
from rayrec.system.model_swap import (
    TEXT_KEY,
    TEXT_SPACE,
    SpaceChangedError,
    placer_of,
    space_of,
    swap_model,
)
from rayrec.users.client import RecommendClient

log = logging.getLogger("ray.serve")
# An id in a route's path: as long as any id may be (the actors check what it may hold).
PathId = Annotated[str, PathParam(min_length=1, max_length=C.MAX_ID_CHARS)]
api = FastAPI(title="rayrec", description="Real-time recommendations on Ray", version="0.1.0")
api.router.route_class = StrictJSONRoute  # every body parsed as strict JSON (serve_app/http_edge.py)
api.add_exception_handler(BadBody, bad_body)
api.add_exception_handler(RequestValidationError, invalid_request)
api.add_middleware(BodyLimit)  # serve_app/http_edge.py: 413 over the body limit
api.add_middleware(HostCheck)  # outside it: 400 for a Host header not in allowed_hosts (DNS rebinding)
api.add_middleware(Measure)  # outermost: every request counted and timed by route, a refused one too
# The routes that change state (they need the API key when one is set) and those that never need it.
ACCESS = {
    **{route: WRITE for route in (("POST", "/feedback"), ("PUT", "/users/{user_id}"), ("DELETE", "/users/{user_id}"),
                                  ("GET", "/users/{user_id}/export"),
                                  ("PUT", "/items"), ("DELETE", "/items/{item_id}"), ("POST", "/model"))},
    **{("GET", path): OPEN for path in ("/", "/demo", "/static/{name}", "/noop", "/healthz")},
    ("POST", "/noop"): OPEN,
}


@api.exception_handler(RayrecError)
@api.exception_handler(RayError)
async def _mapped(_: Request, exc: Exception) -> JSONResponse:
    """Maps an error, also one raised inside an actor (Ray wraps it), to its HTTP status."""
    cause = root_cause(exc)
    return JSONResponse(status_code=status_of(cause), content={"detail": str(cause), "error": type(cause).__name__})


def _finite(values: list[float], field: str) -> list[float]:
    if not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"{field} contains NaN or infinite values")
    return values


def _item_answer(record: dict[str, Any], embedding: bool) -> dict[str, Any]:
    """A router record as the API answers it: its metadata, and its vector as `embedding` when asked."""
    vector = record.pop("vector")
    if embedding:
        record["embedding"] = vector.tolist()
    return record


@serve.deployment(max_ongoing_requests=C.INGRESS_MAX_ONGOING_REQUESTS)
@serve.ingress(api)
class Ingress:
    """Routes HTTP calls to the encoder deployment (a handle) and the rayrec actors (actor handles)."""

    async def __init__(self, encoder: Any, settings: dict[str, Any]) -> None:
        self.encoder = encoder
        self.config = RayrecConfig.from_dict(settings["rayrec"])
        self.max_items_per_call = int(settings.get("max_items_per_call", C.MAX_ITEMS_PER_CALL))
        # The write key: its digest from the app's args, or the key from this replica's environment.
        digest = settings.get("api_key_sha256") or api_key_digest(settings.get("api_key_env"))
        api.state.max_body_bytes = int(settings.get("max_body_bytes", C.MAX_BODY_BYTES))  # http_edge.BodyLimit
        api.state.guard = Guard(digest, bool(settings.get("protect_reads", False)),
                                list(settings.get("allowed_hosts") or LOOPBACK_HOSTS), ACCESS)
        # The item space: a learned model's (its folder, resolved by the app builder), or the encoder's own.
        # At start the space is the index's own dimension (checked below); after a swap it may be smaller.
        self.placer = placer_of({"path": settings.get("model")})
        self.last_swap: dict[str, Any] | None = None  # the last POST /model this replica ran (GET /healthz)
        self.models_root: str | None = settings.get("models_root")
        encoder_dim = await self.encoder.dim.remote()
        space_dim = self.placer.space.dim if self.placer else encoder_dim
        if self.placer is not None and self.placer.space.text_dim != encoder_dim:
            raise InvalidInputError(
                f"model {self.placer.version} was trained on {self.placer.space.text_dim}-d text embeddings but the "
                f"encoder gives {encoder_dim}-d ones: serve it with the encoder (model_dir) it was trained with"
            )
        if space_dim != self.config.index.dim:
            raise InvalidInputError(
                f"the item space is {space_dim}-d but the item index holds {self.config.index.dim}-d "
                "vectors: set the index dim to the space's (the encoder's, or the model's)"
            )
        self.router, self.shards, self.users = build_actors(self.config, detached=True, attach=True)
        # Concurrent recommendations bound for one user actor travel as one call.
        self.recommender = RecommendClient(self.users, self.config.max_batch_queries)
        items = await self.router.count.remote()
        # A running system, or one a model swap recorded in storage, may be in another version than these
        # settings name: serve that one. Else recovered vectors must be in the space this replica serves.
        recorded = await self.router.item_space.remote()
        if recorded is None and self.config.storage:
            check_stored_space(self.config.storage, self.model_version, items > 0)
        await self._follow_space(
            await self.router.set_item_space.remote(space_of(self.model_version, settings.get("model")))
        )
        catalog = settings.get("catalog", "none")
        if catalog != "none" and items == 0 and await self._fresh():
            # A fresh system: load its catalog before this replica reports ready. One that ever acknowledged
            # an item write or holds users is not fresh, even with no items left: loading would undo writes.
            await load_catalog(catalog, self._item_vectors, self.router, self.users, settings.get("text_columns"))

    async def _fresh(self) -> bool:
        if await self.router.seeded.remote():
            return False
        return sum(await asyncio.gather(*(u.count.remote() for u in self.users))) == 0

    def _users_of(self, user_id: str) -> Any:
        return self.users[partition_of(user_id, len(self.users))]

    async def _follow_space(self, space: dict[str, Any] | None = None) -> None:
        """Places text in the item space the system is in now (the router's), loading its model if it moved."""
        space = space if space is not None else await self.router.item_space.remote()
        if space is None or space.get("version") == self.model_version:
            return
        log.warning("rayrec: the system is in item space %s (a model swap), not %s: serving %s",
                    space.get("version"), self.model_version, space.get("version"))
        self.placer = placer_of(space, self.config.index.dim)  # a smaller model's vectors padded to the index's

    async def _in_current_space(self, call: Any) -> Any:
        """Runs call() (which places text and writes it, naming the space) again if a model swap came between."""
        for attempt in range(3):
            try:
                return await call()
            except Exception as exc:
                if attempt == 2 or not isinstance(root_cause(exc), SpaceChangedError):
                    raise
                await self._follow_space()

    async def _encode(self, texts: list[str]) -> np.ndarray:
        return await self.encoder.encode.remote(texts)

    async def _item_vectors(self, ids: list[str], texts: list[str]) -> np.ndarray:
        """Items' vectors: a learned model's own for the items it knows, their text's otherwise."""
        if self.placer is None:
            return await self._encode(texts)
        unknown = self.placer.unknown(ids)
        return self.placer.items(ids, await self._encode([texts[i] for i in unknown]) if unknown else None)

    @property
    def model_version(self) -> str:
        """The item space's name: the learned model's version, or `text` (the encoder's own space)."""
        return self.placer.version if self.placer is not None else TEXT_SPACE

    @api.get("/", include_in_schema=False)
    @api.get("/demo", include_in_schema=False)
    async def demo_page(self, request: Request) -> HTMLResponse:
        """The live demo page: pick a user, send feedback, watch the list move (under the app's route prefix)."""
        return demo_page.page(str(request.scope.get("root_path") or ""))

    @api.get("/static/{name}", include_in_schema=False)
    async def static_file(self, name: str) -> Response:
        return demo_page.static_file(name)

    @api.get("/noop")
    async def noop(self) -> dict[str, str]:
        """Does no work: the baseline the benchmarks compare /recommend against."""
        return {"status": "ok"}

    @api.post("/noop")
    async def noop_post(self, request: Request) -> dict[str, str]:
        """Reads and parses a JSON body, then does no work: the POST routes' baseline (Serve's body hop included)."""
        await request.json()
        return {"status": "ok"}

    @staticmethod
    def _fields(body: RecommendRequest) -> tuple[Any, ...]:
        return (body.user_id, body.k, body.exclude_seen, body.filter.category if body.filter else None, None)

    def _recommended(self, out: dict[str, Any]) -> dict[str, Any]:
        return {
            "user_id": out["user_id"],
            "user_version": out["version"],
            "cold_start": out["cold_start"],
            "partial": out["partial"],
            "items": out["items"],
            "model_version": out["space"] or self.model_version,
            "freshness_ms": None if out.get("freshness_ms") is None else round(out["freshness_ms"], 2),
            "user_model": out.get("user_model", "rule"),
        }

    @api.post("/recommend", response_model=RecommendResponse)
    async def recommend(self, body: RecommendRequest, request: Request, response: Response) -> dict[str, Any]:
        """Top-k for one user: ingress -> user actor -> shards (Server-Timing says where the time went)."""
        return await self._recommend_one(self._fields(body), request, response)

    @api.get("/recommend", response_model=RecommendResponse)
    async def recommend_get(
        self,
        request: Request,
        response: Response,
        user_id: Annotated[str, Query(min_length=1, max_length=C.MAX_ID_CHARS, pattern=r"\S")],
        k: Annotated[int, Query(ge=1, description="results wanted, 1..max_k")] = 10,
        exclude_seen: bool = True,
        category: Annotated[list[str] | None, Query(description="allowed categories (repeatable)")] = None,
    ) -> dict[str, Any]:
        """POST /recommend's answer from query parameters: a request without a body, which spares Serve's
        call back to its proxy for the body (a GET is also what caches and prefetchers expect of a read)."""
        return await self._recommend_one((user_id, k, exclude_seen, category or None, None), request, response)

    async def _recommend_one(self, fields: tuple[Any, ...], request: Request, response: Response) -> dict[str, Any]:
        t0 = time.perf_counter()
        out = await self.recommender.recommend(fields)
        call_ms = (time.perf_counter() - t0) * 1000
        answer = self._recommended(out)
        response.headers["server-timing"] = server_timing(call_ms, out.get("timing"), (time.perf_counter() - t0) * 1000)
        return answer

    @api.post("/recommend/batch", response_model=RecommendBatchResponse)
    async def recommend_batch(self, body: RecommendBatchRequest, request: Request) -> dict[str, Any]:
        """Many users in one call, each answered exactly as POST /recommend would, errors per user."""
        if len(body.requests) > C.MAX_USERS_PER_BATCH:
            raise InvalidInputError(
                f"requests holds {len(body.requests)} users; at most {C.MAX_USERS_PER_BATCH} are accepted per call"
            )
        outs = await self.recommender.recommend_many([self._fields(r) for r in body.requests])
        results = []
        for req, out in zip(body.requests, outs):
            if isinstance(out, BaseException):
                cause = root_cause(out)
                results.append({"user_id": req.user_id, "status": status_of(cause), "detail": str(cause),
                                "error": type(cause).__name__})
            else:
                results.append(self._recommended(out))
        return {"results": results}

    @api.post("/feedback", response_model=UserVersion)
    async def feedback(self, body: FeedbackRequest, request: Request) -> dict[str, Any]:
        arrived = time.time()
        # An id for every event: a call Ray resends after an actor restart is applied once.
        event_id = body.event_id or uuid.uuid4().hex
        out = await self._users_of(body.user_id).feedback.remote(
            body.user_id, body.item_id, body.event, event_id, arrived
        )
        return {"user_id": out["user_id"], "user_version": out["version"], "applied": out["applied"]}

    @api.put("/users/{user_id}", response_model=UserVersion)
    async def put_user(self, user_id: PathId, body: UserPut, request: Request) -> dict[str, Any]:
        actor = self._users_of(user_id)
        event_id = uuid.uuid4().hex
        if body.history is not None:
            out = await actor.set_history.remote(user_id, body.history, event_id)
        elif body.text is not None:

            async def place() -> Any:
                space, placer = self.model_version, self.placer
                embedding = await self._encode([body.text])  # type: ignore[list-item]
                vector = (embedding if placer is None else placer.text(embedding))[0]
                # The embedding is kept: a model swap places the user again by the new text path.
                return await actor.set_vector.remote(user_id, vector, event_id, embedding[0], space)

            out = await self._in_current_space(place)
        else:
            out = await actor.set_vector.remote(
                user_id, np.asarray(_finite(body.vector or [], "vector"), dtype=np.float32), event_id
            )
        return {"user_id": out["user_id"], "user_version": out["version"], "applied": out["applied"]}

    @api.get("/users/{user_id}", response_model=UserOut)
    async def get_user(self, user_id: PathId, request: Request) -> Any:
        state = await self._users_of(user_id).get.remote(user_id)
        if state is None:
            return JSONResponse(status_code=404, content={"detail": f"unknown user {user_id!r}"})
        return {
            "user_id": state["user_id"],
            "user_version": state["version"],
            "history": state["history"],
            "updated_at": state["updated_at"],
        }

    @api.delete("/users/{user_id}", response_model=UserDeleted)
    async def delete_user(self, user_id: PathId) -> Any:
        """Erases the user: vector, history, event ids; with storage, from every file before it answers."""
        out = await self._users_of(user_id).delete_user.remote(user_id)
        if not out["deleted"]:
            return JSONResponse(status_code=404, content={"detail": f"unknown user {user_id!r}"})
        return out

    @api.get("/users/{user_id}/export", response_model=UserExport)
    async def export_user(self, user_id: PathId) -> Any:
        """Everything rayrec keeps about the user (needs the API key when one is set: it is personal data)."""
        state = await self._users_of(user_id).export_user.remote(user_id)
        if state is None:
            return JSONResponse(status_code=404, content={"detail": f"unknown user {user_id!r}"})
        state["user_version"] = state.pop("version")
        return state

    @api.put("/items")
    async def put_items(self, body: ItemsPut, request: Request) -> dict[str, int]:
        arrived = time.perf_counter()
        items = body.items
        if len(items) > self.max_items_per_call:
            raise InvalidInputError(f"{len(items)} items in one call; at most {self.max_items_per_call} are accepted")
        dim = self.config.index.dim
        vectors = np.zeros((len(items), dim), dtype=np.float32)
        to_encode = [i for i, item in enumerate(items) if item.embedding is None]
        for i, item in enumerate(items):
            if item.embedding is not None:
                if len(item.embedding) != dim:
                    raise InvalidInputError(
                        f"items[{i}].embedding has {len(item.embedding)} values; the index holds {dim}-d vectors"
                    )
                vectors[i] = _finite(item.embedding, f"items[{i}].embedding")
        extra = sorted({name for item in items for name in (item.model_extra or {}) if name != TEXT_KEY})
        metadata = {"category": [item.category for item in items]}
        metadata.update({name: [(item.model_extra or {}).get(name) for item in items] for name in extra})
        # An item placed by its text keeps it: a model swap places it again in the new space.
        metadata[TEXT_KEY] = [item.text if item.embedding is None else None for item in items]

        async def place() -> int:
            space = self.model_version
            if to_encode:
                vectors[to_encode] = await self._item_vectors(
                    [items[i].item_id for i in to_encode], [items[i].text for i in to_encode]  # type: ignore[misc]
                )
            ids = [item.item_id for item in items]
            return await self.router.upsert.remote(ids, vectors, metadata, space if to_encode else None)

        upserted = await self._in_current_space(place)
        # The upsert returns once every owning shard has indexed the items: they are searchable.
        metrics.item_freshness_ms().observe((time.perf_counter() - arrived) * 1000)
        metrics.catalog_size().set(await self.router.count.remote())
        return {"upserted": upserted}

    @api.get("/items")
    async def get_items(
        self, request: Request, ids: Annotated[list[str], Query(alias="id", description="item ids: ?id=a&id=b")],
        embedding: bool = True,
    ) -> dict[str, Any]:
        """Several items at once, in the order asked (each id once), and the ids no shard holds under `unknown`."""
        ids = list(dict.fromkeys(ids))
        most = min(self.max_items_per_call, C.MAX_IDS_PER_GET)  # a longer URL than proxies pass
        if len(ids) > most:
            raise InvalidInputError(f"{len(ids)} item ids in one call; at most {most} are accepted")
        records = await self.router.fetch.remote(ids)  # checks the ids
        found = [_item_answer(r, embedding) for r in records if r is not None]
        return {"items": found, "unknown": [i for i, r in zip(ids, records) if r is None]}

    @api.get("/items/{item_id}")
    async def get_item(self, item_id: PathId, request: Request, embedding: bool = True) -> Any:
        """The item's metadata, and its vector unless embedding=false."""
        record = (await self.router.fetch.remote([item_id]))[0]
        if record is None:
            return JSONResponse(status_code=404, content={"detail": f"unknown item {item_id!r}"})
        return _item_answer(record, embedding)

    @api.get("/categories")
    async def categories(self, request: Request) -> dict[str, Any]:
        """Every category with its number of live items, most items first (what a category filter can name)."""
        counts = await self.router.categories.remote()
        return {
            "categories": [{"name": n, "items": c} for n, c in sorted(counts.items(), key=lambda nc: (-nc[1], nc[0]))]
        }

    @api.delete("/items/{item_id}")
    async def delete_item(self, item_id: PathId, request: Request) -> Any:
        deleted = await self.router.delete.remote([item_id])
        if not deleted:
            return JSONResponse(status_code=404, content={"detail": f"unknown item {item_id!r}"})
        return {"deleted": deleted}

    @api.post("/model", response_model=ModelSwapped)
    async def swap_model(self, body: ModelSwap, request: Request) -> dict[str, Any]:
        """Moves the running system to another trained model version under traffic (rayrec.system.model_swap)."""
        folder = store.resolve_named(body.model, self.models_root).resolve()
        text_dim = int(store.manifest(folder).get("text_dim", 0))
        if text_dim != await self.encoder.dim.remote():
            raise InvalidInputError(
                f"model {folder.name} was trained on {text_dim}-d text embeddings, not this encoder's"
            )
        out = await swap_model(self.router, self.users, str(folder), self._encode, create_shards)
        await self._follow_space()
        self.last_swap = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          **{key: out[key] for key in ("model_version", "previous", "seconds", "users", "items")}}
        return out

    @api.post("/encode", response_model=EncodeResponse)
    async def encode(self, body: EncodeRequest, request: Request) -> dict[str, Any]:
        vectors = await self._encode(body.texts)
        return {"dim": int(vectors.shape[1]), "embeddings": vectors.tolist()}

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        items, layout, *per_actor = await asyncio.gather(
            self.router.count.remote(), self.router.get_layout.remote(), *(u.count.remote() for u in self.users)
        )
        users = sum(per_actor)
        metrics.catalog_size().set(items)
        return {
            "status": "ok",
            "items": items,
            "users": users,
            "shards": layout[1].num_shards,  # the current count: a re-shard may have changed it
            "dim": self.config.index.dim,
            "index": self.config.index.factory,
            "model_version": ((await self.router.item_space.remote()) or {}).get("version") or self.model_version,
            "last_swap": self.last_swap,
            "check_ms": round((time.perf_counter() - t0) * 1000, 2),
        }
