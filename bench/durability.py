"""Durability benchmark: feedback with the write-ahead log on vs off, and recovery times.

    python bench/durability.py --json
    python bench/durability.py --shard-items 1000000 --users 100000 --json

1. Feedback: two systems on one local Ray, the same config but one with storage.
   Acknowledgement latency one call at a time (p50/p99) and throughput with
   --callers concurrent calls, both measured in alternating rounds, so the
   on/off ratios hold on a noisy machine.
2. Recovery (no Ray: the constructors Ray runs on a restart): a shard of
   --shard-items items (clustered vectors) and a user-vector actor of --users
   users, each from a snapshot plus a log tail of --log-tail changes.
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
parser.add_argument("--dim", type=int, default=384)
parser.add_argument("--items", type=int, default=10_000, help="catalog of the feedback systems")
parser.add_argument("--calls", type=int, default=500, help="feedback calls per serial round")
parser.add_argument("--callers", type=int, default=32, help="concurrent feedback calls for throughput")
parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput round")
parser.add_argument("--rounds", type=int, default=2, help="alternating on/off rounds")
parser.add_argument("--shard-items", type=int, default=1_000_000)
parser.add_argument("--shard-index", default="Flat", help="faiss factory of the recovered shard")
parser.add_argument("--users", type=int, default=100_000)
parser.add_argument("--log-tail", type=int, default=10_000, help="log rows after the snapshot to replay")
parser.add_argument("--skip-feedback", action="store_true")
parser.add_argument("--skip-recovery", action="store_true")
parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
parser.add_argument("--dir", default=None, help="where storage goes (default: a temp dir, removed after)")
parser.add_argument("--json", action="store_true", help="print one JSON object only")
args = parser.parse_args()

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on loopback

import numpy as np  # noqa: E402

from rayrec import IndexConfig, RayrecConfig  # noqa: E402
from rayrec import constants as C  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1000, q)), 3)


# ----- 1. feedback on vs off -------------------------------------------------
def feedback_bench(root: str) -> dict[str, object]:
    import ray

    from rayrec import Rayrec

    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    rng = np.random.default_rng(0)
    vecs = unit(rng, args.items, args.dim)
    ids = [f"i{i}" for i in range(args.items)]
    systems = {}
    for mode in ("off", "on"):
        cfg = RayrecConfig(
            index=IndexConfig(dim=args.dim),
            namespace=f"bench-durability-{mode}",
            storage=os.path.join(root, "feedback") if mode == "on" else None,
            shard_num_cpus=0.1, router_num_cpus=0.1, user_actor_num_cpus=0.1,
        )
        system = Rayrec.start(cfg)
        system.upsert(ids, vecs)
        systems[mode] = system
    users = [f"u{i}" for i in range(1000)]
    counter = {"n": 0}

    def call(system: Rayrec) -> object:
        n = counter["n"] = counter["n"] + 1
        return system.users[0].feedback.remote(users[n % len(users)], ids[n % len(ids)], "click", f"e{n}")

    def serial(system: Rayrec) -> list[float]:
        lat = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            ray.get(call(system))
            lat.append(time.perf_counter() - t0)
        return lat

    async def throughput(system: Rayrec) -> tuple[float, list[float]]:
        stop = time.perf_counter() + args.seconds
        done, lat = 0, []

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                await call(system)
                lat.append(time.perf_counter() - t0)
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(args.callers)))
        return done / (time.perf_counter() - t0), lat

    for mode in ("off", "on"):  # warm-up: users exist, code paths are hot
        ray.get([call(systems[mode]) for _ in range(len(users))])
    serial_lat: dict[str, list[float]] = {"off": [], "on": []}
    qps: dict[str, list[float]] = {"off": [], "on": []}
    conc_lat: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(args.rounds):
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            log(f"round {r}: durability {mode}")
            serial_lat[mode] += serial(systems[mode])
            q, lat = asyncio.run(throughput(systems[mode]))
            qps[mode].append(q)
            conc_lat[mode] += lat
    out: dict[str, object] = {}
    for mode in ("off", "on"):
        out[f"feedback_ack_p50_ms_{mode}"] = pct(serial_lat[mode], 50)
        out[f"feedback_ack_p99_ms_{mode}"] = pct(serial_lat[mode], 99)
        out[f"feedback_qps_{mode}"] = round(float(np.median(qps[mode])), 1)
        out[f"feedback_ack_p50_ms_{mode}_concurrent"] = pct(conc_lat[mode], 50)
        out[f"feedback_ack_p99_ms_{mode}_concurrent"] = pct(conc_lat[mode], 99)
    out["ack_p50_ratio_on_off"] = round(out["feedback_ack_p50_ms_on"] / out["feedback_ack_p50_ms_off"], 3)  # type: ignore[operator]
    out["qps_ratio_on_off"] = round(out["feedback_qps_on"] / out["feedback_qps_off"], 3)  # type: ignore[operator]
    for system in systems.values():
        system.shutdown()
    ray.shutdown()
    return out


# ----- 2. recovery ----------------------------------------------------------------
def shard_recovery(root: str) -> dict[str, object]:
    import pyarrow as pa
    from rayrec.actors.shard import Shard

    dim, n = args.dim, args.shard_items
    cfg = RayrecConfig(
        index=IndexConfig(dim=dim, factory=args.shard_index),
        storage=os.path.join(root, "shard"),
        snapshot_every=10 * max(args.log_tail, 1),
    )
    rng = np.random.default_rng(1)
    centres = unit(rng, max(1, n // 500), dim)
    shard = Shard(cfg, 0)
    log(f"shard: staging {n} x {dim} items ({args.shard_index})")
    step = 200_000
    for start in range(0, n, step):
        m = min(step, n - start)
        x = (
            centres[rng.integers(0, len(centres), m)]
            + 0.3 * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        )
        table = pa.table({
            "item_id": [f"i{i}" for i in range(start, start + m)],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float32).reshape(-1)), dim),
        })
        shard.stage(table, 0, 1)
    t0 = time.perf_counter()
    shard.commit_staged()  # indexes, then snapshots
    build_and_snapshot_s = time.perf_counter() - t0
    log(f"shard: log tail of {args.log_tail} upserts")
    for start in range(0, args.log_tail, 100):
        m = min(100, args.log_tail - start)
        shard.upsert([f"t{i}" for i in range(start, start + m)], unit(rng, m, dim))
    query = unit(rng, 1, dim)
    want = shard.search(query, 10)[1]
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cfg.storage) for f in fs)  # type: ignore[arg-type]
    del shard
    log("shard: recovering")
    t0 = time.perf_counter()
    again = Shard(cfg, 0)
    recovery_s = time.perf_counter() - t0
    assert (again.search(query, 10)[1] == want).all(), "the recovered shard answers differently"
    assert again.count() == n + args.log_tail
    return {
        "shard_items": n + args.log_tail,
        "shard_index": args.shard_index,
        "shard_build_and_snapshot_s": round(build_and_snapshot_s, 2),
        "shard_storage_mb": round(size / 2**20, 1),
        "shard_recovery_s": round(recovery_s, 2),
        "shard_replayed_rows": again.recovered_rows,
    }


def user_recovery(root: str) -> dict[str, object]:
    from rayrec.actors.user_vectors import UserVectors

    from rayrec.durability import user_log
    from rayrec.durability.journal import Journal
    from rayrec.durability.storage import Storage
    from rayrec.users.user_state import UserStore

    dim, n = args.dim, args.users
    cfg = RayrecConfig(index=IndexConfig(dim=dim), storage=os.path.join(root, "users"))
    rng = np.random.default_rng(2)
    items = unit(rng, 1000, dim)
    # What a user actor writes, written the way it writes it: changes to the log, a snapshot, more changes.
    journal = Journal(Storage(cfg.storage).child("users-0"), user_log.log_schema(dim), cfg.snapshot_every)  # type: ignore[arg-type]
    journal.recover()
    store = UserStore(dim, cfg.feedback)
    log(f"users: {n} users, 5 events each, then a snapshot")
    batch = []
    for u in range(n):
        user = f"u{u}"
        batch.append(store.plan_vector(user, unit(rng, 1, dim)))
        store.commit(batch[-1])
        for e in range(5):
            j = int(rng.integers(len(items)))
            batch.append(store.plan_feedback(user, f"m{j}", "click", items[j], f"{user}-{e}"))
            store.commit(batch[-1])
        if len(batch) >= 6000:
            journal.append(user_log.changes_to_batch(batch, dim))
            batch = []
    if batch:
        journal.append(user_log.changes_to_batch(batch, dim))
    t0 = time.perf_counter()
    wal_from = journal.begin_snapshot()
    journal.write_snapshot(wal_from, {"users": n}, {"users": user_log.store_to_table(store)})
    snapshot_s = time.perf_counter() - t0
    tail = []
    for e in range(args.log_tail):
        user, j = f"u{int(rng.integers(n))}", int(rng.integers(len(items)))
        tail.append(store.plan_feedback(user, f"m{j}", "like", items[j], f"tail-{e}"))
        store.commit(tail[-1])
    for start in range(0, len(tail), 1000):
        journal.append(user_log.changes_to_batch(tail[start : start + 1000], dim))
    journal.close()
    log("users: recovering")
    t0 = time.perf_counter()
    again = UserVectors(cfg, router=None, partition=0)
    recovery_s = time.perf_counter() - t0
    assert len(again.store) == n and again.durable.recovered_changes == args.log_tail
    probe = f"u{n // 2}"
    assert again.store.get(probe).version == store.get(probe).version  # type: ignore[union-attr]
    return {
        "users": n,
        "user_snapshot_s": round(snapshot_s, 2),
        "user_recovery_s": round(recovery_s, 2),
        "user_replayed_changes": again.durable.recovered_changes,
    }


def main() -> None:
    root = args.dir or tempfile.mkdtemp(prefix="rayrec-bench-")
    out: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "dim": args.dim,
        "wal_sync": (
            "fdatasync per write, in the caller's turn" if C.WAL_INLINE_WRITES else "fdatasync per group commit"
        ),
    }
    try:
        if not args.skip_feedback:
            out.update(feedback_bench(root))
        if not args.skip_recovery:
            out.update(user_recovery(root))
            out.update(shard_recovery(root))
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    out["targets"] = {
        "durable_ack_p50_ms_max": 5.0,
        "shard_recovery_s_max": 30.0,
        "met": {
            "ack_p50": out.get("feedback_ack_p50_ms_on", 1e9) <= 5.0,  # type: ignore[operator]
            "shard_recovery": out.get("shard_recovery_s", 1e9) <= 30.0,  # type: ignore[operator]
        },
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
