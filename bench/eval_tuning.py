"""Tuning the feedback rule for `rayrec eval` on the history part only, never on the replayed part.

    python bench/eval_tuning.py --json
    python bench/eval_tuning.py --like 0.25 --train '[{}, {"epochs": 40}, {"text_loss": 0.0}]' --json

The history (first 80% of MovieLens 100K by time) is split again: its first 90%
as history, its last 10% (8% of all events) replayed as validation. Each
candidate (feedback rule x two-tower TrainParams overrides) runs the whole
protocol there, training on that history only; the one with the best realtime
HR@10 is what `rayrec eval` would use. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--like", default="0.1,0.25,0.5", help="like learning rates to try")
parser.add_argument("--resamples", type=int, default=200)
parser.add_argument("--model", default="two-tower", choices=["two-tower", "svd", "text"],
                    help="item space (as rayrec eval --model)")
parser.add_argument("--train", default="{}", help="JSON list of TrainParams overrides to try (two-tower), e.g. "
                    "'[{\"epochs\": 10}, {\"epochs\": 20}]'")
parser.add_argument("--json", action="store_true")
args = parser.parse_args()

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rayrec import constants as C  # noqa: E402
from rayrec.config import FeedbackRule  # noqa: E402
from rayrec.evaluation.data import Dataset, load_movielens  # noqa: E402
from rayrec.evaluation.run import evaluate  # noqa: E402
from rayrec.learning.model import TrainParams  # noqa: E402


def main() -> dict[str, object]:
    full = load_movielens()
    history, _ = full.split(0.8)  # the replayed part is never read
    tuning = Dataset(history, full.items)
    runs = []
    grid = json.loads(args.train)
    for overrides in grid if isinstance(grid, list) else [grid]:
        for like in (float(x) for x in args.like.split(",")):
            rates = dict(C.DEFAULT_LEARNING_RATES, like=like, click=like * 0.4, dislike=-like)
            out = evaluate(tuning, 0.9, feedback=FeedbackRule(learning_rates=rates), resamples=args.resamples,
                           progress=False, space=args.model, train_params=TrainParams(**overrides))
            m = out["metrics"]
            runs.append({"learning_rates": rates, "train": overrides,
                         **{p: m[p]["hr@10"] for p in ("popularity", "itemknn", "ease", "static", "realtime")},
                         "cold_items": out["cold"]["items_without_history"]})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    best = max(runs, key=lambda r: r["realtime"]["value"])
    return {"validation": "last 10% of the history (events 72%-80% by time)", "model": args.model, "runs": runs,
            "best": {"learning_rates": best["learning_rates"], "train": best["train"]}}


if __name__ == "__main__":
    print(json.dumps(main(), indent=None if args.json else 2))
