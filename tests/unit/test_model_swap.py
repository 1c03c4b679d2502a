"""The plain parts of a model swap: every item's vector in the new space (padded to the index's dimension where
the model has fewer), or a clear refusal."""

from __future__ import annotations

import numpy as np
import pytest

from rayrec.catalogs.catalog import ItemBatch
from rayrec.exceptions import InvalidInputError
from rayrec.learning.placement import Placer, pad
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


def test_pad_adds_zero_coordinates_and_keeps_every_dot_product_and_cosine():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    pa, pb = pad(a, 9), pad(b, 9)
    assert pa.shape == (5, 9) and pa.dtype == np.float32 and not pa[:, 4:].any()
    np.testing.assert_array_equal(pa[:, :4], a)
    np.testing.assert_allclose(pa @ pb.T, a @ b.T, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(pa, axis=1), np.linalg.norm(a, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(pad(a, 4), a)  # the index's own dimension: unchanged
    with pytest.raises(InvalidInputError, match="4-d vectors cannot be served in a 3-d index"):
        pad(a, 3)


def test_a_placer_for_a_larger_index_pads_the_models_vectors_and_its_text_path():
    rng = np.random.default_rng(4)
    placer = _placer(rng)
    wide = Placer(placer.space, 10)
    assert (wide.dim, placer.dim) == (10, 4)
    text = rng.standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_array_equal(wide.text(text), pad(placer.text(text), 10))
    got = wide.items(["b", "new", "a"], text[:1])
    assert got.shape == (3, 10) and not got[:, 4:].any()
    np.testing.assert_array_equal(got[:, :4], placer.items(["b", "new", "a"], text[:1]))
    # Every item of a swap comes out of the index's dimension, the placed ones as given.
    batch = ItemBatch(["c", "new"], np.zeros((2, 10), np.float32), {"text": [None, "a new item"]})
    placed = {"new": ("a new item", wide.text(text[:1])[0])}
    out = vectors_in(wide, batch, placed)
    assert out.shape == (2, 10)
    np.testing.assert_array_equal(out[0], pad(placer.space.vectors[2:3], 10)[0])
    np.testing.assert_array_equal(out[1], placed["new"][1])
    with pytest.raises(InvalidInputError, match="model v7 is 4-d but the index is 3-d"):
        Placer(placer.space, 3)
