"""Shared test set-up: a local Ray started by the tests listens on loopback only."""

import os

# Read by Ray when it is imported: with it, a local Ray binds to 127.0.0.1
# instead of this machine's network address. Must run before `import ray`.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
