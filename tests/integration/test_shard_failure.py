"""A shard that raises, hangs or dies: retried once, then a partial result or a clear error, by config."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray
from rayrec.actors.router import RouterActor
from rayrec.actors.shard import Shard, ShardActor

from rayrec.exceptions import ShardUnavailableError
from rayrec.hashing import partitions_of
from tests.integration.conftest import TINY_CPU, make_config, unit_vectors
from tests.integration.waiting import wait_until

DIM = 8


def faulty_shards() -> dict[str, type]:
    """Real shards that fail in the ways shards fail. Defined in a function so
    Ray ships the classes by value to its workers, which cannot import tests."""

    class RaisingShard(Shard):
        """Its search fails, as a shard with a broken index would."""

        def _search(self, queries, k, excludes, categories, with_metadata):
            raise RuntimeError("index file is corrupt")

    class SlowShard(Shard):
        """It answers later than the router's deadline."""

        def _search(self, queries, k, excludes, categories, with_metadata):
            time.sleep(3)  # the fault itself (a shard slower than the deadline), not a wait
            return super()._search(queries, k, excludes, categories, with_metadata)

    return {"raise": RaisingShard, "slow": SlowShard}


def build(policy: str, bad_kind: str):
    cfg = make_config(DIM, num_shards=3, on_shard_failure=policy, shard_timeout_s=0.5, shard_retries=1)
    kinds = faulty_shards()
    shards = []
    for i in range(3):
        cls = ray.remote(kinds[bad_kind]) if (i == 1 and bad_kind in kinds) else ShardActor
        shards.append(cls.options(num_cpus=TINY_CPU).remote(cfg, i))
    router = RouterActor.options(num_cpus=TINY_CPU).remote(cfg, shards)
    rng = np.random.default_rng(0)
    ids = [f"i{i}" for i in range(90)]
    x = unit_vectors(rng, 90, DIM)
    ray.get(router.upsert.remote(ids, x))
    if bad_kind == "kill":
        ray.kill(shards[1], no_restart=True)
        wait_until_dead(shards[1])
    return router, shards, ids, x


def wait_until_dead(handle, deadline_s: float = 30.0) -> None:
    """ray.kill returns before the actor is gone: wait until calls to it fail."""

    def dead() -> bool:
        try:
            ray.get(handle.count.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return True
        return False

    wait_until(dead, deadline_s, "the killed shard's calls failing", interval_s=0.05, retry_on=())


@pytest.mark.parametrize("bad_kind", ["raise", "slow", "kill"])
def test_partial_policy_returns_the_other_shards_merge(ray_session, bad_kind):
    router, shards, ids, x = build("partial", bad_kind)
    try:
        q = x[:1]
        t0 = time.monotonic()
        result = ray.get(router.search.remote(q, 10))
        elapsed = time.monotonic() - t0
        assert result.partial is True
        assert result.failed_shards == [1]
        owner = partitions_of(ids, 3)
        healthy = [i for i in range(90) if owner[i] != 1]
        sims = x[healthy] @ q[0]
        expected = [ids[healthy[j]] for j in np.argsort(-sims, kind="stable")[:10]]
        assert result.ids[0] == expected
        if bad_kind == "slow":  # two tries of 0.5 s each, not the shard's 3 s per try
            assert elapsed < 2.5
    finally:
        for h in [router, *shards]:
            ray.kill(h)


@pytest.mark.parametrize("bad_kind", ["raise", "kill"])
def test_raise_policy_raises_a_clear_error(ray_session, bad_kind):
    router, shards, _, x = build("raise", bad_kind)
    try:
        with pytest.raises(ShardUnavailableError, match=r"1 of 3 shards failed: shard 1"):
            ray.get(router.search.remote(x[:1], 10))
    finally:
        for h in [router, *shards]:
            ray.kill(h)


def test_a_shard_failing_once_is_retried_and_the_answer_is_whole(ray_session):
    cfg = make_config(DIM, num_shards=2, on_shard_failure="raise", shard_timeout_s=2.0, shard_retries=1)

    class FlakyShard(Shard):
        """Fails its first search, as a shard would while its actor restarts."""

        def __init__(self, config, shard_id):
            super().__init__(config, shard_id)
            self.calls = 0

        def _search(self, queries, k, excludes, categories, with_metadata):
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("transient")
            return super()._search(queries, k, excludes, categories, with_metadata)

    shards = [ShardActor.options(num_cpus=TINY_CPU).remote(cfg, 0),
              ray.remote(FlakyShard).options(num_cpus=TINY_CPU).remote(cfg, 1)]
    router = RouterActor.options(num_cpus=TINY_CPU).remote(cfg, shards)
    try:
        rng = np.random.default_rng(1)
        x = unit_vectors(rng, 50, DIM)
        ids = [f"i{i}" for i in range(50)]
        ray.get(router.upsert.remote(ids, x))
        result = ray.get(router.search.remote(x[:1], 50))
        assert result.partial is False
        assert sorted(result.ids[0]) == sorted(ids)
    finally:
        for h in [router, *shards]:
            ray.kill(h)
