"""Multi-node: a real 3-node Ray on this machine loses the node that holds a shard (R = 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(600)
def test_a_shard_on_a_removed_node_comes_back_on_a_survivor_from_storage(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="token")
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run(
        [sys.executable, "-m", "tests.integration.multinode_run", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=540, env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["shard0_node_after"] != seen["removed_node"]
    assert seen["items"] == 450 and seen["user_version"] == 22
