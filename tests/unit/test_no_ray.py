"""The unit tier's guard against Ray, and that the plain modules import without Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

PLAIN_MODULES = (
    "rayrec",
    "rayrec.routing.topk",
    "rayrec.index.item_index",
    "rayrec.users.user_state",
    "rayrec.users.feedback_rule",
    "rayrec.routing.fanout",
    "rayrec.hashing",
    "rayrec.config",
    "rayrec.catalogs.catalog",
    "rayrec.validation",
    "rayrec.index.metadata",
    "rayrec.index.faiss_kinds",
    "rayrec.routing.query",
    "rayrec.routing.wire",
    "rayrec.routing.client",
    "rayrec.catalogs.ingest",
    "rayrec.metrics",
    "rayrec.encoder",
    "rayrec.catalogs.movielens",
    "rayrec.durability.storage",
    "rayrec.durability.wal",
    "rayrec.durability.snapshot",
    "rayrec.durability.journal",
    "rayrec.durability.shard_log",
    "rayrec.durability.shard_journal",
    "rayrec.index.staged_items",
    "rayrec.durability.user_log",
    "rayrec.system.layout",
    "rayrec.routing.replicas",
    "rayrec.index.vector_codec",
    "rayrec.system.resharding",
    "rayrec.users.swap_state",
    "rayrec.users.user_journal",
    "rayrec.users.user_models",
    "rayrec.users.model_switch",
    "rayrec.users.model_vectors",
    "rayrec.users.rederiving",
    "rayrec.users.catalog_reads",
    "rayrec.users.user_writes",
    "rayrec.users.user_reads",
    "rayrec.learning.placement",
    "rayrec.learning.background",
    "rayrec.evaluation.data",
    "rayrec.evaluation.metrics",
    "rayrec.evaluation.baselines",
    "rayrec.evaluation.replay",
    "rayrec.evaluation.report",
    "rayrec.evaluation.spaces",
)


# `python -m pytest` runs tests/integration first, whose session fixture leaves a Ray running in
# this process; so these tests compare with the state before the call instead of assuming none.


def test_ray_init_fails_the_test() -> None:
    import ray

    before = ray.is_initialized()
    with pytest.raises(pytest.fail.Exception, match="unit tests must not start Ray"):
        ray.init()
    with pytest.raises(pytest.fail.Exception, match="unit tests must not start Ray"):
        ray.init(num_cpus=1, ignore_reinit_error=True)
    assert ray.is_initialized() == before


def test_ray_auto_init_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """ray.put with no Ray running would auto-start one; the guard must catch that path as well."""
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a unit-only run
    with pytest.raises(pytest.fail.Exception, match="unit tests must not start Ray"):
        ray.put(1)


def test_plain_modules_import_without_ray() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {PLAIN_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"plain modules pulled in Ray: {out.stdout.strip()}"
