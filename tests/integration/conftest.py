"""One real local Ray for the whole test session; each test builds its own actors on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import faiss
import numpy as np
import pytest
import ray

from rayrec import IndexConfig, RayrecConfig

# Every actor claims a sliver of a CPU so dozens fit on the 2 logical CPUs.
TINY_CPU = 0.02


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    # Shards answer filtered queries through the faiss IDSelector path however few rows
    # are eligible (the exact-subset shortcut is covered by the unit tests).
    env = {"RAYREC_EXACT_SUBSET_MAX_ROWS": "0"}
    ray.init(
        address="local",  # our own Ray, never one a `ray start` or a Cluster elsewhere on this machine left
        num_cpus=2,
        namespace="rayrec-tests",
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
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
