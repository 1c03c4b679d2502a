"""Settings as frozen dataclasses, each checked when it is built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from rayrec import constants as C
from rayrec.exceptions import InvalidInputError

EVENT_TYPES = tuple(C.DEFAULT_LEARNING_RATES)
ON_SHARD_FAILURE = ("partial", "raise")


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")


def _non_negative_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}")


# Resources Ray names itself: claimed through num_cpus (and num_gpus, memory), not as custom ones.
BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def _check_resources(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{name} must be a dict of Ray custom resource name to amount, got {value!r}")
    for key, amount in value.items():
        if not isinstance(key, str) or not key or key in BUILTIN_RESOURCES:
            raise InvalidInputError(
                f"{name}: {key!r} is not a custom resource name (CPU and memory are set by the *_num_cpus options)"
            )
        _non_negative_number(f"{name}[{key!r}]", amount)


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """How each shard indexes its vectors.

    Args:
        dim: vector dimension of the item space (independent of any encoder's).
        factory: faiss index-factory string, e.g. "Flat", "HNSW32", "IVF1024,Flat".
        ef_search: HNSW efSearch (used when the factory builds an HNSW index).
        nprobe: IVF nprobe (used when the factory builds an IVF index).
        max_k: largest k a query may ask for.
        compact_ratio: rebuild a shard's index once this fraction of rows are tombstones.
    """

    dim: int
    factory: str = C.DEFAULT_INDEX_FACTORY
    ef_search: int = C.DEFAULT_EF_SEARCH
    nprobe: int = C.DEFAULT_NPROBE
    max_k: int = C.DEFAULT_MAX_K
    compact_ratio: float = C.DEFAULT_COMPACT_RATIO

    def __post_init__(self) -> None:
        _positive_int("dim", self.dim)
        _positive_int("ef_search", self.ef_search)
        _positive_int("nprobe", self.nprobe)
        _positive_int("max_k", self.max_k)
        if not isinstance(self.compact_ratio, (int, float)) or not 0 < self.compact_ratio <= 1:
            raise InvalidInputError(f"compact_ratio must be in (0, 1], got {self.compact_ratio!r}")
        if not isinstance(self.factory, str) or not self.factory.strip():
            raise InvalidInputError("factory must be a faiss index-factory string such as 'Flat' or 'HNSW32'")
        if "IDMap" in self.factory:
            raise InvalidInputError(
                f"factory {self.factory!r}: leave out IDMap, rayrec maps item ids itself"
            )
        from rayrec.index.faiss_kinds import new_index  # the factory string is checked by faiss itself

        try:
            new_index(self.dim, self.factory, self.ef_search, self.nprobe)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
            raise InvalidInputError(
                f"faiss cannot build index factory {self.factory!r} for dim {self.dim}: {first}. "
                "Use e.g. 'Flat' (exact), 'HNSW32' or 'IVF1024,Flat'."
            ) from None


@dataclass(frozen=True, slots=True)
class FeedbackRule:
    """The real-time update rule of user vectors.

    On an event of type e for item vector x, a user vector v becomes
    normalise(d * v + lr[e] * x), with d = 0.5 ** (dt / half_life) (1 when
    half_life is 0). Positive rates pull v toward x, negative ones push it away.

    Args:
        learning_rates: signed rate per event type; |rate| < 1.
        decay_half_life_s: half-life of the old vector between events; 0 = no decay.
        history_recency: weight ratio between consecutive items when a user is
            set from a history (newest weighs 1, the one before it this much, ...).
        history_len: events kept per user (also what exclude_seen excludes).
        event_id_memory: event ids remembered per user for idempotent replay.
    """

    learning_rates: dict[str, float] = field(default_factory=lambda: dict(C.DEFAULT_LEARNING_RATES))
    decay_half_life_s: float = C.DEFAULT_DECAY_HALF_LIFE_S
    history_recency: float = C.DEFAULT_HISTORY_RECENCY
    history_len: int = C.DEFAULT_HISTORY_LEN
    event_id_memory: int = C.DEFAULT_EVENT_ID_MEMORY

    def __post_init__(self) -> None:
        if set(self.learning_rates) != set(EVENT_TYPES):
            raise InvalidInputError(
                f"learning_rates must give a rate for exactly {sorted(EVENT_TYPES)}, "
                f"got {sorted(self.learning_rates)}"
            )
        for event, rate in self.learning_rates.items():
            if not isinstance(rate, (int, float)) or not math.isfinite(rate) or not -1 < rate < 1:
                raise InvalidInputError(f"learning rate of {event!r} must be in (-1, 1), got {rate!r}")
        _non_negative_number("decay_half_life_s", self.decay_half_life_s)
        if not isinstance(self.history_recency, (int, float)) or not 0 < self.history_recency <= 1:
            raise InvalidInputError(f"history_recency must be in (0, 1], got {self.history_recency!r}")
        _positive_int("history_len", self.history_len)
        _positive_int("event_id_memory", self.event_id_memory)


@dataclass(frozen=True, slots=True)
class RayrecConfig:
    """The whole system: index, topology, failure policy and feedback rule.

    Args:
        index: per-shard index settings (holds the item-space dimension).
        num_shards: item shards; items are placed by a stable hash of their id.
        num_user_actors: user-vector actors; users are placed by a stable hash.
        shard_timeout_s: deadline of one shard call inside a query.
        shard_retries: retries of a failed or late shard query or write before giving up.
        write_timeout_s: deadline of one shard's part of an upsert or delete.
        load_timeout_s: deadline of one shard's part of a bulk load (not retried).
        on_shard_failure: "partial" returns the answering shards' merge flagged
            partial; "raise" raises ShardUnavailableError.
        max_batch_queries: most queries the router sends to a shard in one call.
        shard_num_cpus, router_num_cpus, user_actor_num_cpus: Ray CPU claims.
        namespace: Ray namespace of the named actors.
        feedback: the user-vector update rule.
        storage: where state is kept durably (a directory or a URI pyarrow.fs
            opens, e.g. s3://bucket/rayrec); None keeps everything in memory only.
        snapshot_every: log rows after which an actor snapshots its state.
        max_restarts: times Ray restarts a crashed rayrec actor (-1: always).
        replicas: actors per shard holding the same items: reads go to one,
            writes to all (each keeps its own log and snapshots).
        replica_hedge_s: a read a replica has not answered by then also goes to another.
        shard_resources: Ray custom resources each shard replica needs, e.g.
            {"rayrec_shard": 0.01}: shards go only to nodes that offer them.
        control_resources: the same for the router and the user-vector actors.
        user_model: a folder holding a model-based user (rayrec.users.model_files): every feedback then
            computes the user's vector from their recent events with it; None (or a model that cannot be
            loaded, which the user actors report) keeps the feedback rule.
        fence_wait_s: how long an actor waits for its storage directory's writer lock before refusing to
            start; None: RAYREC_FENCE_WAIT_S of the actor's process (15 s unless set).
    """

    index: IndexConfig
    num_shards: int = C.DEFAULT_NUM_SHARDS
    num_user_actors: int = C.DEFAULT_NUM_USER_ACTORS
    shard_timeout_s: float = C.DEFAULT_SHARD_TIMEOUT_S
    shard_retries: int = C.DEFAULT_SHARD_RETRIES
    write_timeout_s: float = C.DEFAULT_WRITE_TIMEOUT_S
    load_timeout_s: float = C.DEFAULT_LOAD_TIMEOUT_S
    on_shard_failure: str = C.DEFAULT_ON_SHARD_FAILURE
    max_batch_queries: int = C.DEFAULT_MAX_BATCH_QUERIES
    shard_num_cpus: float = C.DEFAULT_SHARD_NUM_CPUS
    router_num_cpus: float = C.DEFAULT_ROUTER_NUM_CPUS
    user_actor_num_cpus: float = C.DEFAULT_USER_ACTOR_NUM_CPUS
    namespace: str = C.DEFAULT_NAMESPACE
    feedback: FeedbackRule = field(default_factory=FeedbackRule)
    storage: str | None = None
    snapshot_every: int = C.DEFAULT_SNAPSHOT_EVERY
    max_restarts: int = C.DEFAULT_MAX_RESTARTS
    replicas: int = C.DEFAULT_REPLICAS
    replica_hedge_s: float = C.DEFAULT_REPLICA_HEDGE_S
    shard_resources: dict[str, float] = field(default_factory=dict)
    control_resources: dict[str, float] = field(default_factory=dict)
    user_model: str | None = None
    fence_wait_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.index, IndexConfig):
            raise InvalidInputError(f"index must be an IndexConfig, got {type(self.index).__name__}")
        if not isinstance(self.feedback, FeedbackRule):
            raise InvalidInputError(f"feedback must be a FeedbackRule, got {type(self.feedback).__name__}")
        _positive_int("num_shards", self.num_shards)
        _positive_int("num_user_actors", self.num_user_actors)
        _positive_int("max_batch_queries", self.max_batch_queries)
        if isinstance(self.shard_retries, bool) or not isinstance(self.shard_retries, int) or self.shard_retries < 0:
            raise InvalidInputError(f"shard_retries must be an integer >= 0, got {self.shard_retries!r}")
        for name in ("shard_timeout_s", "write_timeout_s", "load_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidInputError(f"{name} must be a number > 0, got {value!r}")
        if self.on_shard_failure not in ON_SHARD_FAILURE:
            raise InvalidInputError(
                f"on_shard_failure must be one of {ON_SHARD_FAILURE}, got {self.on_shard_failure!r}"
            )
        for name in ("shard_num_cpus", "router_num_cpus", "user_actor_num_cpus"):
            _non_negative_number(name, getattr(self, name))
        if not isinstance(self.namespace, str) or not self.namespace:
            raise InvalidInputError("namespace must be a non-empty string")
        if self.storage is not None and (not isinstance(self.storage, str) or not self.storage.strip()):
            raise InvalidInputError(
                f"storage must be a directory path or a URI such as s3://bucket/prefix (or None), got {self.storage!r}"
            )
        if self.user_model is not None and (not isinstance(self.user_model, str) or not self.user_model.strip()):
            raise InvalidInputError(f"user_model must be a folder path (or None), got {self.user_model!r}")
        _positive_int("snapshot_every", self.snapshot_every)
        _positive_int("replicas", self.replicas)
        for name in ("shard_resources", "control_resources"):
            _check_resources(name, getattr(self, name))
        if (
            isinstance(self.replica_hedge_s, bool)
            or not isinstance(self.replica_hedge_s, (int, float))
            or not self.replica_hedge_s > 0
        ):
            raise InvalidInputError(f"replica_hedge_s must be a number > 0, got {self.replica_hedge_s!r}")
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int) or self.max_restarts < -1:
            raise InvalidInputError(f"max_restarts must be an integer >= -1 (-1: always), got {self.max_restarts!r}")
        if self.fence_wait_s is not None:
            _non_negative_number("fence_wait_s", self.fence_wait_s)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RayrecConfig:
        """Builds a config from plain data (e.g. YAML), rejecting unknown keys."""
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(f"unknown config keys {unknown}; known keys are {sorted(known)}")
        if "index" not in data:
            raise InvalidInputError("config needs an 'index' section with at least 'dim'")
        index = data.pop("index")
        feedback = data.pop("feedback", None)
        return cls(
            index=index if isinstance(index, IndexConfig) else _build(IndexConfig, index, "index"),
            feedback=(
                feedback
                if isinstance(feedback, FeedbackRule)
                else _build(FeedbackRule, feedback or {}, "feedback")
            ),
            **data,
        )


def _build(cls: type, data: Any, section: str) -> Any:
    if not isinstance(data, dict):
        raise InvalidInputError(f"config section {section!r} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidInputError(f"unknown keys {unknown} in config section {section!r}; known: {sorted(known)}")
    return cls(**data)
