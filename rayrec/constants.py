"""Defaults for every rayrec knob, each overridable by an environment variable."""

from __future__ import annotations

import os


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


# Below this L2 norm a vector has no direction (refused as a zero vector).
MIN_NORM = 1e-30

# Index and search.
DEFAULT_INDEX_FACTORY = os.environ.get("RAYREC_INDEX_FACTORY", "Flat")
DEFAULT_EF_SEARCH = _env_int("RAYREC_EF_SEARCH", 64)
DEFAULT_NPROBE = _env_int("RAYREC_NPROBE", 16)
DEFAULT_MAX_K = _env_int("RAYREC_MAX_K", 1000)
# Rows a shard's arrays hold before their first growth (then they double).
SHARD_INITIAL_ROWS = _env_int("RAYREC_SHARD_INITIAL_ROWS", 1024)
# Rebuild a shard's index once this fraction of its rows are tombstones.
DEFAULT_COMPACT_RATIO = _env_float("RAYREC_COMPACT_RATIO", 0.3)
# Tombstones below this many rows never trigger a rebuild (not worth it).
COMPACT_MIN_ROWS = _env_int("RAYREC_COMPACT_MIN_ROWS", 1024)
# A filtered query with at most this many eligible rows is answered by exact
# search over just those rows: cheaper than the index, and always k results.
EXACT_SUBSET_MAX_ROWS = _env_int("RAYREC_EXACT_SUBSET_MAX_ROWS", 4096)
# A query excluding at most this many of a shard's rows goes in the shard's batched search, over-fetching
# k + that many and dropping them; one excluding more is searched alone under a mask of its eligible rows.
EXCLUDE_OVERFETCH_MAX_ROWS = _env_int("RAYREC_EXCLUDE_OVERFETCH_MAX_ROWS", 256)
# Item vectors a user actor keeps for feedback (least recently used dropped beyond this many; 0: none).
# The router drops an item from every user actor's cache before it acknowledges a write of it; an entry is
# also dropped after ITEM_VECTOR_CACHE_TTL_S, which bounds what a write the router never acknowledged (it
# died mid-write) can leave behind.
ITEM_VECTOR_CACHE_SIZE = _env_int("RAYREC_ITEM_VECTOR_CACHE_SIZE", 10_000)
ITEM_VECTOR_CACHE_TTL_S = float(os.environ.get("RAYREC_ITEM_VECTOR_CACHE_TTL_S", "60"))
# OpenMP's wait policy in the encoder replicas (set before torch loads): PASSIVE, so idle torch threads
# do not spin on the cores the replica's event loop needs between batches.
ENCODER_OMP_WAIT_POLICY = os.environ.get("RAYREC_ENCODER_OMP_WAIT_POLICY", "PASSIVE")
# Largest efSearch a filtered HNSW query may grow to (efSearch / selectivity).
FILTERED_EF_SEARCH_MAX = _env_int("RAYREC_FILTERED_EF_SEARCH_MAX", 1024)
# IVF indexes are trained once a shard holds this many vectors per list
# (faiss warns below 39); until then the shard answers by exact search.
IVF_TRAIN_POINTS_PER_LIST = _env_int("RAYREC_IVF_TRAIN_POINTS_PER_LIST", 39)
# faiss uses BLAS for batches at least this large (7x faster at batch 64 here).
FAISS_BLAS_THRESHOLD = _env_int("RAYREC_FAISS_BLAS_THRESHOLD", 20)
SHARD_SEARCH_THREADS = _env_int("RAYREC_SHARD_SEARCH_THREADS", 1)
SHARD_BUILD_THREADS = _env_int("RAYREC_SHARD_BUILD_THREADS", 1)
# Threads a shard may use for a batch of at least SHARD_BATCH_MIN_QUERIES queries (faiss splits
# a batch over threads). Set it to a node's CPUs divided by the shards on that node.
SHARD_BATCH_THREADS = _env_int("RAYREC_SHARD_BATCH_THREADS", 1)
SHARD_BATCH_MIN_QUERIES = _env_int("RAYREC_SHARD_BATCH_MIN_QUERIES", 4)

# Topology and placement.
DEFAULT_NUM_SHARDS = _env_int("RAYREC_NUM_SHARDS", 2)
DEFAULT_NUM_USER_ACTORS = _env_int("RAYREC_NUM_USER_ACTORS", 1)
DEFAULT_SHARD_NUM_CPUS = _env_float("RAYREC_SHARD_NUM_CPUS", 0.25)
DEFAULT_ROUTER_NUM_CPUS = _env_float("RAYREC_ROUTER_NUM_CPUS", 0.25)
DEFAULT_USER_ACTOR_NUM_CPUS = _env_float("RAYREC_USER_ACTOR_NUM_CPUS", 0.1)
DEFAULT_NAMESPACE = os.environ.get("RAYREC_NAMESPACE", "rayrec")

