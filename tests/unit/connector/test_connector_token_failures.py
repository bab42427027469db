"""A failing token endpoint is not hammered (last bullet).

Callers waiting on an in-flight token request or login share its outcome,
success or failure, and a short negative cache covers a failed token request:
N concurrent callers make one call and all fail within one timeout.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import responses
from connector_fakes import BASE, CLIENT_SECRET, LOGIN_URL, TOKEN_URL, make_prescriber

from connector import ConnectorSettings, TokenCache
from connector.errors import ConnectorError, PlatformUnavailable, TransportError
from tests.support import FakeClock

N = 20
TOKEN_OK = (200, {}, json.dumps({"access_token": "at-1", "expires_in": 3600}))


def _held_until_all_wait(
    tokens: TokenCache, key: object, answer: Callable[[], Any]
) -> Callable[[Any], Any]:
    """A responses callback that answers only once the other N-1 callers wait on this flight,
    so that every caller meets the in-flight request (synchronisation, not timing)."""
    calls: list[int] = []

    def callback(_request: Any) -> Any:
        calls.append(1)
        flight = tokens._flights.get(key)
        while flight is not None and flight.waiters < N - 1:
            threading.Event().wait(0.001)
        return answer()

    callback.calls = calls  # type: ignore[attr-defined]
    return callback


def _all(fn: Callable[[], object]) -> list[object]:
    def run(_: int) -> object:
        try:
            return fn()
        except ConnectorError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=N) as pool:
        return list(pool.map(run, range(N)))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _tokens(clock: FakeClock, **options: Any) -> TokenCache:
    return TokenCache(
        ConnectorSettings(BASE, "client-1", CLIENT_SECRET, **options), monotonic=clock.monotonic
    )


@pytest.mark.parametrize("token_failure_ttl_s", [5, 0])
def test_twenty_callers_against_a_503_token_endpoint_make_one_call_and_all_fail(
    clock: FakeClock, token_failure_ttl_s: float
) -> None:
    tokens = _tokens(clock, token_failure_ttl_s=token_failure_ttl_s)
    callback = _held_until_all_wait(tokens, "access", lambda: (503, {}, '{"error":"down"}'))
    with responses.RequestsMock() as rsps:
        rsps.add_callback(responses.POST, TOKEN_URL, callback=callback)
        results = _all(tokens.access_token)

    assert len(callback.calls) == 1  # type: ignore[attr-defined]
    assert all(isinstance(r, PlatformUnavailable) for r in results)
    assert len({id(r) for r in results}) == N  # each caller gets its own copy to mutate


def test_twenty_callers_against_a_hanging_token_endpoint_wait_one_timeout(clock: FakeClock) -> None:
    tokens = _tokens(clock)

    def hang() -> Any:
        raise requests.exceptions.ReadTimeout("read timed out")

    callback = _held_until_all_wait(tokens, "access", hang)
    with responses.RequestsMock() as rsps:
        rsps.add_callback(responses.POST, TOKEN_URL, callback=callback)
        results = _all(tokens.access_token)

    # One request, hence one read timeout, shared by all twenty callers.
    assert len(callback.calls) == 1  # type: ignore[attr-defined]
    assert all(isinstance(r, TransportError) and r.code == "read_timeout" for r in results)


def test_a_failed_token_request_is_remembered_for_the_window_then_retried(clock: FakeClock) -> None:
    tokens = _tokens(clock, token_failure_ttl_s=5)
    with responses.RequestsMock() as rsps:
        failing = rsps.add(responses.POST, TOKEN_URL, status=503, json={"error": "down"})
        with pytest.raises(PlatformUnavailable):
            tokens.access_token()
        clock.advance(4.9)
        with pytest.raises(PlatformUnavailable):
            tokens.access_token()
        assert failing.call_count == 1

        rsps.remove(failing)
        ok = rsps.add(responses.POST, TOKEN_URL, json={"access_token": "at-2", "expires_in": 3600})
        clock.advance(0.2)
        assert tokens.access_token() == "at-2"
        assert ok.call_count == 1


def test_waiters_on_a_failing_login_share_its_failure(clock: FakeClock) -> None:
    tokens = _tokens(clock)
    prescriber = make_prescriber()
    key = ("session", prescriber.key, tokens._fingerprint(prescriber))
    callback = _held_until_all_wait(tokens, key, lambda: (503, {}, '{"error":"down"}'))
    with responses.RequestsMock() as rsps:
        rsps.add_callback(responses.POST, TOKEN_URL, callback=lambda _r: TOKEN_OK)
        rsps.add_callback(responses.POST, LOGIN_URL, callback=callback)
        results = _all(lambda: tokens.session_token(prescriber))

    assert len(callback.calls) == 1  # type: ignore[attr-defined]
    assert all(isinstance(r, PlatformUnavailable) for r in results)


def test_waiters_on_a_successful_login_share_its_session(clock: FakeClock) -> None:
    tokens = _tokens(clock)
    prescriber = make_prescriber()
    key = ("session", prescriber.key, tokens._fingerprint(prescriber))
    body = json.dumps({"success": True, "data": {"session_token": "st-1", "expires_in": 3600}})
    callback = _held_until_all_wait(tokens, key, lambda: (200, {}, body))
    with responses.RequestsMock() as rsps:
        rsps.add_callback(responses.POST, TOKEN_URL, callback=lambda _r: TOKEN_OK)
        rsps.add_callback(responses.POST, LOGIN_URL, callback=callback)
        results = _all(lambda: tokens.session_token(prescriber))

    assert len(callback.calls) == 1  # type: ignore[attr-defined]
    assert results == ["st-1"] * N
