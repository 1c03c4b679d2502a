"""What the sequential user model costs a user actor per feedback event, in process (no Ray, one thread).

    python bench/user_model.py --json
    python bench/user_model.py --items 3700 --users 256 --history 130 --json    # the 1M log's shape

A SequentialUser of the default shape (a 2-block transformer of dim 64 over the last 50 events, EASE
factors and tower vectors of 64 dims each, history_len 200) with random weights over --items items, and a
UserStore holding --users users of --history past events each. Three ways a user actor plans and applies
events, each timed on fresh events (the same work feedback_many does between its awaits):

- `one_at_a_time`: one event a call, the model's pass for that user alone (feedback);
- `batched`: one event for each of the users in one call, every user's window in one pass
  (feedback_many, as a round of `rayrec eval`'s replay sends them);
- `bulk_import`: --history events for each user in one call with last_only (feedback_many(last_only=True):
  every event kept, the vector computed once, at each user's last).

Prints one JSON object: ms per event for each, and the batched and bulk ones as ratios of
one_at_a_time measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rayrec.config import FeedbackRule  # noqa: E402
from rayrec.learning.sequential import SequenceParams, SequentialModel  # noqa: E402
from rayrec.users.feedback_batch import UserEvents, group_by_user  # noqa: E402
from rayrec.users.sequence_model import SequenceModel  # noqa: E402
from rayrec.users.sequential_user import SequentialUser, spread  # noqa: E402
from rayrec.users.user_state import UserStore  # noqa: E402

KINDS = ("like", "click", "skip", "purchase", "like")


def model(n_items: int, seed: int) -> SequentialUser:
    params = SequenceParams()
    torch.manual_seed(seed)
    net = SequentialModel(n_items, params).eval()
    sequence = SequenceModel({k: v.detach().numpy() for k, v in net.state_dict().items()}, params.blocks)
    rng = np.random.default_rng(seed)
    context, target, tower = (rng.standard_normal((n_items, 64)).astype(np.float32) for _ in range(3))
    return SequentialUser(sequence, {f"i{j}": j for j in range(n_items)}, context, 0.7, 0.6,
                          spread(sequence.item_vectors), spread(target), 1.0, tower, spread(tower), 0.3)


def apply(store: UserStore, events: list[tuple[str, str, str, str]], last_only: bool = False) -> float:
    """Seconds to plan and commit events as feedback_many does (no log: a store without storage)."""
    start = time.perf_counter()
    by_user, errors = group_by_user(events)
    assert not errors
    for user_id, plan in UserEvents.many(store, by_user, last_only).items():
        for (_, item, event, event_id), new, vector in plan:
            assert new and vector is not None
            store.commit(store.plan_feedback(user_id, item, event, None, event_id, model_vector=vector))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=3700)
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--history", type=int, default=130, help="past events per user")
    parser.add_argument("--rounds", type=int, default=5, help="timed events per user, one a round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    user = model(args.items, args.seed)
    serial = iter(range(10**9))

    def events(users: range, per: int) -> list[tuple[str, str, str, str]]:
        return [(f"u{u}", f"i{rng.integers(args.items)}", KINDS[n % len(KINDS)], f"e{next(serial)}")
                for u in users for n in range(per)]

    store = UserStore(user.dim, FeedbackRule(), model=user)
    bulk = apply(store, events(range(args.users), args.history), last_only=True)
    bulk_events = args.users * args.history
    one = batched = 0.0
    for _ in range(args.rounds):
        batched += apply(store, events(range(args.users), 1))
        for u in range(args.users):
            one += apply(store, events(range(u, u + 1), 1))
    timed = args.users * args.rounds
    out = {
        "items": args.items, "users": args.users, "history": args.history, "dim": user.dim,
        "one_at_a_time_ms_per_event": round(1e3 * one / timed, 4),
        "batched_ms_per_event": round(1e3 * batched / timed, 4),
        "bulk_import_ms_per_event": round(1e3 * bulk / bulk_events, 4),
        "batched_speedup": round(one / batched, 2),
        "bulk_import_speedup": round((one / timed) / (bulk / bulk_events), 1),
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
