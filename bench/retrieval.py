"""Retrieval benchmark: the sharded router against one in-process faiss index of the same kind.

    python bench/retrieval.py --items 100000 --dim 384 --shards 2 --index HNSW32 --json

Data is a Gaussian mixture (clustered unit vectors): on uniformly random vectors no
approximate index finds real neighbours. Both sides see the same items and queries,
measured in the same run, so the ratios hold on a noisy shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--items", type=int, default=100_000)
parser.add_argument("--dim", type=int, default=384)
parser.add_argument("--shards", type=int, default=2)
parser.add_argument("--index", default="HNSW32", help="faiss index factory string")
parser.add_argument("--ef-search", type=int, default=64, help="HNSW efSearch")
parser.add_argument("--nprobe", type=int, default=16, help="IVF nprobe")
parser.add_argument("--queries", type=int, default=500, help="queries for latency and recall")
parser.add_argument("--callers", type=int, default=32, help="concurrent callers for router_qps")
parser.add_argument("--qps-seconds", type=float, default=10.0, help="duration of the throughput runs")
parser.add_argument("--clusters", type=int, default=0, help="mixture components (default: items / 500)")
parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--json", action="store_true", help="print one JSON object only")
args = parser.parse_args()

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on loopback
# Each shard may use its share of the cores for batches and builds, never more in total
# (read by rayrec.constants in the shard processes, which inherit this environment).
PER_SHARD_THREADS = str(max(1, args.num_cpus // args.shards))
os.environ.setdefault("RAYREC_SHARD_BATCH_THREADS", PER_SHARD_THREADS)
os.environ.setdefault("RAYREC_SHARD_BUILD_THREADS", PER_SHARD_THREADS)

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from rayrec import IndexConfig, Rayrec, RayrecConfig  # noqa: E402
from rayrec.catalogs.catalog import items_table  # noqa: E402
from rayrec.index.faiss_kinds import set_process_threads  # noqa: E402
from rayrec.routing.client import RouterClient  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mixture(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray, spread: float = 1.0) -> np.ndarray:
    """Unit vectors around random centres: real neighbourhoods for an ANN index to find."""
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        pick = rng.integers(0, centres.shape[0], m)
        noise = rng.standard_normal((m, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))
        out[start : start + m] = centres[pick] + noise
    faiss.normalize_L2(out)
    return out


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.array(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> dict:
    rng = np.random.default_rng(args.seed)
    clusters = args.clusters or max(10, args.items // 500)
    centres = rng.standard_normal((clusters, args.dim), dtype=np.float32)
    faiss.normalize_L2(centres)
    log(f"data: {args.items} x {args.dim}, {clusters} clusters")
    x = mixture(rng, args.items, args.dim, centres)
    q = mixture(rng, args.queries, args.dim, centres)
    ids = [f"i{i}" for i in range(args.items)]

    exact = faiss.IndexFlatIP(args.dim)
    exact.add(x)
    faiss.omp_set_num_threads(args.num_cpus)
    _, truth = exact.search(q, 10)
    del exact

    log(f"single index {args.index}: build")
    single = faiss.index_factory(args.dim, args.index, faiss.METRIC_INNER_PRODUCT)
    t0 = time.perf_counter()
    if not single.is_trained:
        single.train(x[rng.choice(args.items, min(args.items, 256 * 4096), replace=False)])
    single.add(x)
    single_build_s = time.perf_counter() - t0
    if hasattr(single, "hnsw"):
        single.hnsw.efSearch = args.ef_search
    try:
        faiss.extract_index_ivf(single).nprobe = args.nprobe
    except RuntimeError:
        pass

    set_process_threads(1)  # one query at a time on one core, like a shard
    lat, single_found = [], []
    for i in range(args.queries):
        t = time.perf_counter()
        _, rows = single.search(q[i : i + 1], 10)
        lat.append(time.perf_counter() - t)
        single_found.append(rows[0])
    single_recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(single_found, truth)]))
    single_p50, single_p99 = percentiles(lat)

    faiss.omp_set_num_threads(args.num_cpus)  # batches of 32 on every core: what the hardware can do
    done, t_end = 0, time.perf_counter() + args.qps_seconds
    t0 = time.perf_counter()
    while time.perf_counter() < t_end:
        start = (done * 32) % max(args.queries - 32, 1)
        single.search(q[start : start + 32], 10)
        done += 32
    single_qps = done / (time.perf_counter() - t0)
    faiss.omp_set_num_threads(1)
    del single

    log(f"rayrec: {args.shards} shards of {args.index}: load and build")
    config = RayrecConfig(
        index=IndexConfig(dim=args.dim, factory=args.index, ef_search=args.ef_search, nprobe=args.nprobe),
        num_shards=args.shards,
        num_user_actors=1,
        namespace=f"bench-{os.getpid()}",
    )
    system = Rayrec.start(config, num_cpus=args.num_cpus)
    try:
        t0 = time.perf_counter()
        table = items_table(ids, x)
        del x
        system.load(table)
        del table
        rayrec_build_s = time.perf_counter() - t0
        router = system.router
        import ray

        found = []
        lat = []
        for _ in range(20):  # warm up
            ray.get(router.search.remote(q[0], 10))
        for i in range(args.queries):
            t = time.perf_counter()
            res = ray.get(router.search.remote(q[i], 10))
            lat.append(time.perf_counter() - t)
            found.append([int(s[1:]) for s in res.ids[0]])
        router_p50, router_p99 = percentiles(lat)
        recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))

        async def caller(search, i: int, stop: float) -> int:
            n = 0
            while time.perf_counter() < stop:
                await search(q[(i * 7 + n) % args.queries], 10)
                n += 1
            return n

        async def throughput(coalesce: bool) -> tuple[float, int]:
            """Queries/s of concurrent single-query callers in this process.

            coalesce: through a RouterClient, as a server process calls (its concurrent
            searches share router calls); else one router call per query.
            """
            client = RouterClient(router, args.dim, config.index.max_k)
            search = client.search if coalesce else (lambda v, k: router.search.remote(v, k))
            t0 = time.perf_counter()
            counts = await asyncio.gather(*(caller(search, i, t0 + args.qps_seconds) for i in range(args.callers)))
            return sum(counts) / (time.perf_counter() - t0), client.calls_sent

        log(f"router throughput: {args.callers} concurrent callers, one router call each")
        router_qps_uncoalesced, _ = asyncio.run(throughput(False))
        log(f"router throughput: {args.callers} concurrent callers through a RouterClient")
        router_qps, router_calls = asyncio.run(throughput(True))
    finally:
        system.shutdown()

    return {
        "items": args.items,
        "dim": args.dim,
        "shards": args.shards,
        "index": args.index,
        "ef_search": args.ef_search if "HNSW" in args.index else None,
        "nprobe": args.nprobe if "IVF" in args.index else None,
        "recall_at_10": round(recall, 4),
        "single_recall_at_10": round(single_recall, 4),
        "router_p50_ms": round(router_p50, 3),
        "router_p99_ms": round(router_p99, 3),
        "router_qps": round(router_qps, 1),
        "router_qps_uncoalesced": round(router_qps_uncoalesced, 1),
        "router_calls_per_s_coalesced": round(router_calls / args.qps_seconds, 1),
        "single_p50_ms": round(single_p50, 3),
        "single_p99_ms": round(single_p99, 3),
        "single_qps": round(single_qps, 1),
        "router_minus_single_p50_ms": round(router_p50 - single_p50, 3),
        "router_qps_over_single_qps": round(router_qps / single_qps, 3),
        "shard_threads_for_batches_and_builds": int(os.environ["RAYREC_SHARD_BATCH_THREADS"]),
        "single_build_s": round(single_build_s, 1),
        "rayrec_load_and_build_s": round(rayrec_build_s, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, faiss {faiss.__version__}",
    }


if __name__ == "__main__":
    result = main()
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