# Durability: log rows after which an actor snapshots its state and truncates its log.
DEFAULT_SNAPSHOT_EVERY = _env_int("RAYREC_SNAPSHOT_EVERY", 100_000)
# On a local disk, write a user change to the log in the caller's turn when no other
# write is running (1) or always in a thread, grouping concurrent changes per fsync (0).
# Inline is faster where fsync is cheap (~0.5 ms here); use 0 on disks with slow fsync.
WAL_INLINE_WRITES = _env_int("RAYREC_WAL_INLINE_WRITES", 1) == 1
# How long an actor waits for its storage directory's writer lock before refusing to start (another system
# or a stale actor holds it); an actor Ray restarts gets it once its old process has ended.
FENCE_WAIT_S = _env_float("RAYREC_FENCE_WAIT_S", 15.0)
# Times Ray restarts a crashed rayrec actor (-1: without limit); with storage, a restarted
# actor comes back with its state.
DEFAULT_MAX_RESTARTS = _env_int("RAYREC_MAX_RESTARTS", -1)
# Times Ray resends a call whose actor died mid-call, once the actor is back. Writes are
# idempotent (event ids, last-writer-wins upserts), so resending is safe.
ACTOR_MAX_TASK_RETRIES = _env_int("RAYREC_ACTOR_MAX_TASK_RETRIES", 3)

# Shard replicas: a read not answered within the hedge delay also goes to another replica;
# a replica that failed or was late gets no reads for REPLICA_SUSPECT_S.
# How long a re-shard waits for its new shard actors to start (they may wait for room on a node).
RESHARD_START_TIMEOUT_S = _env_float("RAYREC_RESHARD_START_TIMEOUT_S", 300.0)
# How long a re-shard waits for a stopped old shard to be confirmed gone before writes resume.
RESHARD_STOP_TIMEOUT_S = _env_float("RAYREC_RESHARD_STOP_TIMEOUT_S", 60.0)
# A model swap's staged generation (item writes held) and paused user actors give up after this.
SWAP_TIMEOUT_S = _env_float("RAYREC_SWAP_TIMEOUT_S", 120.0)
# `rayrec serve` on a fresh models root trains the sequential space as a Ray Train job while it serves:
# the worker's torch threads (default: every core but one, which the serving actors keep), and its CPU
# claim, at most its threads and leaving this many of the free CPUs to the swap's new shard actors.
BACKGROUND_TRAIN_THREADS = _env_int("RAYREC_BACKGROUND_TRAIN_THREADS", max(1, (os.cpu_count() or 2) - 1))
BACKGROUND_TRAIN_SPARE_CPUS = _env_float("RAYREC_BACKGROUND_TRAIN_SPARE_CPUS", 0.5)
# How long `rayrec serve` waits for each of its own calls once that model is written (POST /model, the check).
BACKGROUND_SWAP_TIMEOUT_S = _env_float("RAYREC_BACKGROUND_SWAP_TIMEOUT_S", 600.0)
# How long a stopping `rayrec serve` waits for its background job to leave Ray before it shuts Ray down.
BACKGROUND_STOP_WAIT_S = _env_float("RAYREC_BACKGROUND_STOP_WAIT_S", 5.0)
DEFAULT_REPLICAS = _env_int("RAYREC_REPLICAS", 1)
DEFAULT_REPLICA_HEDGE_S = _env_float("RAYREC_REPLICA_HEDGE_S", 1.0)
REPLICA_SUSPECT_S = _env_float("RAYREC_REPLICA_SUSPECT_S", 5.0)

# Fan-out failure policy.
DEFAULT_SHARD_TIMEOUT_S = _env_float("RAYREC_SHARD_TIMEOUT_S", 10.0)
DEFAULT_SHARD_RETRIES = _env_int("RAYREC_SHARD_RETRIES", 1)
# Deadline of a write (upsert, delete) on one shard; writes are idempotent, so retried.
DEFAULT_WRITE_TIMEOUT_S = _env_float("RAYREC_WRITE_TIMEOUT_S", 60.0)
# Deadline of a bulk load on one shard (reading, checking and indexing its rows;
# building HNSW over 250k vectors takes ~100 s on 2 cores). Never retried.
DEFAULT_LOAD_TIMEOUT_S = _env_float("RAYREC_LOAD_TIMEOUT_S", 3600.0)
DEFAULT_ON_SHARD_FAILURE = os.environ.get("RAYREC_ON_SHARD_FAILURE", "partial")
# Batches a router keeps at its shards at once: one being searched while the next one
# waits in the shards' queues, so shards never idle between batches.
ROUTER_BATCHES_IN_FLIGHT = _env_int("RAYREC_ROUTER_BATCHES_IN_FLIGHT", 2)
# Batches a RouterClient keeps at the router at once.
CLIENT_BATCHES_IN_FLIGHT = _env_int("RAYREC_CLIENT_BATCHES_IN_FLIGHT", 2)
# Most queries the router puts into one call per shard.
DEFAULT_MAX_BATCH_QUERIES = _env_int("RAYREC_MAX_BATCH_QUERIES", 256)

