"""Re-sharding benchmark: how long a re-shard takes, what reads pay meanwhile, how long writes wait.

    python bench/reshard.py --json
    python bench/reshard.py --items 500000 --from-shards 2 --to-shards 4 --storage-dir /tmp/rs --json

One local Ray system with --items clustered vectors in --from-shards shards.
A reader thread searches (top-10, one query per call) and a writer thread
upserts one item per call, the whole time. Reads are measured before the
re-shard (the baseline, same run) and during it; the writer's slowest call is
the pause writes see. Then the system re-shards back, so both directions run.
Every read is also checked against the first answer to its query (the
writer's items are placed where they never enter a top-10).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import threading
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dim", type=int, default=128)
parser.add_argument("--items", type=int, default=200_000)
parser.add_argument("--index", default="Flat", help="faiss factory of the shards")
parser.add_argument("--from-shards", type=int, default=2)
parser.add_argument("--to-shards", type=int, default=4)
parser.add_argument("--baseline-s", type=float, default=5.0, help="seconds of reads measured before re-sharding")
parser.add_argument("--storage-dir", default=None, help="durable storage here (default: memory only)")
parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
parser.add_argument("--json", action="store_true", help="print one JSON object only")
args = parser.parse_args()

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on loopback

import numpy as np  # noqa: E402

from rayrec import IndexConfig, Rayrec, RayrecConfig  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def clustered(rng: np.random.Generator, n: int, dim: int, clusters: int = 256) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Load:
    """Reader and writer threads; each call's (start, seconds) recorded."""

    def __init__(self, system: Rayrec, queries: np.ndarray, dim: int) -> None:
        self.system, self.queries, self.dim = system, queries, dim
        self.reads: list[tuple[float, float]] = []
        self.writes: list[tuple[float, float]] = []
        self.answers: dict[int, list[str]] = {}
        self.wrong = 0
        self.failed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._read, self._write)]

    def _read(self) -> None:
        step = 0
        while not self._stop.is_set():
            q = step % len(self.queries)
            t0 = time.monotonic()
            try:
                ids = list(self.system.search(self.queries[q], k=10).ids[0])
            except Exception:
                self.failed += 1
                continue
            finally:
                step += 1
            self.reads.append((t0, time.monotonic() - t0))
            if self.answers.setdefault(q, ids) != ids:
                self.wrong += 1

    def _write(self) -> None:
        step = 0
        rng = np.random.default_rng(1)
        while not self._stop.is_set():
            # All coordinates negative: against the (non-negative) queries it scores below every
            # catalog item, so written items never change a read's answer.
            away = -(1.0 + rng.random((1, self.dim))).astype(np.float32)
            t0 = time.monotonic()
            try:
                self.system.upsert([f"w{step}"], away, {"category": ["written"]})
            except Exception:
                self.failed += 1
            self.writes.append((t0, time.monotonic() - t0))
            step += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)


def p(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def window(calls: list[tuple[float, float]], start: float, end: float) -> list[float]:
    return [s for t, s in calls if t >= start and t + s <= end]


def main() -> dict[str, object]:
    rng = np.random.default_rng(0)
    # Catalog and queries in the non-negative orthant; the writer's items lie in the negative one.
    items = np.abs(clustered(rng, args.items, args.dim))
    queries = np.abs(clustered(rng, 64, args.dim))
    storage = None
    if args.storage_dir:
        shutil.rmtree(args.storage_dir, ignore_errors=True)
        storage = args.storage_dir
    config = RayrecConfig(
        index=IndexConfig(dim=args.dim, factory=args.index),
        num_shards=args.from_shards,
        shard_num_cpus=0.1,
        router_num_cpus=0.1,
        user_actor_num_cpus=0.1,
        storage=storage,
    )
    log(f"starting {args.from_shards} shards, loading {args.items} x {args.dim}")
    system = Rayrec.start(config, num_cpus=args.num_cpus)
    ids = [f"i{i}" for i in range(args.items)]
    step = 50_000
    for lo in range(0, args.items, step):
        system.upsert(ids[lo : lo + step], items[lo : lo + step])
    runs = []
    try:
        with Load(system, queries, args.dim) as load:
            for target in (args.to_shards, args.from_shards):
                base0 = time.monotonic()
                time.sleep(args.baseline_s)
                t0 = time.monotonic()
                log(f"re-sharding to {target}")
                out = system.reshard(target)
                t1 = time.monotonic()
                time.sleep(1.0)  # the writes held at the gate finish (and are recorded) just after the switch
                base = window(load.reads, base0, t0)
                during = window(load.reads, t0, t1)
                writes = [s for t, s in load.writes if t < t1 and t + s > t0]
                runs.append(
                    {
                        "from_shards": out["from_shards"],
                        "to_shards": out["to_shards"],
                        "items": out["items"],
                        "reshard_s": round(t1 - t0, 2),
                        "router_copy_and_switch_s": out["seconds"],
                        "read_p50_ms_before": p(base, 50),
                        "read_p50_ms_during": p(during, 50),
                        "read_p99_ms_during": p(during, 99),
                        "read_p50_ratio_during_vs_before": (
                            round(p(during, 50) / p(base, 50), 2) if base and during else None
                        ),
                        "reads_during": len(during),
                        "writes_during": len(writes),
                        "longest_write_wait_s": round(max(writes), 2) if writes else None,
                    }
                )
                log(json.dumps(runs[-1]))
        wrong, failed = load.wrong, load.failed
        final_count = system.count()
        written = len(load.writes)
    finally:
        system.shutdown()
        if args.storage_dir:
            shutil.rmtree(args.storage_dir, ignore_errors=True)
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "params": vars(args),
        "runs": runs,
        "reads_wrong": wrong,
        "calls_failed": failed,
        "items_at_end": final_count,
        "items_expected": args.items + written - failed,
    }


if __name__ == "__main__":
    out = main()
    print(json.dumps(out, indent=None if args.json else 2))
