"""The ingress's plain parts without Ray or HTTP: its bodies (serve_app/bodies.py), its item space's retry and
following of model swaps (serve_app/item_space.py) and what /healthz reports (serve_app/health.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from rayrec.serve_app import bodies
from rayrec.serve_app.health import health
from rayrec.serve_app.item_space import ItemSpace
from rayrec.serve_app.models import ItemIn, RecommendRequest

from rayrec.config import IndexConfig, RayrecConfig
from rayrec.exceptions import InvalidInputError, ItemNotFoundError
from rayrec.system.layout import Generation
from rayrec.system.model_swap import TEXT_KEY, SpaceChangedError, space_of

from ._fakes import FakeHandle


def test_an_items_write_keeps_embeddings_places_the_rest_by_text_and_gathers_every_field() -> None:
    items = [ItemIn(item_id="a", embedding=[3.0, 4.0], category="x", colour="red"),
             ItemIn(item_id="b", text="a film", size="L"), ItemIn(item_id="c", text="kept", embedding=[0.0, 1.0])]
    vectors, to_encode, metadata = bodies.items_to_write(items, 2)
    np.testing.assert_array_equal(vectors, [[3, 4], [0, 0], [0, 1]])  # as given: the router normalises
    assert to_encode == [1]
    assert metadata == {"category": ["x", None, None], "colour": ["red", None, None], "size": [None, "L", None],
                        TEXT_KEY: [None, "a film", None]}  # an embedding wins over a text: no text kept
    with pytest.raises(InvalidInputError, match=r"items\[0\].embedding has 3 values; the index holds 2-d"):
        bodies.items_to_write([ItemIn(item_id="a", embedding=[1.0, 2.0, 3.0])], 2)
    with pytest.raises(InvalidInputError, match=r"items\[1\].embedding contains NaN"):
        bodies.items_to_write([items[0], ItemIn(item_id="d", embedding=[1.0, float("inf")])], 2)


def test_answers_are_shaped_as_the_api_gives_them() -> None:
    out = {"user_id": "u", "version": 3, "cold_start": False, "partial": True, "items": [{"item_id": "a"}],
           "space": None, "freshness_ms": 12.3456, "user_model": "sequential", "timing": {}, "failed_shards": [1]}
    assert bodies.recommended(out, "v2") == {
        "user_id": "u", "user_version": 3, "cold_start": False, "partial": True, "items": [{"item_id": "a"}],
        "model_version": "v2", "freshness_ms": 12.35, "user_model": "sequential"}
    requests = [RecommendRequest(user_id="u", k=2, filter={"category": ["x"]}), RecommendRequest(user_id="w")]
    assert [bodies.recommend_fields(r) for r in requests] == [("u", 2, True, ["x"], None), ("w", 10, True, None, None)]
    results = bodies.batch_results(requests, [dict(out, space="v1"), ItemNotFoundError("no such item")], "v2")
    assert results[0]["model_version"] == "v1"
    assert results[1] == {"user_id": "w", "status": 404, "detail": "no such item", "error": "ItemNotFoundError"}
    assert bodies.categories_answer({"b": 2, "a": 2, "c": 5}) == {
        "categories": [{"name": "c", "items": 5}, {"name": "a", "items": 2}, {"name": "b", "items": 2}]}
    record = {"item_id": "a", "vector": np.array([0.6, 0.8], np.float32), "category": "x"}
    assert bodies.item_answer(dict(record), False) == {"item_id": "a", "category": "x"}
    assert bodies.item_answer(dict(record), True)["embedding"] == pytest.approx([0.6, 0.8])
    assert bodies.check_item_ids(["a", "b", "a"], 1000) == ["a", "b"]
    with pytest.raises(InvalidInputError, match="3 item ids in one call; at most 2"):
        bodies.check_item_ids(["a", "b", "c"], 2)
    assert bodies.unknown("user", "u").status_code == 404


class Router:
    """What the item space and the health check ask of the router."""

    def __init__(self, space: dict[str, Any] | None) -> None:
        self.space = space

    def item_space(self) -> dict[str, Any] | None:
        return self.space

    def set_item_space(self, space: dict[str, Any]) -> dict[str, Any]:
        self.space = self.space or dict(space)
        return self.space

    def count(self) -> int:
        return 7

    def get_layout(self) -> tuple[Any, Any]:
        return None, Generation.first(3)


def _space(router: Router, models_root: str | None = None) -> ItemSpace:
    encoder = SimpleNamespace(dim=SimpleNamespace(remote=lambda: asyncio.sleep(0, 4)))
    return ItemSpace(encoder, FakeHandle(router), [], None, 4, models_root)


def test_a_write_placed_in_a_space_swapped_away_is_placed_again_at_most_twice() -> None:
    async def tries(space: ItemSpace, fails: int, error: Exception) -> tuple[Any, int]:
        """What in_current makes of a write that raises error its first `fails` times; and the tries made."""
        made: list[int] = []

        async def write() -> str:
            made.append(1)
            if len(made) <= fails:
                raise error
            return "written"

        try:
            return await space.in_current(write), len(made)
        except Exception as exc:
            return exc, len(made)

    async def run() -> None:
        space = _space(Router(space_of("text", None)))
        await space.join(None, False, None)
        assert space.version == "text" and space.placer is None
        moved, bad = SpaceChangedError("moved"), InvalidInputError("bad")
        assert await tries(space, 1, moved) == ("written", 2)
        assert await tries(space, 2, moved) == ("written", 3)
        assert await tries(space, 3, moved) == (moved, 3)
        assert await tries(space, 1, bad) == (bad, 1)

    asyncio.run(run())


def test_a_swap_to_a_name_outside_the_models_root_or_of_another_encoder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "manifest.json").write_text('{"text_dim": 6}')

    async def run() -> None:
        space = _space(Router(space_of("text", None)), str(tmp_path))
        with pytest.raises(InvalidInputError):
            await space.swap("../elsewhere")
        with pytest.raises(InvalidInputError, match="model v1 was trained on 6-d text embeddings, not this encoder"):
            await space.swap("v1")
        assert space.last_swap is None

    asyncio.run(run())


def test_health_reports_the_system_and_the_routers_space_over_this_replicas() -> None:
    async def run() -> None:
        users = [FakeHandle(SimpleNamespace(count=lambda n=n: n)) for n in (2, 5)]
        config = RayrecConfig(index=IndexConfig(dim=4, factory="Flat"))
        space = _space(Router(None))
        out = await health(FakeHandle(Router(space_of("v3", None))), users, config, space)
        assert out.pop("check_ms") >= 0
        assert out == {"status": "ok", "items": 7, "users": 7, "shards": 3, "dim": 4, "index": "Flat",
                       "model_version": "v3", "last_swap": None}
        out = await health(FakeHandle(Router(None)), users, config, space)
        assert out["model_version"] == "text"

    asyncio.run(run())
