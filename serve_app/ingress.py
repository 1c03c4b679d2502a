"""The HTTP ingress: a FastAPI app under Serve that composes the encoder and the rayrec actors."""


import asyncio
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
from rayrec.serve_app import bodies, demo_page
from rayrec.serve_app.catalogs import load_catalog
from rayrec.serve_app.health import health
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
from rayrec.serve_app.item_space import ItemSpace, start_placer
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
from rayrec.exceptions import InvalidInputError, RayrecError, root_cause
from rayrec.hashing import partition_of
from rayrec.system.deploy import build_actors
from rayrec.users.client import RecommendClient

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


@serve.deployment(max_ongoing_requests=C.INGRESS_MAX_ONGOING_REQUESTS)
@serve.ingress(api)
class Ingress:
    """Routes HTTP calls to the encoder deployment (a handle) and the rayrec actors (actor handles)."""

    async def __init__(self, encoder: Any, settings: dict[str, Any]) -> None:
        self.config = RayrecConfig.from_dict(settings["rayrec"])
        self.max_items_per_call = int(settings.get("max_items_per_call", C.MAX_ITEMS_PER_CALL))
        # The write key: its digest from the app's args, or the key from this replica's environment.
        digest = settings.get("api_key_sha256") or api_key_digest(settings.get("api_key_env"))
        api.state.max_body_bytes = int(settings.get("max_body_bytes", C.MAX_BODY_BYTES))  # http_edge.BodyLimit
        api.state.guard = Guard(digest, bool(settings.get("protect_reads", False)),
                                list(settings.get("allowed_hosts") or LOOPBACK_HOSTS), ACCESS)
        # The item space: a learned model's (its folder, resolved by the app builder), or the encoder's own,
        # checked before the actors are made.
        placer = await start_placer(encoder, settings.get("model"), self.config.index.dim)
        self.router, self.shards, self.users = build_actors(self.config, detached=True, attach=True)
        self.space = ItemSpace(encoder, self.router, self.users, placer, self.config.index.dim,
                               settings.get("models_root"))
        # Concurrent recommendations bound for one user actor travel as one call.
        self.recommender = RecommendClient(self.users, self.config.max_batch_queries)
        items = await self.router.count.remote()
        await self.space.join(self.config.storage, items > 0, settings.get("model"))
        catalog = settings.get("catalog", "none")
        if catalog != "none" and items == 0 and await self._fresh():
            # A fresh system: load its catalog before this replica reports ready. One that ever acknowledged
            # an item write or holds users is not fresh, even with no items left: loading would undo writes.
            await load_catalog(catalog, self.space.item_vectors, self.router, self.users,
                               settings.get("text_columns"))

    async def _fresh(self) -> bool:
        if await self.router.seeded.remote():
            return False
        return sum(await asyncio.gather(*(u.count.remote() for u in self.users))) == 0

    def _users_of(self, user_id: str) -> Any:
        return self.users[partition_of(user_id, len(self.users))]

    @api.get("/", include_in_schema=False)
    @api.get("/demo", include_in_schema=False)
    async def page(self, request: Request) -> HTMLResponse:
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

    @api.post("/recommend", response_model=RecommendResponse)
    async def recommend(self, body: RecommendRequest, request: Request, response: Response) -> dict[str, Any]:
        """Top-k for one user: ingress -> user actor -> shards (Server-Timing says where the time went)."""
        return await self._recommend_one(bodies.recommend_fields(body), request, response)

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
        answer = bodies.recommended(out, self.space.version)
        response.headers["server-timing"] = server_timing(call_ms, out.get("timing"), (time.perf_counter() - t0) * 1000)
        return answer

    @api.post("/recommend/batch", response_model=RecommendBatchResponse)
    async def recommend_batch(self, body: RecommendBatchRequest, request: Request) -> dict[str, Any]:
        """Many users in one call, each answered exactly as POST /recommend would, errors per user."""
        if len(body.requests) > C.MAX_USERS_PER_BATCH:
            raise InvalidInputError(
                f"requests holds {len(body.requests)} users; at most {C.MAX_USERS_PER_BATCH} are accepted per call"
            )
        outs = await self.recommender.recommend_many([bodies.recommend_fields(r) for r in body.requests])
        return {"results": bodies.batch_results(body.requests, outs, self.space.version)}

    @api.post("/feedback", response_model=UserVersion)
    async def feedback(self, body: FeedbackRequest, request: Request) -> dict[str, Any]:
        arrived = time.time()
        # An id for every event: a call Ray resends after an actor restart is applied once.
        event_id = body.event_id or uuid.uuid4().hex
        out = await self._users_of(body.user_id).feedback.remote(
            body.user_id, body.item_id, body.event, event_id, arrived
        )
        return bodies.user_version(out)

    @api.put("/users/{user_id}", response_model=UserVersion)
    async def put_user(self, user_id: PathId, body: UserPut, request: Request) -> dict[str, Any]:
        actor = self._users_of(user_id)
        event_id = uuid.uuid4().hex
        if body.history is not None:
            out = await actor.set_history.remote(user_id, body.history, event_id)
        elif body.text is not None:

            async def place() -> Any:
                space, vector, embedding = await self.space.user_vector(body.text)  # type: ignore[arg-type]
                # The embedding is kept: a model swap places the user again by the new text path.
                return await actor.set_vector.remote(user_id, vector, event_id, embedding, space)

            out = await self.space.in_current(place)
        else:
            out = await actor.set_vector.remote(
                user_id, np.asarray(bodies.finite(body.vector or [], "vector"), dtype=np.float32), event_id
            )
        return bodies.user_version(out)

    @api.get("/users/{user_id}", response_model=UserOut)
    async def get_user(self, user_id: PathId, request: Request) -> Any:
        state = await self._users_of(user_id).get.remote(user_id)
        return bodies.unknown("user", user_id) if state is None else bodies.user_out(state)

    @api.delete("/users/{user_id}", response_model=UserDeleted)
    async def delete_user(self, user_id: PathId) -> Any:
        """Erases the user: vector, history, event ids; with storage, from every file before it answers."""
        out = await self._users_of(user_id).delete_user.remote(user_id)
        return out if out["deleted"] else bodies.unknown("user", user_id)

    @api.get("/users/{user_id}/export", response_model=UserExport)
    async def export_user(self, user_id: PathId) -> Any:
        """Everything rayrec keeps about the user (needs the API key when one is set: it is personal data)."""
        state = await self._users_of(user_id).export_user.remote(user_id)
        if state is None:
            return bodies.unknown("user", user_id)
        state["user_version"] = state.pop("version")
        return state

    @api.put("/items")
    async def put_items(self, body: ItemsPut, request: Request) -> dict[str, int]:
        arrived = time.perf_counter()
        items = body.items
        if len(items) > self.max_items_per_call:
            raise InvalidInputError(f"{len(items)} items in one call; at most {self.max_items_per_call} are accepted")
        vectors, to_encode, metadata = bodies.items_to_write(items, self.config.index.dim)

        async def place() -> int:
            space = self.space.version
            if to_encode:
                vectors[to_encode] = await self.space.item_vectors(
                    [items[i].item_id for i in to_encode], [items[i].text for i in to_encode]  # type: ignore[misc]
                )
            ids = [item.item_id for item in items]
            return await self.router.upsert.remote(ids, vectors, metadata, space if to_encode else None)

        upserted = await self.space.in_current(place)
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
        ids = bodies.check_item_ids(ids, self.max_items_per_call)
        records = await self.router.fetch.remote(ids)  # checks the ids
        found = [bodies.item_answer(r, embedding) for r in records if r is not None]
        return {"items": found, "unknown": [i for i, r in zip(ids, records) if r is None]}

    @api.get("/items/{item_id}")
    async def get_item(self, item_id: PathId, request: Request, embedding: bool = True) -> Any:
        """The item's metadata, and its vector unless embedding=false."""
        record = (await self.router.fetch.remote([item_id]))[0]
        return bodies.unknown("item", item_id) if record is None else bodies.item_answer(record, embedding)

    @api.get("/categories")
    async def categories(self, request: Request) -> dict[str, Any]:
        """Every category with its number of live items, most items first (what a category filter can name)."""
        return bodies.categories_answer(await self.router.categories.remote())

    @api.delete("/items/{item_id}")
    async def delete_item(self, item_id: PathId, request: Request) -> Any:
        deleted = await self.router.delete.remote([item_id])
        return {"deleted": deleted} if deleted else bodies.unknown("item", item_id)

    @api.post("/model", response_model=ModelSwapped)
    async def swap_model(self, body: ModelSwap, request: Request) -> dict[str, Any]:
        """Moves the running system to another trained model version under traffic (ItemSpace.swap)."""
        return await self.space.swap(body.model)

    @api.post("/encode", response_model=EncodeResponse)
    async def encode(self, body: EncodeRequest, request: Request) -> dict[str, Any]:
        vectors = await self.space.encode(body.texts)
        return {"dim": int(vectors.shape[1]), "embeddings": vectors.tolist()}

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """The system's items, users, shards and item space, and this replica's last swap (serve_app/health.py)."""
        return await health(self.router, self.users, self.config, self.space)
