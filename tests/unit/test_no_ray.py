"""The unit tier's guard against Ray, and that the plain modules import without Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

PLAIN_MODULES = (
    "rayrec",
    "rayrec.topk",
    "rayrec.item_index",
    "rayrec.user_state",
    "rayrec.fanout",
    "rayrec.hashing",
    "rayrec.config",
    "rayrec.catalog",
    "rayrec.validation",
)


def test_ray_init_fails_the_test() -> None:
    import ray

    with pytest.raises(pytest.fail.Exception, match="unit tests must not start Ray"):
        ray.init()
    assert not ray.is_initialized()


def test_ray_auto_init_is_refused_too() -> None:
    """ray.get on a plain value would auto-start Ray; the guard must catch that path as well."""
    import ray

    with pytest.raises(pytest.fail.Exception, match="unit tests must not start Ray"):
        ray.put(1)
    assert not ray.is_initialized()


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
