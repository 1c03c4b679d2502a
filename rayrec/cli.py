"""The `rayrec` command: `rayrec serve` runs the whole service (the main job); `train` and `eval` learn and measure."""

from __future__ import annotations

import argparse
import os
import sys


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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from rayrec.serving import serve_command  # the service's run, its background job included

        return serve_command(args)
    if args.command == "eval":
        return eval_command(args)
    if args.command == "train":
        return train_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
