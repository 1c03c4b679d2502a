"""The HTTP edge's guard: which routes need the API key, the key's variable, and the Host allow-list."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi import HTTPException
from rayrec.serve_app.http_edge import OPEN, WRITE, Guard, api_key_digest, key_digest

from rayrec.exceptions import InvalidInputError

ACCESS = {("POST", "/feedback"): WRITE, ("GET", "/healthz"): OPEN}


def request(auth: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(headers={} if auth is None else {"authorization": auth})


@pytest.mark.parametrize("protect_reads", [False, True])
def test_writes_need_the_key_reads_only_when_protected_open_routes_never(protect_reads) -> None:
    guard = Guard(key_digest("k3y"), protect_reads, ["*"], ACCESS)
    for auth in (None, "Bearer wrong", "Basic k3y", "k3y"):
        with pytest.raises(HTTPException) as err:
            guard.check_key(request(auth), "POST", "/feedback")
        assert err.value.status_code == 401 and err.value.headers == {"WWW-Authenticate": "Bearer"}
    guard.check_key(request("Bearer k3y"), "POST", "/feedback")
    guard.check_key(request("bearer  k3y "), "POST", "/feedback")
    guard.check_key(request(), "GET", "/healthz")
    if protect_reads:
        with pytest.raises(HTTPException):
            guard.check_key(request(), "POST", "/recommend")  # a route not named is a read
    else:
        guard.check_key(request(), "POST", "/recommend")
    Guard(None, protect_reads, ["*"], ACCESS).check_key(request(), "POST", "/feedback")  # no key: open


def test_hosts_are_matched_without_their_port() -> None:
    guard = Guard(None, False, ["127.0.0.1", "localhost", "[::1]", "*.example.com"], {})
    for host in ("127.0.0.1:8000", "127.0.0.1", "LOCALHOST:80", "[::1]:8000", "api.example.com", "a.b.example.com:443"):
        assert guard.host_allowed(host), host
    for host in ("evil.test", "127.0.0.1.evil.test:8000", "example.com", "", None, "[::2]:8000", "localhost.:1"):
        assert not guard.host_allowed(host), host
    assert Guard(None, False, ["*"], {}).host_allowed("anything:1")


def test_a_misnamed_or_empty_key_variable_is_an_error_not_no_key(monkeypatch) -> None:
    monkeypatch.delenv("RAYREC_API_KEY", raising=False)
    monkeypatch.delenv("MY_KEY", raising=False)
    assert api_key_digest(None) is None  # nothing named, nothing set: no key
    with pytest.raises(InvalidInputError, match="api_key_env names MY_KEY, which is not set"):
        api_key_digest("MY_KEY")
    monkeypatch.setenv("MY_KEY", "  ")
    with pytest.raises(InvalidInputError, match="MY_KEY is set but empty"):
        api_key_digest("MY_KEY")
    monkeypatch.setenv("RAYREC_API_KEY", "")
    with pytest.raises(InvalidInputError, match="RAYREC_API_KEY is set but empty"):
        api_key_digest(None)
    monkeypatch.setenv("MY_KEY", "s3cret")
    assert api_key_digest("MY_KEY") == key_digest("s3cret")
