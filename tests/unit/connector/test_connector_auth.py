"""The two-step token cache (contract §1): caching, expiry, single flight, invalidation."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
import requests
import responses
from connector_fakes import TOKEN_URL, FakePlatform, make_prescriber

from connector import ConnectorSettings, PrescriberCredentials, TokenCache, token_ttl
from connector.errors import AuthError
from tests.support import FakeClock

T = TypeVar("T")


def test_access_token_is_fetched_once_and_reused(
    tokens: TokenCache, platform: FakePlatform
) -> None:
    seen = {tokens.access_token() for _ in range(25)}

    assert seen == {"at-0"}
    assert platform.token_calls == 1


def test_token_request_uses_client_credentials_form(
    tokens: TokenCache, platform: FakePlatform
) -> None:
    tokens.access_token()

    request = platform.rsps.calls[0].request
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "grant_type=client_credentials" in request.body
    assert "scope=prescriptions" in request.body


def test_access_token_is_refreshed_after_ttl(
    tokens: TokenCache, platform: FakePlatform, clock: FakeClock
) -> None:
    first = tokens.access_token()  # expires_in 3600 -> kept 3540 s
    clock.advance(3539)
    assert tokens.access_token() == first

    clock.advance(1)
    second = tokens.access_token()

    assert second != first
    assert platform.token_calls == 2


def test_short_lifetime_caps_leeway_at_half(
    tokens: TokenCache, platform: FakePlatform, clock: FakeClock
) -> None:
    platform.token_expires_in = 60  # leeway min(60, 30) = 30 -> kept 30 s
    tokens.access_token()
    clock.advance(29.9)
    tokens.access_token()
    assert platform.token_calls == 1

    clock.advance(0.1)
    tokens.access_token()
    assert platform.token_calls == 2


@pytest.mark.parametrize("expires_in", [None, "soon", 0, -5, True])
def test_missing_or_invalid_expires_in_uses_default_lifetime(
    tokens: TokenCache, platform: FakePlatform, clock: FakeClock, expires_in: object
) -> None:
    platform.token_expires_in = expires_in  # default 300 s lifetime -> kept 240 s
    tokens.access_token()
    clock.advance(239)
    tokens.access_token()
    assert platform.token_calls == 1

    clock.advance(1)
    tokens.access_token()
    assert platform.token_calls == 2


@pytest.mark.parametrize(
    ("expires_in", "ttl"),
    [(3600, 3540), (1800, 1740), (120, 60), (60, 30), (1, 0.5), ("3600", 3540), (None, 240)],
)
def test_ttl_rule(expires_in: object, ttl: float) -> None:
    assert token_ttl(expires_in, default_s=300, max_leeway_s=60) == ttl


def test_session_is_cached_per_prescriber_and_expires(
    tokens: TokenCache, platform: FakePlatform, clock: FakeClock, prescriber: PrescriberCredentials
) -> None:
    first = tokens.session_token(prescriber)  # expires_in 1800 -> kept 1740 s
    assert tokens.session_token(prescriber) == first
    clock.advance(1740)

    assert tokens.session_token(prescriber) != first
    assert platform.login_count(prescriber) == 2


def test_sessions_are_never_shared_between_prescribers(
    tokens: TokenCache, platform: FakePlatform
) -> None:
    jones, patel = make_prescriber("5531", "dr.jones"), make_prescriber("7720", "dr.patel")

    s_jones, s_patel = tokens.session_token(jones), tokens.session_token(patel)

    assert s_jones != s_patel
    assert platform.issued_sessions[s_jones] == jones.email
    assert platform.issued_sessions[s_patel] == patel.email
    assert tokens.session_token(jones) == s_jones
    assert platform.token_calls == 1  # one access token serves every prescriber


def test_same_key_with_other_credentials_does_not_reuse_the_session(
    tokens: TokenCache, platform: FakePlatform
) -> None:
    before = make_prescriber("5531", "dr.jones")
    after = PrescriberCredentials("5531", before.email, "new-password", before.secure_pin)

    assert tokens.session_token(before) != tokens.session_token(after)


def _run_concurrently(n: int, fn: Callable[[int], T]) -> list[T]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, range(n)))


def _gate_until(platform: FakePlatform, n: int) -> Callable[[], None]:
    """Hold the token endpoint until all n workers have started their call, so
    that they all meet a cold cache at the same time (no sleeping involved)."""
    platform.token_gate = threading.Event()
    arrived = [0]
    lock = threading.Lock()

    def arrive() -> None:
        with lock:
            arrived[0] += 1
            if arrived[0] == n:
                platform.token_gate.set()

    return arrive


def test_single_flight_cold_cache_fifty_threads_one_token_one_login(
    tokens: TokenCache, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    arrive = _gate_until(platform, 50)

    def work(_: int) -> tuple[str, str]:
        arrive()
        return tokens.session_token(prescriber), tokens.access_token()

    results = _run_concurrently(50, work)

    assert platform.token_calls == 1
    assert platform.login_count(prescriber) == 1
    assert len(set(results)) == 1


def test_single_flight_two_prescribers_two_logins(
    tokens: TokenCache, platform: FakePlatform
) -> None:
    people = [make_prescriber("5531", "dr.jones"), make_prescriber("7720", "dr.patel")]
    arrive = _gate_until(platform, 50)

    def work(i: int) -> tuple[str, str]:
        who = people[i % 2]
        arrive()
        return who.key, tokens.session_token(who)

    results = set(_run_concurrently(50, work))

    assert platform.token_calls == 1
    assert [platform.login_count(p) for p in people] == [1, 1]
    assert len(results) == 2  # one session per prescriber, never crossed
    assert {platform.issued_sessions[s] for _, s in results} == {p.email for p in people}


def test_stale_access_invalidation_does_not_drop_a_fresh_token(
    tokens: TokenCache, platform: FakePlatform
) -> None:
    stale = tokens.access_token()
    assert tokens.invalidate_access_token(stale) is True
    fresh = tokens.access_token()

    # A second thread that also saw `stale` fail reports it late.
    assert tokens.invalidate_access_token(stale) is False

    assert tokens.access_token() == fresh
    assert platform.token_calls == 2


def test_stale_session_invalidation_does_not_drop_a_fresh_session(
    tokens: TokenCache, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    stale = tokens.session_token(prescriber)
    assert tokens.invalidate_session(prescriber.key, stale) is True
    fresh = tokens.session_token(prescriber)

    assert tokens.invalidate_session(prescriber.key, stale) is False
    assert tokens.invalidate_session("someone-else", fresh) is False

    assert tokens.session_token(prescriber) == fresh
    assert platform.login_count(prescriber) == 2


def test_failed_login_raises_and_is_negatively_cached(
    tokens: TokenCache, platform: FakePlatform, clock: FakeClock, prescriber: PrescriberCredentials
) -> None:
    platform.bad_passwords.add(prescriber.password)

    with pytest.raises(AuthError) as first:
        tokens.session_token(prescriber)
    with pytest.raises(AuthError) as second:
        tokens.session_token(prescriber)

    assert first.value.step == second.value.step == "login"
    assert "Invalid credentials" in first.value.message
    assert first.value.retryable is False
    assert platform.login_count(prescriber) == 1  # the second caller never hit the endpoint

    clock.advance(10)  # login_failure_ttl_s
    with pytest.raises(AuthError):
        tokens.session_token(prescriber)
    assert platform.login_count(prescriber) == 2


def test_negative_cache_is_per_prescriber_and_per_credentials(
    tokens: TokenCache, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    platform.bad_passwords.add(prescriber.password)
    with pytest.raises(AuthError):
        tokens.session_token(prescriber)

    other = make_prescriber("7720", "dr.patel")
    fixed = PrescriberCredentials(prescriber.key, prescriber.email, "corrected", "918273")

    assert tokens.session_token(other)
    assert tokens.session_token(fixed)  # a corrected password is tried at once


def test_concurrent_callers_share_one_failed_login(
    tokens: TokenCache, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    platform.bad_passwords.add(prescriber.password)
    arrive = _gate_until(platform, 20)

    def work(_: int) -> str:
        arrive()
        try:
            tokens.session_token(prescriber)
        except AuthError as exc:
            return exc.step
        return "ok"

    assert set(_run_concurrently(20, work)) == {"login"}
    assert platform.login_count(prescriber) == 1


def test_bad_client_credentials_are_an_access_token_auth_error(
    tokens: TokenCache, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    platform.token_status = 401

    with pytest.raises(AuthError) as caught:
        tokens.access_token()
    with pytest.raises(AuthError):
        tokens.session_token(prescriber)

    assert (caught.value.step, caught.value.code, caught.value.http_status) == (
        "access_token",
        "invalid_client",
        401,
    )
    assert platform.token_calls == 1  # remembered briefly, like a failed login


def test_login_with_expired_access_token_refreshes_once(
    tokens: TokenCache, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    old = tokens.access_token()
    platform.expired_access.add(old)  # the platform revoked it early

    session = tokens.session_token(prescriber)

    assert session
    assert platform.token_calls == 2
    assert tokens.access_token() != old


def test_login_gives_up_after_second_401(
    tokens: TokenCache, platform: FakePlatform, prescriber: PrescriberCredentials
) -> None:
    platform.expired_access.update(f"at-{i}" for i in range(10))

    with pytest.raises(AuthError) as caught:
        tokens.session_token(prescriber)

    assert caught.value.step == "access_token"
    assert platform.token_calls == 2
    assert platform.login_count(prescriber) == 0


def test_zero_failure_ttl_disables_negative_cache(
    platform: FakePlatform, clock: FakeClock, prescriber: PrescriberCredentials
) -> None:
    settings = ConnectorSettings(
        "https://platform.test/api", "client-1", "s", login_failure_ttl_s=0
    )
    tokens = TokenCache(settings, monotonic=clock.monotonic)
    platform.bad_passwords.add(prescriber.password)

    for _ in range(2):
        with pytest.raises(AuthError):
            tokens.session_token(prescriber)

    assert platform.login_count(prescriber) == 2


def test_lifetime_counts_from_the_request_not_the_answer(
    tokens: TokenCache, rsps: responses.RequestsMock, clock: FakeClock
) -> None:
    calls = []

    def slow_token(request: requests.PreparedRequest) -> tuple[int, dict, str]:
        calls.append(1)
        clock.advance(100)  # the answer took 100 s to arrive
        return (200, {}, json.dumps({"access_token": f"at-{len(calls)}", "expires_in": 3600}))

    rsps.add_callback("POST", TOKEN_URL, callback=slow_token)
    requested_at = clock.monotonic()
    tokens.access_token()

    clock.set_monotonic(requested_at + 3539)
    tokens.access_token()
    assert len(calls) == 1
    clock.set_monotonic(requested_at + 3540)
    tokens.access_token()
    assert len(calls) == 2
