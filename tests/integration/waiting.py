"""Waiting on a condition with a deadline (never a bare sleep), shared by the multi-process tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests


def wait_until(check: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.5) -> float:
    """Seconds until check() is truthy; an exception from check counts as not yet. Fails after timeout_s."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:  # the thing waited for may still be starting or coming back
            pass
        assert time.monotonic() - t0 < timeout_s, f"{what} did not happen within {timeout_s:g} s"
        time.sleep(interval_s)


def healthy(url: str) -> bool:
    """Whether a rayrec HTTP service answers /healthz with 200."""
    try:
        return requests.get(url + "/healthz", timeout=10).status_code == 200
    except requests.RequestException:
        return False
