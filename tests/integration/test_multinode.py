"""Multi-node: a real Ray of 3 nodes on this machine loses the node of a shard replica (R = 2), then of a shard
(R = 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(600)
def test_a_lost_node_costs_no_reads_with_replicas_and_no_data_without(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="token")
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run(
        [sys.executable, "-m", "tests.integration.multinode_run", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=540, env=env,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    # R = 2: ten whole, exact reads right after the loss of a replica's node (checked in the script).
    assert seen["r2_slowest_read_s"] < 10
    # R = 1: the shard came back elsewhere with its items; the user's changes are all there.
    assert seen["r1_shard0_node_after"] != seen["r1_removed_node"]
    assert seen["r1_items"] == 450 and seen["r1_user_version"] == 22
