"""A model swap under traffic on MovieLens: how long it takes, how long user calls wait, latency around it.

    rayrec train && rayrec train          # two versions of the same dimension
    python bench/swap.py --json           # serves the older, swaps to the newer under load, and back

Serves the MovieLens catalog (its 942 users with a rating of 4 or 5 set from their histories) in the `--from` version,
then runs `--clients` threads sending /recommend (and every 4th call a /feedback) on 127.0.0.1
while it swaps to `--to` (POST /model) and back. Reports the swaps' summaries, the requests that
failed (should be 0), and /recommend latency before any swap (baseline, same run) against the
worst seen during the swaps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--from", dest="old", default=None, help="version served first (default: the one before latest)")
parser.add_argument("--to", dest="new", default="latest", help="version swapped to")
parser.add_argument("--models-root", default=None)
parser.add_argument("--clients", type=int, default=4)
parser.add_argument("--baseline-s", type=float, default=8.0, help="seconds of load before the first swap")
parser.add_argument("--port", type=int, default=8766)
parser.add_argument("--json", action="store_true")
args = parser.parse_args()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402
import requests  # noqa: E402
from ray import serve  # noqa: E402
from rayrec.serve_app.app import build_app  # noqa: E402

from rayrec import Rayrec  # noqa: E402
from rayrec.learning import store  # noqa: E402

NAMESPACE = "swap-bench"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> dict:
    root = args.models_root or str(store.default_root())
    found = store.versions(root)
    if len(found) < 2 and args.old is None:
        raise SystemExit(f"need two model versions under {root} (run `rayrec train` twice)")
    old = args.old or f"v{found[-2]}"
    new = store.resolve(args.new, root).name
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    base = f"http://127.0.0.1:{args.port}"
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    log(f"deploying MovieLens in {old}")
    serve.run(
        build_app({"model": old, "models_root": root, "namespace": NAMESPACE}), name="rayrec-swap", route_prefix="/"
    )
    records: list[tuple[float, float, int, str | None]] = []  # (start, seconds, status, model_version)
    stop = threading.Event()

    def client(c: int) -> None:
        s = requests.Session()
        n = 0
        while not stop.is_set():
            user = str(1 + (c * 211 + n) % 943)
            t = time.perf_counter()
            if n % 4 == 3:
                r = s.post(
                    base + "/feedback",
                    json={"user_id": user, "item_id": str(1 + n % 1682), "event": "like"},
                    timeout=120,
                )
                version = None
            else:
                r = s.post(base + "/recommend", json={"user_id": user, "k": 10}, timeout=120)
                version = r.json().get("model_version") if r.status_code == 200 else None
            records.append((t, time.perf_counter() - t, r.status_code, version))
            n += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    system = Rayrec.connect(namespace=NAMESPACE)
    try:
        for t in threads:
            t.start()
        time.sleep(args.baseline_s)
        swaps = []
        window = []
        for target in (new, old):
            log(f"swapping to {target}")
            t0 = time.perf_counter()
            r = requests.post(base + "/model", json={"model": target}, timeout=600)
            window.append((t0, time.perf_counter()))
            assert r.status_code == 200, r.text
            swaps.append(r.json())
            time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
        recs = [(t, s, v) for t, s, code, v in records if v is not None]
        before = np.array([s for t, s, _ in recs if t < window[0][0]]) * 1000
        during = np.array([s for t, s, _ in recs if any(a <= t <= b for a, b in window)]) * 1000
        out = {
            "model_from": old,
            "model_to": new,
            "items": swaps[0]["items"],
            "users": swaps[0]["users"],
            "swaps": swaps,
            "requests": len(records),
            "failed": sum(code != 200 for _, _, code, _ in records),
            "recommend_p50_ms_before": round(float(np.percentile(before, 50)), 2),
            "recommend_p99_ms_before": round(float(np.percentile(before, 99)), 2),
            "recommend_max_ms_during_swaps": round(float(during.max()), 2) if len(during) else None,
            "recommends_during_swaps": int(len(during)),
            "versions_seen": sorted({v for _, _, v in recs}),
            "clients": args.clients,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }
        return out
    finally:
        stop.set()
        serve.delete("rayrec-swap")
        system.shutdown()
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    result = main()
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
