"""The connector tells an optional observer about calls, token refreshes and logins,
with a fixed endpoint vocabulary and without importing any metrics library."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import responses
from connector_fakes import BASE, CLIENT_SECRET, LOGIN_URL, TOKEN_URL, make_prescriber

from connector import ConnectorSettings, TokenCache
from connector.errors import AuthError, PlatformUnavailable, TransportError
from connector.observe import ENDPOINTS, call_outcome
from tests.support import FakeClock


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def platform_call(self, endpoint: str, outcome: str, duration_s: float) -> None:
        assert endpoint in ENDPOINTS and duration_s >= 0
        self.events.append(("call", endpoint, outcome))

    def token_refreshed(self, kind: str) -> None:
        self.events.append(("token", kind))

    def login(self, kind: str) -> None:
        self.events.append(("login", kind))

    def login_refused(self) -> None:
        self.events.append(("refused",))


def _tokens(observer: object) -> TokenCache:
    settings = ConnectorSettings(
        BASE, "client-1", CLIENT_SECRET, token_failure_ttl_s=0, login_failure_ttl_s=0
    )
    return TokenCache(settings, monotonic=FakeClock().monotonic, observer=observer)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (200, None, "2xx"),
        (404, None, "4xx"),
        (503, None, "5xx"),
        (None, "read_timeout", "read_timeout"),
        (None, None, "error"),
    ],
)
def test_call_outcome_is_a_small_vocabulary(
    status: int | None, code: str | None, expected: str
) -> None:
    assert call_outcome(status=status, error_code=code) == expected


def test_login_token_and_refusal_are_reported() -> None:
    recorder = Recorder()
    tokens = _tokens(recorder)
    ok = make_prescriber("5531", "dr.jones")
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TOKEN_URL, json={"access_token": "at", "expires_in": 3600})
        rsps.add(
            responses.POST,
            LOGIN_URL,
            json={"success": True, "data": {"session_token": "st", "expires_in": 60}},
        )
        rsps.add(
            responses.POST, LOGIN_URL, json={"success": False, "message": "Invalid credentials"}
        )
        tokens.session_token(ok)
        with pytest.raises(AuthError):
            tokens.session_token(make_prescriber("7720", "dr.patel"))

    assert recorder.events == [
        ("login", "first"),
        ("call", "token", "2xx"),
        ("token", "access"),
        ("call", "login", "2xx"),
        ("token", "session"),
        ("login", "first"),
        ("call", "login", "2xx"),
        ("refused",),
    ]


def test_failed_calls_are_reported_with_their_outcome() -> None:
    recorder = Recorder()
    tokens = _tokens(recorder)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TOKEN_URL, status=503, json={"error": "down"})
        rsps.add(responses.POST, TOKEN_URL, body=requests.exceptions.ReadTimeout("slow"))
        with pytest.raises(PlatformUnavailable):
            tokens.access_token()
        with pytest.raises(TransportError):
            tokens.access_token()
    assert recorder.events == [("call", "token", "5xx"), ("call", "token", "read_timeout")]


def test_an_observer_that_raises_never_breaks_a_call() -> None:
    class Broken(Recorder):
        def platform_call(self, endpoint: str, outcome: str, duration_s: float) -> None:
            raise RuntimeError("metrics backend down")

        def token_refreshed(self, kind: str) -> None:
            raise RuntimeError("metrics backend down")

    tokens = _tokens(Broken())
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, TOKEN_URL, json={"access_token": "at", "expires_in": 3600})
        assert tokens.access_token() == "at"
