"""The example driver script runs end to end against the session's Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parents[2]


def test_example_driver_runs(ray_session):
    env = dict(os.environ, RAY_AUTH_MODE="token")
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "driver_demo.py"), "--address", address, "--items", "3000",
         "--namespace", "example-test"],
        capture_output=True, text=True, timeout=240, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "loaded 3000 items into 2 shards (HNSW32)" in out
    assert "applied=False" in out
    after_likes = out.split("after liking 3 horror titles")[1].split("after disliking")[0]
    assert after_likes.count("horror") >= 3
    only_comedy = out.split("only comedy")[1].split("recommendations:")[0]
    rows = [line.split() for line in only_comedy.splitlines() if line.strip().startswith(("+", "-"))]
    assert len(rows) == 3 and all(row[2] == "comedy" for row in rows)
