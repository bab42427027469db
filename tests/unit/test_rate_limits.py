"""Rate limits (app/interfaces/rate_limits.py): search, send and refused bearer tokens.

Memory storage for most tests (a fresh app each); one test against the real Redis on
127.0.0.1:6379, the production storage. Over a limit: 429, ``Retry-After`` in seconds,
and the one JSON error shape.
"""

from __future__ import annotations

import secrets

import pytest
import redis

from app import create_app
from tests.conftest import bearer

SEARCH = "/api/v1/pharmacies"
SEND = "/api/v1/prescriptions/1/send"
REDIS_URL = "redis://127.0.0.1:6379/15"
KEYS = "LIMITS:LIMITER/erx/*"  # key_prefix "erx" (app/interfaces/rate_limits.py)


def _app(settings, seeded, **limits: str):  # type: ignore[no-untyped-def]
    return create_app(settings.with_overrides(**limits), db=seeded)


def assert_limited(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    body = response.get_json()
    assert set(body) == {"code", "message", "errors"}
    assert body["code"] == "too_many_requests"


def test_search_is_limited_per_subject(settings, seeded) -> None:  # type: ignore[no-untyped-def]
    app = _app(settings, seeded, rate_limit_search="3 per minute")
    client = app.test_client()
    ann, bob = (
        bearer(app, role="patient", subject="pt-0001"),
        bearer(app, role="patient", subject="pt-0002"),
    )
    # Two addresses, so that only the per-subject limit can trip.
    answers = [
        client.get(SEARCH, headers=ann, environ_base={"REMOTE_ADDR": f"10.0.0.{n}"})
        for n in range(4)
    ]

    assert [r.status_code for r in answers[:3]] == [200, 200, 200]
    assert_limited(answers[3])
    assert (
        client.get(SEARCH, headers=bob, environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 200
    )


def test_search_is_limited_per_client_address(settings, seeded) -> None:  # type: ignore[no-untyped-def]
    app = _app(settings, seeded, rate_limit_search="3 per minute")
    client = app.test_client()
    subjects = [bearer(app, role="patient", subject=f"pt-000{n}") for n in range(1, 5)]
    answers = [
        client.get(SEARCH, headers=h, environ_base={"REMOTE_ADDR": "10.0.0.1"}) for h in subjects
    ]

    assert [r.status_code for r in answers[:3]] == [200, 200, 200]
    assert_limited(answers[3])
    assert (
        client.get(
            SEARCH, headers=subjects[3], environ_base={"REMOTE_ADDR": "10.0.0.2"}
        ).status_code
        == 200
    )


def test_send_is_limited(settings, seeded) -> None:  # type: ignore[no-untyped-def]
    app = _app(settings, seeded, rate_limit_send="2 per minute")
    client = app.test_client()
    headers = bearer(app, role="patient", subject="pt-0001")
    # Bodies the schema refuses: the limit counts attempts, whatever their outcome.
    answers = [client.post(SEND, headers=headers, json={"pharmacy_id": "x"}) for _ in range(3)]

    assert [r.status_code for r in answers[:2]] == [422, 422]
    assert_limited(answers[2])


def test_refused_tokens_are_limited_per_address_and_valid_calls_do_not_count(
    settings, seeded
) -> None:  # type: ignore[no-untyped-def]
    app = _app(settings, seeded, rate_limit_auth_failures="3 per minute")
    client = app.test_client()
    good = bearer(app, role="patient", subject="pt-0001")
    bad = {"Authorization": "Bearer not-a-token"}

    for _ in range(10):
        assert client.get("/api/v1/regions", headers=good).status_code == 200
    refused = [client.get("/api/v1/regions", headers=bad).status_code for _ in range(3)]
    blocked = client.get("/api/v1/me", headers=bad)
    other_address = client.get("/api/v1/me", headers=bad, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    fhir = client.get("/fhir/R4/MedicationRequest/1-1", headers=bad)

    assert refused == [401, 401, 401]
    assert_limited(blocked)
    assert other_address.status_code == 401
    assert fhir.status_code == 429 and fhir.headers["Retry-After"]
    assert fhir.get_json()["resourceType"] == "OperationOutcome"


def test_webhooks_and_probes_are_never_limited(settings, seeded) -> None:  # type: ignore[no-untyped-def]
    app = _app(settings, seeded, rate_limit_auth_failures="1 per minute")
    client = app.test_client()

    answers = [client.post("/webhooks/platform", data=b"{}").status_code for _ in range(3)]

    assert 429 not in answers
    assert client.get("/healthz").status_code == 200


def test_defaults_are_generous_enough_for_the_page_and_the_demo() -> None:
    from app.foundation.config import Settings

    defaults = Settings()
    assert (
        defaults.rate_limit_search,
        defaults.rate_limit_send,
        defaults.rate_limit_auth_failures,
    ) == ("120 per minute", "30 per minute", "30 per minute")
    assert defaults.rate_limit_storage_url == "memory://"


def test_counters_are_shared_through_redis(settings, seeded) -> None:  # type: ignore[no-untyped-def]
    store = redis.Redis.from_url(REDIS_URL)
    try:
        store.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    # Two apps (two processes in production) share one counter through Redis.
    limits = {"rate_limit_search": "3 per minute", "rate_limit_storage_url": REDIS_URL}
    first, second = _app(settings, seeded, **limits), _app(settings, seeded, **limits)
    subject = f"pt-redis-{secrets.token_hex(4)}"  # fresh keys: no state from an earlier run
    addr = {"REMOTE_ADDR": f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.1"}
    try:
        statuses = [
            app.test_client().get(
                SEARCH, headers=bearer(app, role="support", subject=subject), environ_base=addr
            )
            for app in (first, second, first, second)
        ]
        assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
        assert_limited(statuses[3])
        assert any(f"sub:support:{subject}".encode() in key for key in store.scan_iter(KEYS))
    finally:
        for key in store.scan_iter(KEYS):
            store.delete(key)


def test_malformed_limit_settings_fail_at_start_up_naming_the_variable() -> None:
    from app.foundation.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="RATE_LIMIT_SEARCH"):
        load_settings({"RATE_LIMIT_SEARCH": "lots"})
    with pytest.raises(ConfigError, match="RATE_LIMIT_STORAGE_URL"):
        load_settings({"RATE_LIMIT_STORAGE_URL": "memcached://x"})
    assert load_settings({"RATE_LIMIT_SEND": "5/minute"}).rate_limit_send == "5/minute"
