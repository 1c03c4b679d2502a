"""Unit-test fixtures: Ray must never start here (that is what tests/integration is for)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def forbid_ray_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes ray.init (and so Ray's auto-init on ray.get/.remote calls) fail the test."""
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail(
            "a unit test called ray.init(): unit tests must not start Ray. Test the plain class "
            "(e.g. rayrec.actors.shard.Shard, not ShardActor), or move the test to tests/integration.",
            pytrace=False,
        )

    monkeypatch.setattr(ray, "init", refuse)
