"""The replay of `rayrec eval` through the real system: in rounds (batched calls) against one call per event.

    python bench/replay.py --json                      # MovieLens 100K, the whole replay both ways
    python bench/replay.py --interactions /tmp/rayrec-log-1m/interactions.parquet \
        --items /tmp/rayrec-log-1m/items.parquet --baseline-events 20000 --json

Both run the `realtime` policy (rayrec's rule) in the SVD space of the history, as users of their own in
one local Ray system: `rounds` is run_in_rounds with SystemPolicy (one recommend_many and one
feedback_many per user actor and round, what `rayrec eval` does), `per-event` the same protocol with one
actor call per recommendation and per feedback event, 32 users at a time (what it did before). The
baseline replays only the first --baseline-events events (0: all) so a large log stays affordable; both
report events per second on what they replayed, and the scored ranks they share must be equal.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--interactions", default=None, help="interactions file (default: MovieLens 100K)")
parser.add_argument("--items", default=None, help="items file (with --interactions)")
parser.add_argument("--baseline-events", type=int, default=0, help="replayed events for the per-event baseline")
parser.add_argument("--num-cpus", type=int, default=2)
parser.add_argument("--json", action="store_true")
args = parser.parse_args()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "token")

import numpy as np  # noqa: E402

from rayrec import IndexConfig, Rayrec, RayrecConfig  # noqa: E402
from rayrec.encoder import TextEncoder  # noqa: E402
from rayrec.evaluation.data import Event, load_files, load_movielens  # noqa: E402
from rayrec.evaluation.replay import K, run_in_order, run_in_rounds  # noqa: E402
from rayrec.evaluation.run import SystemPolicy  # noqa: E402
from rayrec.evaluation.spaces import svd_space  # noqa: E402

IN_FLIGHT = 32  # users at a time in the baseline, as the replay ran before


class PerEvent(SystemPolicy):
    """The baseline: the same policy, one actor call per recommendation and per feedback event."""

    async def recommend_many(self, requests: list[tuple[str, int, set[int]]]) -> list[list[int] | None]:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(request: tuple[str, int, set[int]]) -> list[int] | None:
            async with gate:
                return (await SystemPolicy.recommend_many(self, [request]))[0]

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def observe_many(self, events: list[Event]) -> None:
        gate = asyncio.Semaphore(IN_FLIGHT)
        by_user: dict[str, list[Event]] = {}
        for e in events:
            by_user.setdefault(e.user, []).append(e)

        async def one_user(mine: list[Event]) -> None:
            async with gate:
                for e in mine:  # in order: one call after the other
                    await SystemPolicy.observe_many(self, [e])

        await asyncio.gather(*(one_user(m) for m in by_user.values()))


def main() -> dict[str, object]:
    t0 = time.perf_counter()
    data = load_files(args.interactions, args.items) if args.interactions else load_movielens()
    history, replay = data.split(0.8)
    ids = data.items["item_id"].to_pylist()
    index = {item: j for j, item in enumerate(ids)}
    text = TextEncoder().encode(data.items["text"].to_pylist())
    vectors, _, _ = svd_space(history, index, text)
    _, cold = run_in_order(history, replay, index, [])
    prepared = time.perf_counter() - t0
    config = RayrecConfig(index=IndexConfig(dim=vectors.shape[1], factory="Flat", max_k=K), num_shards=2,
                          shard_num_cpus=0.1, router_num_cpus=0.1, user_actor_num_cpus=0.1, namespace="rayrec-bench")
    liked: dict[str, list[str]] = {}
    for e in history:
        if e.positive:
            liked.setdefault(e.user, []).append(e.item)
    short = replay[: args.baseline_events] if args.baseline_events else replay
    out: dict[str, object] = {"events": {"history": len(history), "replayed": len(replay),
                                         "baseline_replayed": len(short)},
                              "items": len(ids), "users": len({e.user for e in data.events}),
                              "prepare_s": round(prepared, 1)}
    with Rayrec.start(config, num_cpus=args.num_cpus) as system:
        system.upsert(ids, vectors, {"category": data.items["category"].to_pylist()})
        ranks = {}
        for name, kind, events in (("rounds", SystemPolicy, replay), ("per-event", PerEvent, short)):
            system.set_histories({f"{name}:{u}": items for u, items in liked.items()})
            policy = kind(system, name, index, set(liked), True)
            t = time.perf_counter()
            scored = asyncio.run(run_in_rounds(history, events, index, policy, cold))
            seconds = time.perf_counter() - t
            ranks[name] = scored.ranks
            out[name] = {"seconds": round(seconds, 1), "events_per_s": round(len(events) / seconds, 1),
                         "actor_calls": policy.calls, "scored": len(scored.ranks),
                         "hr@10": round(float(((scored.ranks > 0) & (scored.ranks <= 10)).mean()), 4)}
            print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)
    shared = len(ranks["per-event"])
    out["same_ranks"] = bool(np.array_equal(ranks["rounds"][:shared], ranks["per-event"]))
    out["speedup"] = round(out["rounds"]["events_per_s"] / out["per-event"]["events_per_s"], 2)  # type: ignore[index]
    return out


if __name__ == "__main__":
    result = main()
    print(json.dumps(result, indent=None if args.json else 2))
