"""Replica write benchmark: item writes (upserts) with replicas=2 against replicas=1, in one run.

    python bench/replica_writes.py --json

A shard with replicas takes its sequenced writes one at a time (each waits for
the one before, so no replica can apply them out of order; docs/durability.md).
This measures what that costs: two systems on one local Ray, the same config and
storage kind but for the replica count, each written through the router by
--callers concurrent callers of --batch-item upserts for --seconds, and one
caller at a time for --calls calls, in alternating rounds so the ratios hold on
a noisy machine. Both systems log to storage (replicas > 1 needs it to repair).
The machine's CPU time per upsert and its busy share of all cores during the
concurrent rounds tell whether the cores, or the one-at-a-time order, set the pace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--dim", type=int, default=128)
parser.add_argument("--items", type=int, default=5_000, help="catalog loaded before the writes")
parser.add_argument("--shards", type=int, default=2)
parser.add_argument("--batch", type=int, default=10, help="items per upsert")
parser.add_argument("--calls", type=int, default=200, help="upserts per serial round")
parser.add_argument("--callers", type=int, default=16, help="concurrent upserts for throughput")
parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput round")
parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
parser.add_argument("--json", action="store_true", help="print one JSON object only")
args = parser.parse_args()

import numpy as np  # noqa: E402

from rayrec import IndexConfig, RayrecConfig  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def busy_s() -> float:
    """The machine's CPU seconds spent so far, all cores (user, nice, system, irq, softirq of /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1000, q)), 3)


def main() -> dict[str, object]:
    import ray

    from rayrec import Rayrec

    root = tempfile.mkdtemp(prefix="rayrec-bench-replicas-")
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    rng = np.random.default_rng(0)
    ids = [f"i{i}" for i in range(args.items)]
    systems = {}
    for replicas in (1, 2):
        cfg = RayrecConfig(
            index=IndexConfig(dim=args.dim),
            namespace=f"bench-replicas-{replicas}",
            num_shards=args.shards,
            replicas=replicas,
            storage=os.path.join(root, f"r{replicas}"),
            shard_num_cpus=0.1, router_num_cpus=0.1, user_actor_num_cpus=0.1,
        )
        system = Rayrec.start(cfg)
        system.upsert(ids, unit(rng, args.items, args.dim))
        systems[replicas] = system
    pool = unit(rng, 1000, args.dim)
    counter = {"n": 0}

    def call(system: Rayrec) -> object:
        n = counter["n"] = counter["n"] + 1
        batch = [ids[(n * args.batch + j) % len(ids)] for j in range(args.batch)]
        rows = pool[[(n + j) % len(pool) for j in range(args.batch)]]
        return system.router.upsert.remote(batch, rows, None)

    def serial(system: Rayrec) -> list[float]:
        lat = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            assert ray.get(call(system)) == args.batch
            lat.append(time.perf_counter() - t0)
        return lat

    async def throughput(system: Rayrec) -> tuple[float, list[float], float, float]:
        """Upserts/s, their latencies, the machine's CPU-ms per upsert and its busy share of all cores."""
        stop = time.perf_counter() + args.seconds
        done, lat = 0, []
        cpu0 = busy_s()

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                assert await call(system) == args.batch
                lat.append(time.perf_counter() - t0)
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(args.callers)))
        wall = time.perf_counter() - t0
        busy = busy_s() - cpu0
        return done / wall, lat, 1000 * busy / max(done, 1), busy / (wall * (os.cpu_count() or 1))

    for system in systems.values():  # warm-up
        ray.get([call(system) for _ in range(50)])
    serial_lat: dict[int, list[float]] = {1: [], 2: []}
    ups: dict[int, list[float]] = {1: [], 2: []}
    conc_lat: dict[int, list[float]] = {1: [], 2: []}
    cpu_ms: dict[int, list[float]] = {1: [], 2: []}
    busy: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.rounds):
        for replicas in (1, 2) if r % 2 == 0 else (2, 1):
            log(f"round {r}: replicas={replicas}")
            serial_lat[replicas] += serial(systems[replicas])
            q, lat, ms, share = asyncio.run(throughput(systems[replicas]))
            ups[replicas].append(q)
            cpu_ms[replicas].append(ms)
            busy[replicas].append(share)
            conc_lat[replicas] += lat
    for replicas, system in systems.items():  # the replicas hold the same items after it all
        got = system.fetch(ids[:50])
        assert all(g is not None for g in got), f"replicas={replicas} lost items"
    out: dict[str, object] = {}
    for replicas in (1, 2):
        out[f"upsert_p50_ms_replicas{replicas}"] = pct(serial_lat[replicas], 50)
        out[f"upsert_p99_ms_replicas{replicas}"] = pct(serial_lat[replicas], 99)
        out[f"upserts_per_s_replicas{replicas}"] = round(float(np.median(ups[replicas])), 1)
        out[f"upsert_p50_ms_replicas{replicas}_concurrent"] = pct(conc_lat[replicas], 50)
        out[f"upsert_p99_ms_replicas{replicas}_concurrent"] = pct(conc_lat[replicas], 99)
        out[f"cpu_ms_per_upsert_replicas{replicas}"] = round(float(np.median(cpu_ms[replicas])), 2)
        out[f"cpu_busy_share_replicas{replicas}"] = round(float(np.median(busy[replicas])), 3)
    out["p50_ratio_2_1"] = round(out["upsert_p50_ms_replicas2"] / out["upsert_p50_ms_replicas1"], 3)  # type: ignore[operator]
    out["throughput_ratio_2_1"] = round(out["upserts_per_s_replicas2"] / out["upserts_per_s_replicas1"], 3)  # type: ignore[operator]
    for system in systems.values():
        system.shutdown()
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "args": vars(args),
        **main(),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
