"""Waiting on a condition with a deadline (never a bare sleep), shared by the multi-process tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests


def wait_until(
    check: Callable[[], object],
    timeout_s: float,
    what: str,
    interval_s: float = 0.5,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> float:
    """Seconds until check() is truthy; an exception of retry_on from check counts as not yet (any other
    fails the caller at once). Fails after timeout_s, naming the last exception."""
    t0 = time.monotonic()
    last: BaseException | None = None
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except retry_on as exc:  # the thing waited for may still be starting or coming back
            last = exc
        assert time.monotonic() - t0 < timeout_s, f"{what} did not happen within {timeout_s:g} s (last: {last!r})"
        time.sleep(interval_s)


def healthy(url: str) -> bool:
    """Whether a rayrec HTTP service answers /healthz with 200."""
    try:
        return requests.get(url + "/healthz", timeout=10).status_code == 200
    except requests.RequestException:
        return False
