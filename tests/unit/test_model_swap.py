"""The plain parts of a model swap: every item's vector in the new space, or a clear refusal."""

from __future__ import annotations

import numpy as np
import pytest

from rayrec.catalogs.catalog import ItemBatch
from rayrec.exceptions import InvalidInputError
from rayrec.learning.placement import Placer
from rayrec.learning.store import LearnedSpace
from rayrec.system.model_swap import CatalogChangedError, vectors_in


def _placer(rng: np.random.Generator) -> Placer:
    vectors = rng.standard_normal((3, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return Placer(LearnedSpace("v7", "/models/v7", "two-tower", ["a", "b", "c"], vectors, np.zeros(3, bool),
                               rng.standard_normal((4, 6)).astype(np.float32), np.zeros(4, np.float32), {}))


def test_known_items_take_the_models_vectors_and_the_others_their_placed_text():
    rng = np.random.default_rng(0)
    placer = _placer(rng)
    placed_new = rng.standard_normal(4).astype(np.float32)
    batch = ItemBatch(["c", "new", "a"], np.zeros((3, 4), np.float32),
                      {"text": ["text of c", "a new item", None], "category": ["x", "y", "z"]})
    got = vectors_in(placer, batch, {"new": ("a new item", placed_new)})
    np.testing.assert_array_equal(got[0], placer.space.vectors[2])
    np.testing.assert_array_equal(got[1], placed_new)
    np.testing.assert_array_equal(got[2], placer.space.vectors[0])


def test_an_item_without_text_the_model_lacks_is_refused_by_name():
    placer = _placer(np.random.default_rng(1))
    batch = ItemBatch(["a", "raw-1"], np.zeros((2, 4), np.float32), {"text": [None, None]})
    with pytest.raises(InvalidInputError, match=r"no vector in model v7 and no text.*'raw-1'"):
        vectors_in(placer, batch, {})


def test_an_item_whose_text_changed_since_it_was_placed_asks_for_a_retry():
    placer = _placer(np.random.default_rng(2))
    batch = ItemBatch(["n1", "n2"], np.zeros((2, 4), np.float32), {"text": ["new text", "same"]})
    placed = {"n1": ("old text", np.ones(4, np.float32)), "n2": ("same", np.ones(4, np.float32))}
    with pytest.raises(CatalogChangedError, match="n1"):
        vectors_in(placer, batch, placed)
    with pytest.raises(CatalogChangedError, match="n2"):  # an item placed by nobody (it came meanwhile)
        vectors_in(placer, ItemBatch(["n2"], np.zeros((1, 4), np.float32), {"text": ["same"]}), {})
