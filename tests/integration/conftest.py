"""One real local Ray for the whole test session; each test builds its own actors on it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import faiss
import numpy as np
import pytest
import ray

from rayrec import IndexConfig, RayrecConfig
from rayrec.learning.background import TRAIN_POLL_ENV, TRAIN_POLL_S

# Every actor claims a sliver of a CPU so dozens fit on the 2 logical CPUs.
TINY_CPU = 0.02


@ray.remote(num_cpus=0)
def _environment(names: list[str]) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names}


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    env = {
        # Shards answer filtered queries through the faiss IDSelector path however few rows
        # are eligible (the exact-subset shortcut is covered by the unit tests).
        "RAYREC_EXACT_SUBSET_MAX_ROWS": "0",
        # Ray Train's controller poll, as on the Ray `rayrec train` and `rayrec serve` start (quick_train_polls):
        # each epoch's report waits for it (15 epochs of test_learned_space's first job: 75 -> 48 s).
        # A poll that a busy worker misses is only a missed check (a worker fails after 10 min of them).
        TRAIN_POLL_ENV: TRAIN_POLL_S,
    }
    # Given to the Ray processes through their environment, not a job runtime_env: the raylet started here
    # inherits this process's environment and every worker it starts inherits the raylet's, whereas a job
    # runtime_env makes each worker start through Ray's setup_worker (two interpreter starts, twice the CPU per
    # actor: ~1.9 s against ~0.95 s here). Only the Ray processes get it: this process's is restored at once,
    # so the unit tests and the subprocesses later tests start see the default.
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        ray.init(
            address="local",  # our own Ray, never one a `ray start` or a Cluster elsewhere on this machine left
            num_cpus=2,
            namespace="rayrec-tests",
            include_dashboard=False,
            log_to_driver=False,
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert ray.get(_environment.remote(list(env))) == env, "the Ray workers did not inherit the test settings"
    yield
    ray.shutdown()


def make_config(dim: int = 16, **kwargs: object) -> RayrecConfig:
    """A test config: tiny CPU claims, a fresh namespace, short deadlines."""
    index = kwargs.pop("index", None) or IndexConfig(dim=dim, **kwargs.pop("index_kwargs", {}))  # type: ignore[arg-type]
    kwargs.setdefault("shard_num_cpus", TINY_CPU)
    kwargs.setdefault("router_num_cpus", TINY_CPU)
    kwargs.setdefault("user_actor_num_cpus", TINY_CPU)
    kwargs.setdefault("namespace", f"t-{uuid.uuid4().hex[:8]}")
    return RayrecConfig(index=index, **kwargs)  # type: ignore[arg-type]


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    faiss.normalize_L2(x)
    return x


def clustered(rng: np.random.Generator, n: int, dim: int, clusters: int = 20, spread: float = 0.3) -> np.ndarray:
    """Unit vectors drawn around a few centres, so items have real neighbours."""
    centres = unit_vectors(rng, clusters, dim)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * np.float32(spread / np.sqrt(dim))
    x = np.ascontiguousarray(centres[rng.integers(0, clusters, n)] + noise, dtype=np.float32)
    faiss.normalize_L2(x)
    return x
