"""HTTP latency and throughput of /recommend and /feedback against no-op routes of the same app, same run.

    python bench/http_latency.py --items 100000 --users 2000 --json

Items are clustered 384-d vectors loaded with their embeddings (nothing to encode); users
start from histories of 20 items; recommendations exclude what the user has seen. The baselines
are `GET /noop` and `POST /noop` with a body of the same size as a /recommend call (a POST's body
costs Serve one more hop). With --storage (the default) the system is durable: every feedback is
in the write-ahead log (fdatasync) before it is acknowledged. Clients are bounded threads on
127.0.0.1 with keep-alive.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--items", type=int, default=100_000)
parser.add_argument("--users", type=int, default=1000)
parser.add_argument("--shards", type=int, default=2)
parser.add_argument("--index", default="HNSW32")
parser.add_argument("--requests", type=int, default=300, help="sequential requests per latency figure")
parser.add_argument("--seconds", type=float, default=8.0, help="duration of each throughput run")
parser.add_argument("--port", type=int, default=8765)
parser.add_argument("--no-storage", action="store_true", help="serve without durability")
parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for every Ray process (e.g. a Serve setting); repeatable")
parser.add_argument("--json", action="store_true")
args = parser.parse_args()

for setting in args.env:  # before Ray starts: every Ray process (Serve's proxy and replicas too) inherits them
    name, _, value = setting.partition("=")
    os.environ[name] = value
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import requests  # noqa: E402
from ray import serve  # noqa: E402

from rayrec import Rayrec  # noqa: E402
from rayrec.catalogs.catalog import items_table  # noqa: E402
from rayrec.serve_app.app import build_app  # noqa: E402

NAMESPACE = "http-bench"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def catalog(path: str) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(10, args.items // 500), 384), dtype=np.float32)
    x = centres[rng.integers(0, centres.shape[0], args.items)]
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(1 / np.sqrt(384))
    faiss.normalize_L2(x)
    cats = [f"c{i % 20}" for i in range(args.items)]
    pq.write_table(items_table([f"i{i}" for i in range(args.items)], x, {"category": cats}), path)


def vary(body: dict, n: int) -> dict:
    """The n-th request's body: another user (and, for feedback, another item)."""
    out = dict(body, user_id=f"u{(n * 997) % args.users}")
    if "item_id" in out:
        out["item_id"] = f"i{(n * 7919) % args.items}"
    return out


def latency(url: str, body: dict | None) -> tuple[float, float]:
    s = requests.Session()
    current = dict(body or {})
    send = (lambda: s.post(url, json=current, timeout=30)) if body else (lambda: s.get(url, timeout=30))
    for _ in range(20):
        send()
    lat = []
    for i in range(args.requests):
        if body:
            current = vary(body, i)
        t = time.perf_counter()
        resp = send()
        lat.append(time.perf_counter() - t)
        assert resp.status_code == 200, resp.text
    ms = np.array(lat) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def throughput(url: str, body: dict | None, clients: int) -> float:
    stop = time.perf_counter() + args.seconds
    counts = [0] * clients

    def client(c: int) -> None:
        s = requests.Session()
        n = 0
        while time.perf_counter() < stop:
            if body:
                resp = s.post(url, json=vary(body, c * 100_003 + n), timeout=30)
            else:
                resp = s.get(url, timeout=30)
            assert resp.status_code == 200, resp.text
            n += 1
        counts[c] = n

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> dict:
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    base = f"http://127.0.0.1:{args.port}"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "catalog.parquet")
        log(f"catalog: {args.items} items")
        catalog(path)
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        log(f"deploying: {args.shards} shards of {args.index}")
        options = {"catalog": path, "namespace": NAMESPACE, "shards": args.shards, "index": args.index}
        if not args.no_storage:
            options["storage"] = os.path.join(tmp, "storage")
        serve.run(build_app(options), name="rayrec-bench", route_prefix="/")
        return measure(base)


def measure(base: str) -> dict:
    system = Rayrec.connect(namespace=NAMESPACE)
    try:
        rng = np.random.default_rng(1)
        system.set_histories({f"u{u}": [f"i{j}" for j in rng.integers(0, args.items, 20)] for u in range(args.users)})
        rec = {"user_id": "u0", "k": 10, "exclude_seen": True}
        feedback = {"user_id": "u0", "item_id": "i0", "event": "click"}
        routes = {"noop": (f"{base}/noop", None), "noop_post": (f"{base}/noop", rec),
                  "recommend": (f"{base}/recommend", rec), "feedback": (f"{base}/feedback", feedback)}
        out: dict = {"items": args.items, "users": args.users, "shards": args.shards, "index": args.index,
                     "durable": not args.no_storage, "env": args.env}
        log("latency, one client")
        for name, (url, body) in routes.items():
            out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = latency(url, body)
        q = system.get_user("u0")["vector"]
        lat = []
        for _ in range(args.requests):
            t = time.perf_counter()
            ray.get(system.router.search.remote(q, 10))
            lat.append(time.perf_counter() - t)
        out["router_p50_ms"] = float(np.percentile(np.array(lat) * 1000, 50))
        for clients in (1, 16):
            log(f"throughput, {clients} clients")
            for name, (url, body) in routes.items():
                out[f"{name}_rps_{clients}"] = throughput(url, body, clients)
        for name in ("recommend", "feedback"):
            out[f"{name}_minus_noop_p50_ms"] = out[f"{name}_p50_ms"] - out["noop_p50_ms"]
            out[f"{name}_over_noop_rps_16"] = out[f"{name}_rps_16"] / out["noop_rps_16"]
        out = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
        out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        return out
    finally:
        serve.delete("rayrec-bench")
        system.shutdown()
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    result = main()
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
