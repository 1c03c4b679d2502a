"""`rayrec train`: encode the catalog, learn the space (two-tower on Ray Train, or the SVD baseline),
write a version."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rayrec.evaluation.data import Dataset
from rayrec.exceptions import InvalidInputError
from rayrec.learning import store
from rayrec.learning.held_out import HeldOut
from rayrec.learning.model import TrainParams
from rayrec.learning.spaces import svd

if TYPE_CHECKING:
    from rayrec.learning.sequential import SequenceParams


def _log(message: str) -> None:
    print(f"rayrec train: {message}", file=sys.stderr, flush=True)


def _print_epoch(stats: dict[str, Any]) -> None:
    print(json.dumps(stats), file=sys.stderr, flush=True)


def run_training(
    dataset: Dataset, args: argparse.Namespace, *, log: Callable[[str], None] = _log,
    on_epoch: Callable[[dict[str, Any]], None] = _print_epoch, sequence: SequenceParams | None = None,
) -> dict[str, Any]:
    """Trains `args.model` on `dataset`, writes it under `args.out`; returns a summary (version, path, metrics).

    The last `args.validation_share` of the interactions (by time) are held out:
    after each epoch, and for the SVD baseline trained on the same part, the
    next-item HR@10 of the pooled user vector on them is reported.

    Args:
        args: `rayrec train`'s arguments (rayrec.cli.train_arguments parses them).
        log: takes each progress line (default: stderr).
        on_epoch: takes each epoch's metrics (default: a JSON line on stderr).
        sequence: the sequential model's shape and training (default: SequenceParams()).
    """
    t0 = time.perf_counter()
    params = TrainParams()
    if args.epochs is not None:
        params = replace(params, epochs=args.epochs)
    if args.dim is not None:
        params = replace(params, dim=args.dim)
    if getattr(args, "patience", None) is not None:
        params = replace(params, patience=args.patience)
    if not 0 <= args.validation_share < 1:
        raise InvalidInputError(f"--validation-share must be in [0, 1), got {args.validation_share}")
    if args.workers < 1:
        raise InvalidInputError(f"--workers must be >= 1, got {args.workers}")
    events, held = dataset.split(1 - args.validation_share) if args.validation_share > 0 else (dataset.events, [])
    ids = dataset.items["item_id"].to_pylist()
    index = {item: j for j, item in enumerate(ids)}

    from rayrec.encoder import TextEncoder

    log(f"encoding {len(ids)} item texts")
    encoder = TextEncoder(args.model_dir)
    text = encoder.encode(dataset.items["text"].to_pylist())
    validate = HeldOut(events, held, index, params.recency, params.context).hit_rate if held else None

    def check(vectors: Any) -> dict[str, Any] | None:
        return validate(vectors) if validate is not None else None  # type: ignore[misc]

    baseline = svd(events, index, text, params.dim)
    validation: dict[str, Any] = {"svd": check(baseline.vectors)}
    if args.model == "sequential":
        return _sequential(events, held, index, ids, text, validation, args, t0, log, on_epoch, sequence)
    if args.model == "svd":
        space = baseline
    else:
        import ray

        from rayrec.learning.background import quick_train_polls
        from rayrec.learning.job import train

        started = not ray.is_initialized()  # a driver (or test) may have connected already
        if started and args.address is None:
            # Workers' logs stay off: without a dashboard, Ray Train's placement-group cleaner logs a
            # failed state-API query every second. The epochs are printed from this process instead.
            quick_train_polls()  # each epoch's report would otherwise wait ~2 s for the controller's poll
            ray.init(address="local", num_cpus=args.num_cpus or os.cpu_count(), include_dashboard=False,
                     log_to_driver=False)
        elif started:
            ray.init(address=args.address, log_to_driver=False)
        try:
            log(f"training the two-tower model: {len(events)} interactions, {args.workers} Ray Train worker(s)")
            # Each worker claims its share of the free CPUs (at most 4: the model is small).
            cpus = min(4.0, max(0.1, float(ray.available_resources().get("CPU", 1)) / args.workers))
            space = train(events, index, text, params, args.workers, cpus, args.use_gpu, validate=validate,
                          on_epoch=on_epoch)
        finally:
            if started:
                ray.shutdown()
        validation["two-tower"] = check(space.vectors)
    info = {
        "params": params.as_dict() if args.model == "two-tower" else {"dim": params.dim},
        "encoder": os.path.basename(os.path.normpath(args.model_dir)) if args.model_dir else "all-MiniLM-L6-v2",
        "trained_on": {"interactions": len(events), "held_out": len(held), "items": len(ids),
                       "users": len({e.user for e in events})},
        "validation_hr@10": validation,
        "epochs": space.history,
    }
    path = store.save(args.out or store.default_root(), space.kind, ids, space.vectors, space.from_text,
                      space.text_weight, space.text_bias, info)
    manifest = store.manifest(path)
    log(f"done in {time.perf_counter() - t0:.0f} s; held-out HR@10: " +
         ", ".join(f"{k} {v['hr@10']:.3f}" for k, v in validation.items() if v))
    return {**manifest, "path": path}


def _sequential(
    events: list[Any], held: list[Any], index: dict[str, int], ids: list[str], text: Any,
    validation: dict[str, Any], args: argparse.Namespace, t0: float, log: Callable[[str], None],
    on_epoch: Callable[[dict[str, Any]], None], params: SequenceParams | None,
) -> dict[str, Any]:
    """`rayrec train --model sequential`: the sequential space (rayrec.learning.sequential_space), in this
    process, with its held-out HR@10 from the in-process replay of the held-out interactions."""
    import numpy as np

    from rayrec.evaluation.metrics import hit_rate
    from rayrec.evaluation.replay import run_in_order
    from rayrec.learning.sequential_space import Policy, train_space
    from rayrec.learning.spaces import ridge_map
    from rayrec.users import model_files

    log(f"training the sequential user model: {len(events)} interactions")
    space = train_space(events, index, text, params, log=log, on_epoch=on_epoch)
    vectors = space.vectors
    if held:
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # as the index holds them
        scored, _ = run_in_order(events, held, index, [Policy(space.user, unit, events)])
        validation["sequential"] = {"hr@10": hit_rate(scored["sequential"].ranks, 10),
                                    "events": int(len(scored["sequential"].ranks))}
    weight, bias = ridge_map(text[~space.from_text], vectors[~space.from_text])  # places new items
    info = {"params": space.info["params"], "sequential": {k: v for k, v in space.info.items() if k != "params"},
            "encoder": os.path.basename(os.path.normpath(args.model_dir)) if args.model_dir else "all-MiniLM-L6-v2",
            "trained_on": {"interactions": len(events), "held_out": len(held), "items": len(ids),
                           "users": len({e.user for e in events})},
            "validation_hr@10": validation}
    path = store.save(args.out or store.default_root(), "sequential", ids, vectors, space.from_text, weight, bias,
                      info, write_more=lambda folder: model_files.save(space.user, folder / store.USER_MODEL))
    log(f"done in {time.perf_counter() - t0:.0f} s; held-out HR@10: " +
         ", ".join(f"{k} {v['hr@10']:.3f}" for k, v in validation.items() if v))
    return {**store.manifest(path), "path": path}
