"""The `rayrec` command: `rayrec serve` runs the whole service (the main job); `train` and `eval` learn and measure."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rayrec.learning.background import BackgroundSwap

APP_NAME = "rayrec"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayrec", description="Real-time recommendations on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the HTTP service (default catalog: MovieLens 100K)")
    serve.add_argument("--catalog", default="movielens-100k", help="movielens-100k, none, or a Parquet path")
    serve.add_argument("--shards", type=int, default=2, help="item shards")
    serve.add_argument("--index", default="HNSW32", help="faiss index factory string of each shard")
    serve.add_argument("--replicas", type=int, default=1, help="actors per shard holding the same items")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP host to listen on")
    serve.add_argument("--port", type=int, default=8000, help="HTTP port")
    serve.add_argument("--address", default=None, help="a running Ray cluster to join (default: start a local one)")
    serve.add_argument("--namespace", default="rayrec", help="Ray namespace of rayrec's actors")
    serve.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    serve.add_argument("--model", default=None,
                       help="the item space: text (the encoder's own), or a trained one (`rayrec train`): latest, "
                            "a version (v3) or a model folder (default: the latest under --models-root; if there is "
                            "none, text while the sequential model trains in the background, then that model, "
                            "swapped in live)")
    serve.add_argument("--models-root", default=None, help="where --model latest / v3 are looked up "
                       "(default: $RAYREC_CACHE_DIR/models, where `rayrec train` writes)")
    serve.add_argument("--model-dir", default=None, help="a local Hugging Face model directory (the text encoder)")
    serve.add_argument("--encoder-num-gpus", type=float, default=None, help="GPUs per encoder (default: 1 if any)")
    serve.add_argument(
        "--storage", default=None, help="directory or URI (s3://, gs://) for durable state; restarts recover from it"
    )
    serve.add_argument(
        "--api-key-env", default=None,
        help="env var holding the API key write routes require; it must then be set and not empty "
             "(default: RAYREC_API_KEY, if set)",
    )
    serve.add_argument(
        "--allowed-host", action="append", default=None, dest="allowed_hosts",
        help="a Host header name to answer, repeatable ('*': any; default: the loopback names when --host is "
             "a loopback address, else any)",
    )
    exits = serve.add_mutually_exclusive_group()
    exits.add_argument("--exit-after-start", action="store_true", help="stop once the service answered (for CI)")
    exits.add_argument("--exit-after-swap", action="store_true",
                       help="stop once the background training's model serves (for CI; exit status 1 if the "
                            "training or the swap failed)")
    ev = sub.add_parser("eval", help="replay real interactions in time order: realtime vs static vs baselines")
    _data_args(ev)
    ev.add_argument("--history-share", type=float, default=0.8, help="first share of events (by time) used as history")
    ev.add_argument("--model", default="two-tower", choices=["two-tower", "svd", "text"],
                    help="item space: two-tower or svd (learned from the history only), or text (encoder embeddings)")
    ev.add_argument("--model-dir", default=None, help="a local Hugging Face model directory for item text")
    ev.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    ev.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    ev.add_argument("--json", action="store_true", help="print one JSON object (else a table)")
    ev.add_argument("--plot", default=None, help="write a PNG of HR@10 over replay time here")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr = sub.add_parser("train", help="learn the item space from interactions (two-tower on Ray Train; svd baseline)")
    _data_args(tr)
    tr.add_argument("--model", default="two-tower", choices=["two-tower", "svd", "sequential"],
                    help="what to train and write (sequential: item vectors and the model that computes users "
                    "from their recent events, trained in this process)")
    tr.add_argument("--out", default=None, help="models folder (default: $RAYREC_CACHE_DIR/models, where serve looks)")
    tr.add_argument("--validation-share", type=float, default=0.1,
                    help="last share of interactions held out for the per-epoch metrics (0: train on all)")
    tr.add_argument("--epochs", type=int, default=None, help="passes over the data (default: TrainParams')")
    tr.add_argument("--dim", type=int, default=None, help="dimension of the learned space (default: 64)")
    tr.add_argument("--patience", type=int, default=None,
                    help="stop after this many epochs without a better held-out HR@10, keeping the best "
                    "(default: TrainParams', 3; 0 trains every epoch)")
    tr.add_argument("--workers", type=int, default=1, help="Ray Train workers")
    tr.add_argument("--use-gpu", action="store_true", help="one GPU per Ray Train worker")
    tr.add_argument("--model-dir", default=None, help="a local Hugging Face model directory for item text")
    tr.add_argument("--address", default=None, help="a running Ray cluster to train on (default: start a local one)")
    tr.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    tr.add_argument("--json", action="store_true", help="print one JSON object at the end")
    return parser


def train_arguments(argv: list[str]) -> argparse.Namespace:
    """`rayrec train`'s arguments as the command line gives them for argv (its defaults for the rest)."""
    return _parser().parse_args(["train", *argv])


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="movielens-100k",
                        help="movielens-100k (used unless --interactions is given)")
    parser.add_argument("--interactions", default=None, help="Parquet/CSV with user_id, item_id, timestamp[, rating]")
    parser.add_argument("--items", default=None,
                        help="Parquet/CSV with item_id and text (or title/genre columns)[, category]")


def _dataset(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The interactions and items the arguments name (InvalidInputError if they do not)."""
    from rayrec.evaluation import data
    from rayrec.exceptions import InvalidInputError

    if (args.interactions is None) != (args.items is None):
        raise InvalidInputError("--interactions and --items go together (or neither, for --dataset)")
    if args.interactions is not None:
        return data.load_files(args.interactions, args.items)
    if args.dataset == "movielens-100k":
        return data.load_movielens()
    raise InvalidInputError(f"unknown --dataset {args.dataset!r}: movielens-100k, or give --interactions and --items")


def train_command(args: argparse.Namespace) -> int:
    """Trains the item space on the interactions and writes a new model version."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import json

    from rayrec.exceptions import InvalidInputError
    from rayrec.learning.command import run_training

    try:
        summary = run_training(_dataset(args), args)
    except InvalidInputError as exc:
        print(f"rayrec train: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    print(f"rayrec: model {summary['version']} ({summary['kind']}, {summary['dim']}-d) written to {summary['path']}; "
          "serve it with `rayrec serve --model latest`", file=sys.stderr if args.json else sys.stdout)
    return 0


def eval_command(args: argparse.Namespace) -> int:
    """Loads the data, replays it against every policy, prints the metrics."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray on 127.0.0.1 only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import json

    from rayrec.evaluation import report
    from rayrec.evaluation.run import evaluate
    from rayrec.exceptions import InvalidInputError

    try:
        result = evaluate(_dataset(args), args.history_share, args.model_dir, args.num_cpus,
                          resamples=args.resamples, progress=not args.no_progress, space=args.model)
    except InvalidInputError as exc:
        print(f"rayrec eval: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        report.plot(result, args.plot)
        result["plot"] = args.plot
    print(json.dumps(result) if args.json else report.table(result))
    return 0


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
    from rayrec.learning.background import QUIET_HOOK, plan_start
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve_command(args)
    if args.command == "eval":
        return eval_command(args)
    if args.command == "train":
        return train_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
