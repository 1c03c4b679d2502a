"""rayrec's metrics, exported through Ray's Prometheus endpoint (ray.util.metrics).

Created lazily in the process that records them (a Serve replica or an actor), so
importing this module needs no Ray. All names start with rayrec_ (Ray adds ray_
on export).
"""

from __future__ import annotations

from functools import cache
from typing import Any

# Milliseconds: from sub-millisecond actor calls to multi-second ingests.
LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


@cache
def requests_total() -> Any:
    from ray.util.metrics import Counter

    return Counter("rayrec_http_requests", "HTTP requests by route and status", tag_keys=("route", "status"))


@cache
def request_latency_ms() -> Any:
    from ray.util.metrics import Histogram

    return Histogram(
        "rayrec_http_latency_ms", "HTTP request latency by route", LATENCY_BOUNDARIES_MS, tag_keys=("route",)
    )


@cache
def encoder_batch_size() -> Any:
    from ray.util.metrics import Histogram

    return Histogram("rayrec_encoder_batch_texts", "texts per encoder forward batch", BATCH_BOUNDARIES)


@cache
def encoder_queue_wait_ms() -> Any:
    from ray.util.metrics import Histogram

    return Histogram("rayrec_encoder_queue_wait_ms", "time a text waited for its batch", LATENCY_BOUNDARIES_MS)


@cache
def feedback_freshness_ms() -> Any:
    from ray.util.metrics import Histogram

    return Histogram(
        "rayrec_feedback_freshness_ms",
        "from a feedback request's arrival to the first recommendation that used the updated vector",
        LATENCY_BOUNDARIES_MS,
    )


@cache
def item_freshness_ms() -> Any:
    from ray.util.metrics import Histogram

    return Histogram(
        "rayrec_item_freshness_ms", "from an item upsert's arrival to the item being searchable", LATENCY_BOUNDARIES_MS
    )


@cache
def catalog_size() -> Any:
    from ray.util.metrics import Gauge

    return Gauge("rayrec_items", "live items in the catalog")


@cache
def user_count() -> Any:
    from ray.util.metrics import Gauge

    return Gauge("rayrec_users", "users with a vector, per user-vector actor", tag_keys=("partition",))


@cache
def stage_latency_ms() -> Any:
    from ray.util.metrics import Histogram

    return Histogram(
        "rayrec_recommend_stage_ms",
        "where a recommendation's time went: ingress, hop (to the user actor and its queue), user (its own work), "
        "search (its fan-out to the shards and the merge)",
        LATENCY_BOUNDARIES_MS,
        tag_keys=("stage",),
    )
