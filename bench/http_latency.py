"""HTTP latency and throughput of /recommend and /feedback against no-op routes of the same app, same run.

    python bench/http_latency.py --items 100000 --users 2000 --json

Items are clustered 384-d vectors loaded with their embeddings (nothing to encode); users
start from histories of 20 items; recommendations exclude what the user has seen. The baselines
are `GET /noop` and `POST /noop` with a body of the same size as a /recommend call (a POST's body
costs Serve one more hop); `GET /recommend?user_id=...` is the same recommendation without a body. \
With --storage (the default) the system is durable: every feedback is
in the write-ahead log (fdatasync) before it is acknowledged. `feedback` events land on items all over
the catalog (each user actor reads the item's vector from its shard); `feedback_popular` on 100 items,
whose vectors the user actors keep after the first event. Clients are bounded threads on
127.0.0.1 with keep-alive. `POST /recommend/batch` is measured with --batch-users users a call.

The cost ledger: over each 16-client run, the CPU time (user + system, from /proc) of every process
of this Ray (the HTTP proxy, the ingress replica, user actors, shards, the router, Ray's own
daemons, and this client) divided by the requests answered: CPU-ms per request per process kind.
Beside it, the mean Server-Timing stages of the one-client /recommend run.
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
parser.add_argument("--batch-users", type=int, default=100, help="users per POST /recommend/batch call")
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
from rayrec.serve_app.app import build_app  # noqa: E402

from rayrec import Rayrec  # noqa: E402
from rayrec.catalogs.catalog import items_table  # noqa: E402

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
    """The n-th request's body: another user (and, for feedback, another item: of the first `_items` only
    where the body says so, as for events on a few popular items, which the user actors keep vectors of)."""
    out = dict(body, user_id=f"u{(n * 997) % args.users}")
    distinct = out.pop("_items", args.items)
    if "item_id" in out:
        out["item_id"] = f"i{(n * 7919) % distinct}"
    return out


def vary_batch(body: dict, n: int) -> dict:
    """The n-th batch call: --batch-users consecutive users from a varying start."""
    start = n * args.batch_users * 7
    return {"requests": [dict(body["requests"][0], user_id=f"u{(start + j) % args.users}")
                         for j in range(args.batch_users)]}


def url_of(url: str, n: int) -> str:
    """The n-th GET's URL: another user where the URL names one."""
    return url.format(user=f"u{(n * 997) % args.users}") if "{user}" in url else url


def vary_any(body: dict, n: int) -> dict:
    return vary_batch(body, n) if "requests" in body else vary(body, n)


STAGES: dict[str, list[float]] = {}


def note_timing(resp: requests.Response) -> None:
    for part in resp.headers.get("server-timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            STAGES.setdefault(name, []).append(float(dur))


def latency(url: str, body: dict | None) -> tuple[float, float]:
    s = requests.Session()
    current = vary_any(body, 0) if body else {}
    where = url_of(url, 0)
    send = (lambda: s.post(url, json=current, timeout=30)) if body else (lambda: s.get(where, timeout=30))
    for _ in range(20):
        send()
    lat = []
    for i in range(args.requests):
        if body:
            current = vary_any(body, i)
        else:
            where = url_of(url, i)
        t = time.perf_counter()
        resp = send()
        lat.append(time.perf_counter() - t)
        assert resp.status_code == 200, resp.text
        note_timing(resp)
    ms = np.array(lat) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def throughput(url: str, body: dict | None, clients: int) -> tuple[float, int]:
    """Calls answered per second with `clients` concurrent clients, and how many were answered."""
    stop = time.perf_counter() + args.seconds
    counts = [0] * clients

    def client(c: int) -> None:
        s = requests.Session()
        n = 0
        while time.perf_counter() < stop:
            if body:
                resp = s.post(url, json=vary_any(body, c * 100_003 + n), timeout=30)
            else:
                resp = s.get(url_of(url, c * 100_003 + n), timeout=30)
            assert resp.status_code == 200, resp.text
            n += 1
        counts[c] = n

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0), sum(counts)


TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def cpu_ms(pid: int) -> float:
    """User + system CPU time a process has used (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_MS


def our_processes() -> dict[int, str]:
    """Every process of this Ray (descendants of this client), by kind: actor class or program name."""
    from ray._private.state import actors  # the GCS actor table (the state API needs the dashboard)

    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            program = os.path.basename(cmd[0].decode(errors="replace")) if cmd and cmd[0] else "?"
            script = next((os.path.basename(c.decode(errors="replace")) for c in cmd[1:3] if c.endswith(b".py")), "")
            names[int(entry)] = script.removesuffix(".py") if program.startswith("python") and script else program
    me, ours = os.getpid(), {}
    for pid in parents:
        p = pid
        while p > 1 and p != me:
            p = parents.get(p, 1)
        if p == me:
            ours[pid] = names[pid]
    for actor in actors().values():
        if actor["State"] == "ALIVE" and actor["Pid"] in ours:
            kind = actor["ActorClassName"].split(":")[-1]  # ServeReplica:app:Ingress -> Ingress
            ours[actor["Pid"]] = {"UserVectors": "user actors", "Shard": "shards"}.get(kind, kind)
    ours[me] = "client (this bench)"
    return ours


def ledger(run: callable) -> tuple[float, dict[str, float]]:
    """Runs `run` (returning (rate, answered)); its rate, and CPU-ms per answered call per process kind."""
    procs = our_processes()
    before = {pid: cpu_ms(pid) for pid in procs}
    before[os.getpid()] = (os.times().user + os.times().system) * 1000
    rate, answered = run()
    after = {pid: cpu_ms(pid) for pid in procs}
    after[os.getpid()] = (os.times().user + os.times().system) * 1000
    per_kind: dict[str, float] = {}
    for pid, kind in procs.items():
        per_kind[kind] = per_kind.get(kind, 0.0) + (after[pid] - before[pid]) / max(answered, 1)
    per_kind = {k: round(v, 3) for k, v in sorted(per_kind.items(), key=lambda kv: -kv[1]) if v >= 0.005}
    per_kind["total"] = round(sum(per_kind.values()), 3)
    return rate, per_kind


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
        batch = {"requests": [rec] * args.batch_users}
        routes = {"noop": (f"{base}/noop", None), "noop_post": (f"{base}/noop", rec),
                  "recommend": (f"{base}/recommend", rec),
                  "recommend_get": (f"{base}/recommend?user_id={{user}}&k=10&exclude_seen=true", None),
                  "feedback": (f"{base}/feedback", feedback),
                  "feedback_popular": (f"{base}/feedback", dict(feedback, _items=100))}
        out: dict = {"items": args.items, "users": args.users, "shards": args.shards, "index": args.index,
                     "durable": not args.no_storage, "env": args.env, "batch_users": args.batch_users}
        log("latency, one client")
        for name, (url, body) in routes.items():
            STAGES.clear()
            out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = latency(url, body)
            if name.startswith("recommend"):
                out[f"{name}_server_timing_mean_ms"] = {k: round(float(np.mean(v)), 3) for k, v in STAGES.items()}
        q = system.get_user("u0")["vector"]
        lat = []
        for _ in range(args.requests):
            t = time.perf_counter()
            ray.get(system.router.search.remote(q, 10))
            lat.append(time.perf_counter() - t)
        out["router_p50_ms"] = float(np.percentile(np.array(lat) * 1000, 50))
        out["cpu_ms_per_call_16"] = {}
        for clients in (1, 16):
            log(f"throughput, {clients} clients")
            for name, (url, body) in routes.items():
                if clients == 16:
                    rate, out["cpu_ms_per_call_16"][name] = ledger(lambda u=url, b=body, c=clients: throughput(u, b, c))
                    out[f"{name}_rps_{clients}"] = rate
                else:
                    out[f"{name}_rps_{clients}"] = throughput(url, body, clients)[0]
        log(f"POST /recommend/batch, {args.batch_users} users a call")
        for clients in (1, 4):
            calls, per_kind = ledger(lambda c=clients: throughput(f"{base}/recommend/batch", batch, c))
            out[f"batch_recommendations_per_s_{clients}"] = calls * args.batch_users
            out[f"batch_cpu_ms_per_recommendation_{clients}"] = {k: round(v / args.batch_users, 4)
                                                                  for k, v in per_kind.items()}
        for name in ("recommend", "recommend_get", "feedback", "feedback_popular"):
            out[f"{name}_minus_noop_p50_ms"] = out[f"{name}_p50_ms"] - out["noop_p50_ms"]
            out[f"{name}_over_noop_rps_16"] = out[f"{name}_rps_16"] / out["noop_rps_16"]
        out["recommend_over_noop_post_rps_16"] = out["recommend_rps_16"] / out["noop_post_rps_16"]
        out = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
        out["user_actors"] = [ray.get(u.info.remote()) for u in system.users]  # item vectors kept, hits, misses
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
