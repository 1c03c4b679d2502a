"""The rayrec Serve application: `serve run rayrec.serve_app.app:build_app` or `rayrec serve`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from rayrec.serve_app.encoder import Encoder
from rayrec.serve_app.http_edge import LOOPBACK_HOSTS
from rayrec.serve_app.ingress import Ingress

from rayrec import constants as C
from rayrec.exceptions import InvalidInputError


class AppArgs(BaseModel):
    """Every option of the application (also the keys of `args:` in a Serve config file)."""

    model_config = ConfigDict(extra="forbid")

    catalog: str = Field("movielens-100k", description="movielens-100k, none, or a Parquet path")
    text_columns: list[str] | None = Field(None, description="columns joined into item text (default: text)")
    namespace: str = C.DEFAULT_NAMESPACE
    dim: int | None = Field(
        None, ge=1, description="item-space dimension (default: the model's, else the encoder's: MiniLM 384)"
    )
    model: str | None = Field(
        None,
        description="a trained item space: latest, a version (v3) or a model folder; None: the encoder's own space",
    )
    models_root: str | None = Field(
        None, description="where `latest` and versions are looked up (default: rayrec's cache)"
    )
    shards: int = Field(C.DEFAULT_NUM_SHARDS, ge=1)
    index: str = Field("HNSW32", description="faiss index factory string of each shard")
    ef_search: int = Field(C.DEFAULT_EF_SEARCH, ge=1)
    nprobe: int = Field(C.DEFAULT_NPROBE, ge=1)
    max_k: int = Field(C.DEFAULT_MAX_K, ge=1)
    user_actors: int = Field(C.DEFAULT_NUM_USER_ACTORS, ge=1)
    on_shard_failure: str = C.DEFAULT_ON_SHARD_FAILURE
    actor_num_cpus: float = Field(
        0.1, ge=0, description="CPU claim of each rayrec actor (fractional: they share cores)"
    )
    model_dir: str | None = Field(None, description="a local Hugging Face model directory (default: MiniLM)")
    encoder_num_gpus: float = Field(0, ge=0, description="GPUs per encoder replica (fractional allowed)")
    encoder_num_cpus: float = Field(
        0.5, ge=0, description="CPU claim of each encoder replica (torch uses its own threads)"
    )
    encoder_replicas: int = Field(1, ge=1)
    max_batch_size: int = Field(C.ENCODER_BATCH_SIZE, ge=1, description="texts per encoder batch")
    batch_wait_timeout_s: float = Field(C.ENCODER_BATCH_WAIT_S, ge=0)
    ingress_num_cpus: float = Field(0.1, ge=0)
    ingress_replicas: int = Field(1, ge=1)
    encoder_autoscaling: dict[str, Any] | None = Field(
        None,
        description="Serve autoscaling_config of the encoder (min_replicas, max_replicas, ...); "
        "replaces encoder_replicas",
    )
    ingress_autoscaling: dict[str, Any] | None = Field(None, description="Serve autoscaling_config of the ingress")
    shard_resources: dict[str, float] = Field(default_factory=dict, description="Ray custom resources each shard needs")
    control_resources: dict[str, float] = Field(default_factory=dict, description="the same for router and user actors")
    encoder_resources: dict[str, float] = Field(default_factory=dict, description="the same for each encoder replica")
    max_items_per_call: int = Field(C.MAX_ITEMS_PER_CALL, ge=1)
    max_body_bytes: int = Field(C.MAX_BODY_BYTES, ge=1, description="largest request body any route accepts (413)")
    replicas: int = Field(C.DEFAULT_REPLICAS, ge=1, description="actors per shard holding the same items")
    storage: str | None = Field(
        None, description="directory or URI (s3://, gs://) for durable state; None: memory only"
    )
    snapshot_every: int = Field(C.DEFAULT_SNAPSHOT_EVERY, ge=1, description="log rows between an actor's snapshots")
    api_key_env: str | None = Field(
        None,
        description="environment variable (of the ingress replicas) holding the API key: then it must be set and "
        "not empty; None: RAYREC_API_KEY if set",
    )
    api_key_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 hex of the API key (instead of the key in the environment)",
    )
    protect_reads: bool = Field(False, description="require the API key on read routes too")
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(LOOPBACK_HOSTS),
        min_length=1,
        description="Host header names the app answers (others get 400: DNS rebinding); '*' any, '*.example.com'",
    )

    def resolved(self) -> "AppArgs":
        """These options with `model` as the folder it names now (so every replica loads the same version) and
        `dim` filled in: the model's dimension, or the encoder's (its config's hidden size; MiniLM: 384)."""
        if self.model is None:  # the index holds the encoder's own vectors
            from rayrec.encoder import encoder_dim

            text_dim = encoder_dim(self.model_dir)
            if self.dim is not None and self.dim != text_dim:
                raise InvalidInputError(
                    f"dim {self.dim} differs from the encoder's {text_dim} (without a model the index holds its "
                    "vectors): leave dim out"
                )
            return self.model_copy(update={"dim": text_dim})
        from rayrec.learning import store

        folder = store.resolve(self.model, self.models_root)
        model_dim = int(store.manifest(folder)["dim"])
        if self.dim is not None and self.dim != model_dim:
            raise InvalidInputError(f"dim {self.dim} differs from model {folder}'s {model_dim}: leave dim out")
        return self.model_copy(update={"model": str(folder.resolve()), "dim": model_dim})

    def rayrec_config(self) -> dict[str, Any]:
        """The RayrecConfig (as data) these options describe (call it on `resolved()` options: dim filled in)."""
        if self.dim is None:
            raise ValueError("rayrec_config() needs dim: call it on resolved() options")
        return {
            "index": {
                "dim": self.dim,
                "factory": self.index,
                "ef_search": self.ef_search,
                "nprobe": self.nprobe,
                "max_k": self.max_k,
            },
            "num_shards": self.shards,
            "num_user_actors": self.user_actors,
            "on_shard_failure": self.on_shard_failure,
            "shard_num_cpus": self.actor_num_cpus,
            "router_num_cpus": self.actor_num_cpus,
            "user_actor_num_cpus": self.actor_num_cpus,
            "namespace": self.namespace,
            "replicas": self.replicas,
            "storage": self.storage,
            "shard_resources": self.shard_resources,
            "control_resources": self.control_resources,
            "snapshot_every": self.snapshot_every,
            "user_model": self._user_model(),
        }

    def _user_model(self) -> str | None:
        """A sequential space's user model folder (its users are computed by it), else None (the rule)."""
        if self.model is None:
            return None
        from rayrec.learning import store

        folder = store.resolve(self.model, self.models_root)
        return str(folder / store.USER_MODEL) if store.manifest(folder).get("kind") == "sequential" else None


def build_app(args: dict[str, Any] | AppArgs | None = None) -> Any:
    """The Serve application for these options (a typed application builder)."""
    opts = (args if isinstance(args, AppArgs) else AppArgs(**(args or {}))).resolved()
    from rayrec.config import RayrecConfig

    RayrecConfig.from_dict(opts.rayrec_config())  # a bad option fails here, before anything deploys
    encoder = Encoder.options(
        **_scale(opts.encoder_replicas, opts.encoder_autoscaling),
        ray_actor_options={
            "num_cpus": opts.encoder_num_cpus,
            "num_gpus": opts.encoder_num_gpus,
            "resources": opts.encoder_resources,
        },
        user_config={"max_batch_size": opts.max_batch_size, "batch_wait_timeout_s": opts.batch_wait_timeout_s},
    ).bind(opts.model_dir)
    settings = {
        "rayrec": opts.rayrec_config(),
        "catalog": opts.catalog,
        "model": opts.model,
        "models_root": opts.models_root,
        "text_columns": opts.text_columns,
        "max_items_per_call": opts.max_items_per_call,
        "api_key_env": opts.api_key_env,
        "api_key_sha256": opts.api_key_sha256,
        "protect_reads": opts.protect_reads,
        "allowed_hosts": list(opts.allowed_hosts),
        "max_body_bytes": opts.max_body_bytes,
    }
    ingress_options = {"num_cpus": opts.ingress_num_cpus}
    return Ingress.options(
        **_scale(opts.ingress_replicas, opts.ingress_autoscaling), ray_actor_options=ingress_options
    ).bind(encoder, settings)


def _scale(replicas: int, autoscaling: dict[str, Any] | None) -> dict[str, Any]:
    """Serve's replica options: a fixed count, or an autoscaling config instead."""
    return {"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": replicas}
