"""End-to-end driver script: build rayrec from a Parquet catalog, recommend, send feedback.

    python examples/driver_demo.py                      # starts a local Ray (loopback only)
    python examples/driver_demo.py --address HOST:PORT  # uses a running Ray cluster
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--address", default=None, help="Ray cluster address; default: start a local Ray")
parser.add_argument("--namespace", default="rayrec-demo", help="Ray namespace of the demo's actors")
parser.add_argument("--items", type=int, default=20_000, help="catalog size")
parser.add_argument("--dim", type=int, default=64, help="item-space dimension")
parser.add_argument("--shards", type=int, default=2, help="item shards")
parser.add_argument("--index", default="HNSW32", help="faiss index factory string")
args = parser.parse_args()

if args.address is None:
    # Before Ray is imported: a local Ray then listens on 127.0.0.1 only.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from rayrec import IndexConfig, Rayrec, RayrecConfig  # noqa: E402
from rayrec.catalogs.catalog import items_table  # noqa: E402

GENRES = ["drama", "comedy", "horror", "documentary", "animation", "thriller"]


def make_catalog(path: str, n: int, dim: int, seed: int = 0) -> None:
    """A synthetic catalog whose items cluster by genre, written as Parquet."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(GENRES), dim)).astype(np.float32)
    genre = rng.integers(0, len(GENRES), n)
    vectors = centres[genre] + 0.8 * rng.standard_normal((n, dim)).astype(np.float32)
    ids = [f"sku-{i:06d}" for i in range(n)]
    table = items_table(
        ids,
        vectors,
        {"category": [GENRES[g] for g in genre], "title": [f"{GENRES[g]} title #{i}" for i, g in enumerate(genre)]},
    )
    pq.write_table(table, path)


def show(title: str, rec: dict) -> None:
    print(f"\n{title}  (user version {rec['version']}, cold start: {rec['cold_start']})")
    for r in rec["items"]:
        print(f"  {r['score']:+.3f}  {r['item_id']}  {r['category']:<12} {r['title']}")


def main() -> None:
    config = RayrecConfig(
        index=IndexConfig(dim=args.dim, factory=args.index),
        num_shards=args.shards,
        num_user_actors=1,
        namespace=args.namespace,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "catalog.parquet")
        make_catalog(path, args.items, args.dim)
        t0 = time.perf_counter()
        system = Rayrec.start(config, address=args.address, num_cpus=os.cpu_count())
        try:
            loaded = system.load(path)
            print(f"loaded {loaded} items into {args.shards} shards ({args.index}) in {time.perf_counter() - t0:.1f} s")

            show("cold start for a new user", system.recommend("alice", k=5))
            horror = [r for r in system.search(np.ones(args.dim), k=200, categories=["horror"]).ids[0]][:3]
            for item in horror:
                system.feedback("alice", item, "like", event_id=f"like-{item}")
            again = system.feedback("alice", horror[0], "like", event_id=f"like-{horror[0]}")
            print(f"\nreplayed event like-{horror[0]}: applied={again['applied']} (a repeat changes nothing)")
            recs = system.recommend("alice", k=5)
            show("after liking 3 horror titles", recs)
            assert sum(r["category"] == "horror" for r in recs["items"]) >= 3, "likes should pull horror up"

            for item in [r["item_id"] for r in recs["items"][:2]]:
                system.feedback("alice", item, "dislike")
            show("after disliking the top two", system.recommend("alice", k=5))
            show("only comedy", system.recommend("alice", k=3, categories=["comedy"]))

            t = time.perf_counter()
            n = 200
            for _ in range(n):
                system.recommend("alice", k=10)
            print(f"\n{n} recommendations: {(time.perf_counter() - t) / n * 1000:.1f} ms each, one at a time")
        finally:
            system.shutdown()


if __name__ == "__main__":
    main()
