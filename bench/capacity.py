"""Capacity on paper, from figures measured here: how many nodes a given load needs.

    python bench/capacity.py --json                          # measures memory and search cost, then plans
    python bench/capacity.py --ledger http.json --json       # with the CPU ledger of a bench/http_latency.py run

Measured in this run, each in a fresh process (resident memory from /proc, before and after):
- bytes per item of one shard's ItemIndex for each index kind (the faiss index, rayrec's float32 copy of
  every vector, ids, the id map and a category), at --items items of --dim dimensions (clustered data);
- the in-process search cost of one shard of that kind (CPU-ms per query, one at a time and in batches);
- bytes per user of a UserStore holding --events feedback events per user (history and event ids).
Taken from a bench/http_latency.py run (--ledger; else the figures of docs/benchmarks.md's 2026-12-03
run, named in the output): the CPU-ms per recommendation of Serve (proxy and ingress), of the user actor,
and of one shard call's Ray machinery (the ledger's shard CPU less the search itself).

The plan: the items of --target-items split over shards that each fit one node's memory at --memory-use;
per recommendation, Serve + user actor + every shard's (call + search at its size); nodes = the larger
of memory and CPU (at --cpu-use of --node-cores) for --target-rps recommendations per second and
--target-users users. A search's cost is extrapolated from the measured shard size: HNSW by log(n), IVF
by sqrt(n) (nlist grown as sqrt(n) at the same nprobe), Flat by n. The output says every assumption.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--items", type=int, default=50_000, help="items of the measured shard")
parser.add_argument("--dim", type=int, default=384)
parser.add_argument("--kinds", default="Flat;HNSW32;IVF1024,Flat;IVF1024,PQ48", help="index factories, ';'-separated")
parser.add_argument("--users", type=int, default=20_000, help="users of the measured UserStore")
parser.add_argument("--events", type=int, default=50, help="feedback events per measured user")
parser.add_argument("--queries", type=int, default=300)
parser.add_argument("--ledger", help="a bench/http_latency.py JSON (its cpu_ms_per_call_16 and batch ledger)")
parser.add_argument("--target-items", type=float, default=100e6)
parser.add_argument("--target-users", type=float, default=10e6)
parser.add_argument("--target-rps", type=float, default=10_000)
parser.add_argument("--node-cores", type=int, default=16)
parser.add_argument("--node-gib", type=float, default=64)
parser.add_argument("--memory-use", type=float, default=0.7, help="share of a node's memory data may fill")
parser.add_argument("--cpu-use", type=float, default=0.6, help="share of a node's cores the load may keep busy")
parser.add_argument("--json", action="store_true", help="print one JSON object only")
parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one measurement in this process
args = parser.parse_args()

# docs/benchmarks.md, "The query plane (issue 17)", 2026-12-03, 2 cores: CPU-ms per recommendation at 16
# connections, POST /recommend over 2 shards, and per recommendation of POST /recommend/batch (100 users).
DOCS_LEDGER = {
    "source": "docs/benchmarks.md, 2026-12-03 (100k items, 2 shards HNSW32, 2 cores)",
    "shards": 2,
    # serve: proxy + ingress replica; ray: Ray's daemons (GCS, raylet, agents, Serve controller)
    "single": {"serve": 14.1, "user": 2.5, "shards": 2.5, "ray": 1.6},
    "batch": {"serve": 0.26, "user": 0.23, "shards": 0.42, "ray": 0.12},
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def clustered(n: int, dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(8, n // 500), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure_index(factory: str) -> dict:
    """One shard's ItemIndex of this kind: bytes per item, and CPU-ms per query alone and in batches of 64."""
    from rayrec.config import IndexConfig
    from rayrec.index.faiss_kinds import set_process_threads
    from rayrec.index.item_index import ItemIndex

    set_process_threads(1)  # as a shard actor runs
    vectors = clustered(args.items, args.dim)
    queries = clustered(args.queries, args.dim, seed=1)
    before = rss_bytes()  # the input vectors are already here: what grows is what the index keeps
    ids = [f"item-{n:09d}" for n in range(args.items)]
    cats = {"category": [f"category-{n % 20}" for n in range(args.items)]}
    index = ItemIndex(IndexConfig(dim=args.dim, factory=factory), build_threads=1)
    t0 = time.process_time()
    index.upsert(ids, vectors, cats)
    build_s = time.process_time() - t0
    del ids, cats  # the index holds its own references to what it keeps
    grown = rss_bytes() - before
    for q in queries[:20]:  # warm up
        index.search(q[None, :], 10)
    t0 = time.process_time()
    for q in queries:
        index.search(q[None, :], 10)
    single = (time.process_time() - t0) * 1000 / len(queries)
    t0 = time.process_time()
    for start in range(0, len(queries), 64):
        index.search(queries[start:start + 64], 10)
    batched = (time.process_time() - t0) * 1000 / len(queries)
    return {"bytes_per_item": round(grown / args.items, 1), "raw_vector_bytes": 4 * args.dim,
            "build_cpu_s": round(build_s, 2), "search_cpu_ms": round(single, 4),
            "search_cpu_ms_batched_64": round(batched, 4), "ready": bool(index.index_ready)}


