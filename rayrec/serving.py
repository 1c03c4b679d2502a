"""`rayrec serve`'s run: start (or join) Ray, deploy the app, serve until interrupted, and on a fresh
models root the background job that trains the sequential space and swaps to it live
(rayrec.learning.background). rayrec.cli parses the command line and calls serve_command."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rayrec.learning.background import BackgroundSwap

APP_NAME = "rayrec"


def serve_command(args: argparse.Namespace) -> int:
    """Starts Ray (or joins one), deploys the app, prints the URL and serves until interrupted."""
    if args.address is None:
        # Before Ray is imported: a local Ray listens on 127.0.0.1 only.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the encoder only ever reads local weights
    import ray
    import requests
    from ray import serve

    from rayrec import constants as C
    from rayrec.exceptions import InvalidInputError
    from rayrec.learning import store
    from rayrec.learning.background import QUIET_HOOK, plan_start, quick_train_polls
    from rayrec.serve_app.app import AppArgs, build_app
    from rayrec.serve_app.http_edge import LOOPBACK_HOSTS, api_key_digest
    from rayrec.system.driver import Rayrec

    try:
        digest = api_key_digest(args.api_key_env)  # before Ray starts: a misnamed or empty key variable stops here
    except InvalidInputError as exc:
        print(f"rayrec serve: {exc}", file=sys.stderr)
        return 2
    root = args.models_root or store.default_root()
    plan = plan_start(args.model, args.catalog, root)
    if args.exit_after_swap and not plan.train:
        print(f"rayrec serve: --exit-after-swap waits for the background training, but this start serves "
              f"{plan.reason}: give an empty --models-root (and the movielens-100k catalog), or --exit-after-start",
              file=sys.stderr)
        return 2
    # A background training's Ray Train run would log a warning a second without a dashboard: not in our output.
    env = {"worker_process_setup_hook": QUIET_HOOK} if plan.train and not args.exit_after_start else None
    if args.address is None:
        # "local": a new Ray of our own, never one that somebody's `ray start` left on this machine.
        quick_train_polls()
        ray.init(address="local", num_cpus=args.num_cpus or os.cpu_count(), namespace=args.namespace,
                 include_dashboard=False, runtime_env=env)
    else:
        ray.init(address=args.address, namespace=args.namespace, runtime_env=env)
    gpus = args.encoder_num_gpus
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    opts = AppArgs(
        model=plan.model,
        models_root=args.models_root,
        catalog=args.catalog,
        shards=args.shards,
        replicas=args.replicas,
        index=args.index,
        namespace=args.namespace,
        model_dir=args.model_dir,
        encoder_num_gpus=gpus,
        storage=os.path.abspath(args.storage) if args.storage and "://" not in args.storage else args.storage,
        api_key_env=args.api_key_env,
        api_key_sha256=digest,
        allowed_hosts=args.allowed_hosts or (LOOPBACK_HOSTS if args.host in ("127.0.0.1", "localhost", "::1")
                                             else ["*"]),
    )
    try:
        opts = opts.resolved()
    except InvalidInputError as exc:
        print(f"rayrec serve: {exc}", file=sys.stderr)
        return 2
    url = f"http://{args.host}:{args.port}"
    durable = f"state in {opts.storage}" if opts.storage else "state in memory only"
    keyed = "write routes need the API key" if opts.api_key_sha256 else "no API key"
    print(
        f"rayrec: deploying on Ray (catalog {args.catalog}, item space: {plan.reason}, "
        f"{args.shards} shards of {args.index}, {durable}, {keyed}) ...",
        flush=True,
    )
    t0 = time.perf_counter()
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(opts), name=APP_NAME, route_prefix="/")
    health = requests.get(f"{url}/healthz", timeout=30).json()
    print(
        f"rayrec: serving {health['items']} items and {health['users']} users "
        f"(model {health['model_version']}) at {url} "
        f"(ready in {time.perf_counter() - t0:.0f} s; API docs at {url}/docs)",
        flush=True,
    )
    print(f"rayrec: live demo page at {url}/ (open it in a browser: pick a user, press like, watch the list move)",
          flush=True)
    print(f"""try:  curl -s -X POST {url}/recommend -H 'content-type: application/json' """
          f"""-d '{{"user_id": "1", "k": 5}}'""", flush=True)
    job = None if args.exit_after_start or not plan.train else _background(args, url, str(root), digest is not None)
    try:
        return _serve_until(args, job)
    except KeyboardInterrupt:
        print("rayrec: stopping" + (" (and the background training)" if job and not job.ended else ""), flush=True)
        return 1 if args.exit_after_swap else 0
    finally:
        if job is not None:
            job.stop()
        serve.delete(APP_NAME)
        try:
            Rayrec.connect(namespace=args.namespace).shutdown()  # the app's detached actors
        except Exception:  # nothing left to stop
            pass
        if job is not None:
            job.wait(C.BACKGROUND_STOP_WAIT_S)  # its thread leaves Ray alone (a call after shutdown would start one)
            ray.shutdown()  # the training's Ray Train run belongs to this driver: it ends here too


def _background(args: argparse.Namespace, url: str, root: str, keyed: bool) -> BackgroundSwap:
    """Starts the background job of a fresh models root: the sequential space trained on MovieLens as a Ray
    Train job, then swapped in live through the service's own POST /model (rayrec.learning.background)."""
    import ray

    from rayrec import constants as C
    from rayrec.evaluation.data import load_movielens
    from rayrec.learning.background import ServiceClient, sequential_swap, train_cpus
    from rayrec.learning.sequential_job import SequentialJob

    threads = C.BACKGROUND_TRAIN_THREADS
    job = SequentialJob(root=root, cpus=train_cpus(float(ray.available_resources().get("CPU", 0)), threads),
                        threads=threads, model_dir=args.model_dir)
    key = os.environ.get(args.api_key_env or C.API_KEY_ENV, "").strip() if keyed else None
    print(f"rayrec: training the sequential model in the background (a Ray Train job: 1 worker, {job.cpus} CPU, "
          f"{threads} thread(s)); it is written to {root} and swapped in live", flush=True)
    background = sequential_swap(load_movielens(), job, ServiceClient(url, key),
                                 say=lambda line: print(line, flush=True))
    background.start()
    return background


def _serve_until(args: argparse.Namespace, job: BackgroundSwap | None) -> int:
    """Serves until interrupted, or (for CI) until the service answered or the background job ended."""
    from rayrec.learning.background import DONE

    if args.exit_after_start:
        return 0
    if args.exit_after_swap and job is not None:
        while not job.wait(1.0):
            pass
        return 0 if job.state == DONE else 1
    while True:
        time.sleep(3600)