# Feedback rule: signed learning rate per event type (positive pulls the user
# vector toward the item, negative pushes it away).
DEFAULT_LEARNING_RATES: dict[str, float] = {
    "click": 0.10,
    "like": 0.25,
    "purchase": 0.40,
    "skip": -0.05,
    "dislike": -0.25,
}
# Half-life of a user's vector between events; 0 disables time decay.
DEFAULT_DECAY_HALF_LIFE_S = _env_float("RAYREC_DECAY_HALF_LIFE_S", 0.0)
# Weight ratio between consecutive items when a user is set from a history.
DEFAULT_HISTORY_RECENCY = _env_float("RAYREC_HISTORY_RECENCY", 0.9)
DEFAULT_HISTORY_LEN = _env_int("RAYREC_HISTORY_LEN", 200)
# Locks a user-vector actor stripes its users over (one user's changes run in order).
USER_LOCK_STRIPES = _env_int("RAYREC_USER_LOCK_STRIPES", 256)
# Event ids remembered per user for idempotent replay.
DEFAULT_EVENT_ID_MEMORY = _env_int("RAYREC_EVENT_ID_MEMORY", 10_000)

# Text encoder.
ENCODER_MAX_TOKENS = _env_int("RAYREC_ENCODER_MAX_TOKENS", 128)
ENCODER_BATCH_SIZE = _env_int("RAYREC_ENCODER_BATCH_SIZE", 64)
ENCODER_BATCH_WAIT_S = _env_float("RAYREC_ENCODER_BATCH_WAIT_S", 0.01)
ENCODER_MAX_ONGOING_REQUESTS = _env_int("RAYREC_ENCODER_MAX_ONGOING_REQUESTS", 256)
# Most texts one /encode call or one encoder request may carry.
ENCODER_MAX_TEXTS_PER_CALL = _env_int("RAYREC_ENCODER_MAX_TEXTS_PER_CALL", 2048)

# HTTP ingress.
INGRESS_MAX_ONGOING_REQUESTS = _env_int("RAYREC_INGRESS_MAX_ONGOING_REQUESTS", 256)
# Largest request body any route accepts (413 above it).
MAX_BODY_BYTES = _env_int("RAYREC_MAX_BODY_BYTES", 32 * 1024 * 1024)
# Environment variable holding the API key that write routes require (unset: no key).
API_KEY_ENV = os.environ.get("RAYREC_API_KEY_ENV", "RAYREC_API_KEY")
# Most items one PUT /items call may carry.
MAX_ITEMS_PER_CALL = _env_int("RAYREC_MAX_ITEMS_PER_CALL", 1000)
# Ids one GET /items?id=...&id=... may name: a URL much past ~8 KB is refused by common proxies before the app.
MAX_IDS_PER_GET = _env_int("RAYREC_MAX_IDS_PER_GET", 100)
# Users in one POST /recommend/batch call.
MAX_USERS_PER_BATCH = _env_int("RAYREC_MAX_USERS_PER_BATCH", 1000)

# Input limits: every size a caller controls has one, checked before any work (README's limits table).
# An item or user id (also a path segment of /items/{id} and /users/{id}: no "/", no control characters).
MAX_ID_CHARS = _env_int("RAYREC_MAX_ID_CHARS", 512)
# An event id (the idempotency key of a feedback call).
MAX_EVENT_ID_CHARS = _env_int("RAYREC_MAX_EVENT_ID_CHARS", 128)
# A text to encode, an item's text, a user's describing text.
MAX_TEXT_CHARS = _env_int("RAYREC_MAX_TEXT_CHARS", 10_000)
# Item ids in one PUT /users/{id} history (only the last history_len of them are kept).
MAX_HISTORY_IDS = _env_int("RAYREC_MAX_HISTORY_IDS", 10_000)
# An item's metadata (category included, its kept text not): fields, a name's and a value's length, and
# all its values together (what every result that ranks the item carries).
MAX_METADATA_FIELDS = _env_int("RAYREC_MAX_METADATA_FIELDS", 32)
MAX_METADATA_NAME_CHARS = _env_int("RAYREC_MAX_METADATA_NAME_CHARS", 64)
MAX_METADATA_VALUE_CHARS = _env_int("RAYREC_MAX_METADATA_VALUE_CHARS", 1024)
MAX_METADATA_ITEM_CHARS = _env_int("RAYREC_MAX_METADATA_ITEM_CHARS", 4096)
# Distinct metadata field names one shard holds over its live items (a write bringing more is refused).
MAX_METADATA_FIELDS_PER_SHARD = _env_int("RAYREC_MAX_METADATA_FIELDS_PER_SHARD", 256)
# A category filter's entries.
MAX_FILTER_CATEGORIES = _env_int("RAYREC_MAX_FILTER_CATEGORIES", 100)
# A model name in POST /model (latest, vN, or a folder directly under the models root).
MAX_MODEL_NAME_CHARS = _env_int("RAYREC_MAX_MODEL_NAME_CHARS", 128)

# Item and user ids whose stable hash (their partition) a process keeps (rayrec.hashing.stable_hash).
STABLE_HASH_CACHE_SIZE = _env_int("RAYREC_STABLE_HASH_CACHE_SIZE", 1 << 16)