def measure_users() -> dict:
    """A UserStore's bytes per user with --events feedback events each (its history and event ids)."""

    import numpy as np

    from rayrec.config import FeedbackRule
    from rayrec.users.user_state import UserStore

    rng = np.random.default_rng(2)
    item = clustered(256, args.dim, seed=3)
    before = rss_bytes()
    store = UserStore(args.dim, FeedbackRule())
    for u in range(args.users):
        for e in range(args.events):
            n = int(rng.integers(0, 256))
            store.apply(f"user-{u}", f"item-{n}", "click", item[n], event_id=f"user-{u}-event-{e}")
    grown = rss_bytes() - before
    return {"bytes_per_user": round(grown / args.users, 1), "events_per_user": args.events}


def child(what: str) -> dict:
    """Runs one measurement in a fresh process (so one's memory never counts in another's)."""
    argv = [sys.executable, __file__, "--child", what] + [a for a in sys.argv[1:] if a != "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout)


def ledger() -> dict:
    """CPU-ms per recommendation by process kind: from a bench/http_latency.py JSON, or the docs' run."""
    if not args.ledger:
        return DOCS_LEDGER
    with open(args.ledger) as f:
        run = json.load(f)
    one = run["cpu_ms_per_call_16"]["recommend"]
    many = run.get("batch_cpu_ms_per_recommendation_4", {})

    def split(kinds: dict) -> dict:
        serve = sum(v for k, v in kinds.items() if k.endswith(("ProxyActor", "Ingress")))
        user, shards = kinds.get("user actors", 0.0), kinds.get("shards", 0.0)
        client = kinds.get("client (this bench)", 0.0)
        ray = kinds.get("total", 0.0) - serve - user - shards - client  # the rest: Ray's daemons
        return {"serve": round(serve, 3), "user": user, "shards": shards, "ray": round(max(ray, 0.0), 3)}

    return {"source": args.ledger, "shards": run["shards"], "single": split(one), "batch": split(many)}


def grow(kind: str, cost: float, measured: int, size: float) -> float:
    """A search's cost extrapolated from a shard of `measured` items to one of `size`."""
    if kind.startswith("HNSW"):
        return cost * math.log2(size) / math.log2(measured)
    if kind.startswith("IVF"):
        return cost * math.sqrt(size / measured)
    return cost * size / measured


def plan(kind: str, index: dict, users: dict, costs: dict) -> dict:
    """Nodes for the target load with this index kind, for one recommendation per call and for batches."""
    node_bytes = args.node_gib * 2**30 * args.memory_use
    item_bytes = args.target_items * index["bytes_per_item"]
    user_bytes = args.target_users * users["bytes_per_user"]
    shards = max(1, math.ceil(item_bytes / node_bytes))
    size = args.target_items / shards
    out = {"shards": shards, "items_per_shard": round(size), "item_gib": round(item_bytes / 2**30, 1),
           "user_gib": round(user_bytes / 2**30, 1)}
    for route, search_key in (("single", "search_cpu_ms"), ("batch", "search_cpu_ms_batched_64")):
        c = costs[route]
        measured_search = index[search_key] * costs["shards"]
        call = max(0.0, c["shards"] - measured_search) / costs["shards"]  # Ray's part of one shard call
        search = grow(kind, index[search_key], args.items, size)
        per_rec = c["serve"] + c["user"] + c["ray"] + shards * (call + search)
        cores = args.target_rps * per_rec / 1000 / args.cpu_use
        nodes = max(math.ceil((item_bytes + user_bytes) / node_bytes), math.ceil(cores / args.node_cores))
        out[route] = {"cpu_ms_per_recommendation": round(per_rec, 2), "shard_call_cpu_ms": round(call, 3),
                      "search_cpu_ms_per_shard": round(search, 3), "cores": round(cores), "nodes": nodes}
    return out


def main() -> dict:
    kinds = [k for k in args.kinds.split(";") if k]
    measured = {kind: child(f"index:{kind}") for kind in kinds}
    users = child("users")
    costs = ledger()
    out = {
        "measured": {"items": args.items, "dim": args.dim, "index": measured, "users": users},
        "ledger": costs,
        "target": {"items": args.target_items, "users": args.target_users, "recommendations_per_s": args.target_rps,
                   "node": f"{args.node_cores} cores, {args.node_gib:g} GiB", "memory_use": args.memory_use,
                   "cpu_use": args.cpu_use},
        "assumptions": [
            "one replica; each shard one node's memory at memory_use; every query visits every shard",
            "search cost grows from the measured shard by log(n) (HNSW), sqrt(n) (IVF, nlist ~ sqrt(n)), n (Flat)",
            "Serve, user-actor and Ray-daemon CPU per recommendation as in the ledger (independent of the catalog)",
            "a shard call's Ray CPU = the ledger's shard CPU less the measured search, per shard",
        ],
        "plans": {k: plan(k, v, users, costs) for k, v in measured.items()
                  if "error" not in v and "error" not in users},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    return out


if __name__ == "__main__":
    if args.child:
        what = args.child
        print(json.dumps(measure_users() if what == "users" else measure_index(what.split(":", 1)[1])))
    else:
        result = main()
        print(json.dumps(result) if args.json else json.dumps(result, indent=2))
