"""The Python driver API: start or connect to rayrec on a Ray cluster and use it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import ray

from rayrec import constants as C
from rayrec.config import RayrecConfig
from rayrec.exceptions import InvalidInputError
from rayrec.hashing import partition_of
from rayrec.routing.topk import SearchResult
from rayrec.system.deploy import attach_actors, build_actors, reshard
from rayrec.system.deploy import get as _get
from rayrec.validation import check_id, check_ids


class Rayrec:
    """A running rayrec system, driven from Python.

    Use Rayrec.start(...) to create one (starting a local Ray if none is
    connected) or Rayrec.connect(...) to attach to one another driver started.
    Every method blocks until the system has applied the call.
    """

    def __init__(
        self,
        config: RayrecConfig,
        router: Any,
        shards: list[Any],
        users: list[Any],
        owns_ray: bool,
        started: bool = False,
    ) -> None:
        self.config = config
        self._started = started  # this object's process created the actors (it owns the non-detached ones)
        self.router = router
        self.shards = shards
        self.users = users
        self._owns_ray = owns_ray

    # ----- lifecycle ------------------------------------------------------
    @classmethod
    def start(
        cls,
        config: RayrecConfig,
        address: str | None = None,
        num_cpus: int | None = None,
        catalog: str | pa.Table | None = None,
        detached: bool = False,
    ) -> Rayrec:
        """Starts a rayrec system.

        Args:
            config: the system's settings.
            address: a Ray cluster to connect to ("auto", "host:port"); None
                starts a local Ray unless this process is already connected.
            num_cpus: CPUs of a local Ray (default: all of this machine's).
            catalog: optional Parquet path/URI or Arrow table to bulk-load.
            detached: keep the actors alive after this driver exits.
        """
        owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"namespace": config.namespace, "include_dashboard": False}
            if address is None:
                kwargs["num_cpus"] = num_cpus if num_cpus is not None else os.cpu_count()
            # "local": a new Ray of our own, never one that somebody's `ray start` left running.
            ray.init(address=address or "local", **kwargs)
            owns_ray = True
        router, shards, users = build_actors(config, detached)
        system = cls(config, router, shards, users, owns_ray, started=True)
        if catalog is not None:
            system.load(catalog)
        return system

    @classmethod
    def connect(cls, namespace: str = C.DEFAULT_NAMESPACE, address: str | None = "auto") -> Rayrec:
        """Attaches to a running system by its named actors."""
        owns_ray = False
        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace)
            owns_ray = True
        existing = attach_actors(namespace)
        if existing is None:
            raise InvalidInputError(f"no rayrec system runs in Ray namespace {namespace!r}")
        config, router, shards, users = existing
        return cls(config, router, shards, users, owns_ray)

    def shutdown(self) -> None:
        """Stops the system's actors (and the local Ray this object started)."""
        try:  # every replica of every shard
            shards = [h for group in _get(self.router.get_replicas.remote(), 30) for h in group]
        except Exception:  # the router is gone: its shards' first replicas are all we know
            shards = list(self.shards)
        for handle in [*self.users, self.router, *shards]:
            try:
                ray.kill(handle)
            except Exception:  # already dead: nothing to stop
                pass
        if self._owns_ray:
            ray.shutdown()

    def __enter__(self) -> Rayrec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ----- items ----------------------------------------------------------
    def load(self, source: str | pa.Table) -> int:
        """Bulk-loads a catalog (Parquet path/URI or Arrow table with item_id and embedding)."""
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if isinstance(source, str) and "://" not in source:
            # Every shard opens the file itself, from its own working directory.
            source = os.path.abspath(source)
        return _get(self.router.load.remote(source))

    def upsert(self, ids: Sequence[Any], vectors: Any, metadata: dict[str, list[Any]] | None = None) -> int:
        """Inserts or replaces items; returns how many were written."""
        return _get(self.router.upsert.remote(check_ids(ids), vectors, metadata))

    def delete(self, ids: Sequence[Any]) -> int:
        """Deletes items; returns how many existed."""
        return _get(self.router.delete.remote(check_ids(ids)))

    def fetch(self, ids: Sequence[Any]) -> list[dict[str, Any] | None]:
        """Per id, its record (item_id, vector, metadata) or None."""
        return _get(self.router.fetch.remote(check_ids(ids)))

    def reshard(self, num_shards: int) -> dict[str, Any]:
        """Moves the catalog onto num_shards shards while it serves (see rayrec.system.deploy.reshard).

        Queries go on and stay exact; writes wait while the items are copied.
        Returns the router's summary (items moved, seconds).
        """
        if not self._started and not _get(self.router.get_layout.remote())[2]:
            raise InvalidInputError(
                "this system was started without detached=True by another driver: re-shard it from that driver "
                "(new shard actors belong to the process that makes them, and would stop when this one exits)"
            )
        out = reshard(self.router, num_shards)
        self.config, _, _ = _get(self.router.get_layout.remote())
        self.shards = _get(self.router.get_shards.remote())
        return out

    def swap_model(self, model: str, models_root: str | None = None, model_dir: str | None = None) -> dict[str, Any]:
        """Moves the running system to a trained model version while traffic goes on (as `POST /model`).

        Items the model has no vector for are placed by its text path from the text they keep, with
        the encoder of model_dir (default MiniLM), loaded in this process only if there are such items.
        Returns the summary of rayrec.system.model_swap.swap_model.
        """
        import asyncio

        from rayrec.learning import store
        from rayrec.system.deploy import create_shards
        from rayrec.system.model_swap import swap_model

        if not self._started and not _get(self.router.get_layout.remote())[2]:
            raise InvalidInputError(
                "this system was started without detached=True by another driver: swap its model from that driver "
                "(new shard actors belong to the process that makes them, and would stop when this one exits)"
            )
        folder = store.resolve(model, models_root).resolve()
        encoders: list[Any] = []

        async def encode(texts: list[str]) -> Any:
            if not encoders:
                from rayrec.encoder import TextEncoder

                encoders.append(TextEncoder(model_dir))
            return encoders[0].encode(texts)

        out = asyncio.run(swap_model(self.router, self.users, str(folder), encode, create_shards))
        self.shards = _get(self.router.get_shards.remote())
        return out

    def compact(self) -> None:
        """Rebuilds every shard's index without tombstones (HNSW shards compact only when asked)."""
        _get(self.router.compact.remote())

    def snapshot(self) -> None:
        """Snapshots every shard and user actor now (with storage), e.g. before a planned restart."""
        _get([self.router.snapshot.remote(), *(u.snapshot.remote() for u in self.users)])

    def count(self) -> int:
        """Items in the catalog."""
        return _get(self.router.count.remote())

    def search(
        self, vectors: Any, k: int = 10, exclude: Any = None, categories: Any = None, with_metadata: bool = False
    ) -> SearchResult:
        """Global top-k of one or more query vectors."""
        return _get(self.router.search.remote(vectors, k, exclude, categories, with_metadata))

    def encode(self, texts: Sequence[str], app_name: str = "rayrec") -> Any:
        """Texts to unit vectors through the encoder deployment of a running Serve app.

        Returns an (n, dim) float32 array.
        """
        from ray import serve

        handle = serve.get_deployment_handle("Encoder", app_name=app_name)
        return handle.encode.remote(list(texts)).result()

    # ----- users ----------------------------------------------------------
    def _users_of(self, user_id: Any) -> Any:
        return self.users[partition_of(check_id(user_id, "user id"), len(self.users))]

    def recommend(
        self,
        user_id: Any,
        k: int = 10,
        exclude_seen: bool = True,
        categories: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> dict[str, Any]:
        """Top-k items for a user (see UserVectors.recommend for the fields)."""
        return _get(self._users_of(user_id).recommend.remote(user_id, k, exclude_seen, categories, exclude))

    def feedback(self, user_id: Any, item_id: Any, event: str, event_id: str | None = None) -> dict[str, Any]:
        """Applies click/like/purchase/skip/dislike; the next recommend sees it.

        Without an event_id one is made up, so a call Ray resends after an actor
        restart is applied once.
        """
        event_id = event_id if event_id is not None else uuid.uuid4().hex
        return _get(self._users_of(user_id).feedback.remote(user_id, item_id, event, event_id))

    def set_user(
        self,
        user_id: Any,
        vector: Any = None,
        history: Sequence[Any] | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Sets a user from a vector, or from a history of item ids (oldest first)."""
        if (vector is None) == (history is None):
            raise InvalidInputError("set_user needs exactly one of vector= or history=")
        actor = self._users_of(user_id)
        event_id = event_id if event_id is not None else uuid.uuid4().hex
        if vector is not None:
            return _get(actor.set_vector.remote(user_id, vector, event_id))
        return _get(actor.set_history.remote(user_id, check_ids(history), event_id))

    def delete_user(self, user_id: str) -> bool:
        """Erases a user (vector, history, event ids; with storage, from every file) before returning;
        False if unknown."""
        return bool(_get(self._users_of(user_id).delete_user.remote(user_id))["deleted"])

    def export_user(self, user_id: str) -> dict[str, Any] | None:
        """Everything rayrec keeps about a user (vector, history, event ids, what it was placed from), or None."""
        return _get(self._users_of(user_id).export_user.remote(user_id))

    def set_histories(self, histories: dict[str, list[str]]) -> int:
        """Sets many users from histories of item ids (oldest first); returns how many were set."""
        parts: dict[int, dict[str, list[str]]] = {}
        for user_id, items in histories.items():
            user_id = check_id(user_id, "user id")
            parts.setdefault(partition_of(user_id, len(self.users)), {})[user_id] = check_ids(items)
        return sum(_get([self.users[p].set_histories.remote(h) for p, h in parts.items()]))

    def get_user(self, user_id: Any) -> dict[str, Any] | None:
        """A user's vector, version, history and updated_at (None if unknown)."""
        return _get(self._users_of(user_id).get.remote(user_id))
