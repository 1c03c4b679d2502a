"""A synthetic interaction log with planted structure, written as files `rayrec train` / `rayrec eval` read.

    python bench/synthetic_log.py --interactions 1000000 --out /tmp/log1m

Items fall into --groups tastes, each with its own genre words in the item's text
(so the text encoder can place items nobody interacted with) and a Zipf-skewed
popularity inside the taste. Each user holds one taste at a time and moves to
another with probability --drift per event (so the recent events say more than
old ones); 80% of a user's events are in their current taste (85% of those rated
5, the rest 3), 20% anywhere, rated 1-4. Timestamps interleave users uniformly.
Writes interactions.parquet (user_id, item_id, timestamp, rating) and
items.parquet (item_id, title, genre).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GENRES = [
    "western", "space opera", "romantic comedy", "slasher horror", "cooking show", "war drama", "heist thriller",
    "animated musical", "courtroom drama", "nature documentary", "superhero action", "period romance",
    "zombie survival", "sports biopic", "spy espionage", "teen comedy", "film noir detective", "kaiju monster",
    "martial arts", "political satire", "high fantasy quest", "cyberpunk dystopia", "road trip comedy",
    "true crime", "disaster epic", "ghost story", "music concert", "pirate adventure", "time travel", "medical drama",
]
WORDS = ["Night", "River", "Iron", "Silver", "Last", "Broken", "Golden", "Hidden", "Red", "Lost", "Wild", "Quiet"]


def generate(
    n_events: int, n_users: int, n_items: int, n_groups: int, drift: float, seed: int
) -> tuple[pa.Table, pa.Table]:
    if n_groups > len(GENRES):
        raise ValueError(f"at most {len(GENRES)} groups")
    rng = np.random.default_rng(seed)
    group_of = rng.integers(0, n_groups, n_items)
    members = [np.flatnonzero(group_of == g) for g in range(n_groups)]
    popularity = [rng.zipf(1.6, len(m)).astype(np.float64) for m in members]
    popularity = [p / p.sum() for p in popularity]
    per_user = rng.multinomial(n_events - 5 * n_users, np.full(n_users, 1 / n_users)) + 5
    users, items, times, ratings = [], [], [], []
    for u in range(n_users):
        n = int(per_user[u])
        g = int(rng.integers(n_groups))
        moves = rng.random(n) < drift
        in_taste = rng.random(n) < 0.8
        liked = rng.random(n) < 0.85
        for t in range(n):
            if moves[t]:
                g = int(rng.integers(n_groups))
            if in_taste[t]:
                items.append(int(members[g][rng.choice(len(members[g]), p=popularity[g])]))
                ratings.append(5.0 if liked[t] else 3.0)
            else:
                items.append(int(rng.integers(n_items)))
                ratings.append(float(rng.integers(1, 5)))
        users.extend([u] * n)
        times.extend(np.sort(rng.integers(0, 10**9, n)).tolist())
    interactions = pa.table({
        "user_id": pa.array([f"u{u}" for u in users]),
        "item_id": pa.array([f"i{i}" for i in items]),
        "timestamp": pa.array(times, pa.int64()),
        "rating": pa.array(ratings, pa.float64()),
    })
    titles = [f"{WORDS[rng.integers(len(WORDS))]} {WORDS[rng.integers(len(WORDS))]} {j}" for j in range(n_items)]
    catalog = pa.table({
        "item_id": [f"i{j}" for j in range(n_items)],
        "title": titles,
        "genre": [GENRES[g] for g in group_of],
    })
    return interactions, catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=6_000)
    parser.add_argument("--items", type=int, default=3_700)
    parser.add_argument("--groups", type=int, default=30)
    parser.add_argument("--drift", type=float, default=0.03, help="chance per event that a user changes taste")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for interactions.parquet and items.parquet")
    args = parser.parse_args()
    interactions, catalog = generate(args.interactions, args.users, args.items, args.groups, args.drift, args.seed)
    os.makedirs(args.out, exist_ok=True)
    pq.write_table(interactions, os.path.join(args.out, "interactions.parquet"))
    pq.write_table(catalog, os.path.join(args.out, "items.parquet"))
    print(os.path.join(args.out, "interactions.parquet"), os.path.join(args.out, "items.parquet"))


if __name__ == "__main__":
    main()
