"""A send's request id reaches the worker's log lines, and a send moves the metrics (points 3 and 4).

The send is queued through the API and dispatched by ``Dispatcher.run_batch``
against the fake platform (``responses``); the metrics are read from
prometheus_client's default registry (single-process mode in tests).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import responses
from prometheus_client import REGISTRY
from sqlalchemy import select

from app.foundation.db import Database
from app.foundation.models import DispatchOutbox, Pharmacy, Prescription
from app.services.connector_factory import MetricsObserver
from app.services.dispatch import Dispatcher, make_breaker
from connector import ConnectorClient, ConnectorSettings
from tests.conftest import bearer
from tests.support import BASE, CLIENT_ID, CLIENT_SECRET, FakeClock, FakePlatform, service_platform


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def platform(rsps: responses.RequestsMock) -> FakePlatform:
    return service_platform(rsps)


@pytest.fixture
def dispatcher(seeded: Database, settings) -> Iterator[Dispatcher]:  # type: ignore[no-untyped-def]
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10))
    settings_ = ConnectorSettings(base_url=BASE, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    with ConnectorClient(settings_, observer=MetricsObserver()) as erx:
        yield Dispatcher(seeded, settings, erx, worker_id="w1", now=clock, rand=lambda: 0.5)


def queue(client, db: Database, reference: str, **headers: str) -> int:  # type: ignore[no-untyped-def]
    auth = bearer(client.application, role="service", subject="svc-tests")
    with db.session() as session:
        pid = session.scalars(
            select(Prescription.id).where(Prescription.reference == reference)
        ).one()
        pharmacy = session.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 17)).one()
    resp = client.post(
        f"/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": pharmacy},
        headers={**auth, **headers},
    )
    assert resp.status_code == 202, resp.get_data(as_text=True)
    return pid


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_request_id_of_the_send_is_on_every_log_line_of_its_job(  # type: ignore[no-untyped-def]
    client, seeded, with_credentials, platform, dispatcher, captured
) -> None:
    pid = queue(client, seeded, "rx-000001", **{"X-Request-ID": "abc123"})
    with seeded.session() as session:
        stored = session.scalars(
            select(DispatchOutbox.request_id).where(DispatchOutbox.prescription_id == pid)
        ).one()
    assert stored == "abc123"
    start = len(captured.getvalue().splitlines())

    assert dispatcher.run_batch() == 1

    job_lines = [
        json.loads(line) for line in captured.getvalue().splitlines()[start:] if line.strip()
    ]
    assert any(f"prescription_id={pid}" in rec["message"] for rec in job_lines)
    # The connector's token and login lines are part of the job too.
    assert any(rec["logger"] == "connector" for rec in job_lines)
    assert {rec["request_id"] for rec in job_lines} == {"abc123"}


def test_a_send_without_a_request_id_header_gets_the_one_the_api_made(  # type: ignore[no-untyped-def]
    client, seeded, with_credentials, auth
) -> None:
    with seeded.session() as session:
        pid = session.scalars(
            select(Prescription.id).where(Prescription.reference == "rx-000001")
        ).one()
        pharmacy = session.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 17)).one()
    resp = client.post(
        f"/api/v1/prescriptions/{pid}/send", json={"pharmacy_id": pharmacy}, headers=auth
    )
    with seeded.session() as session:
        stored = session.scalars(
            select(DispatchOutbox.request_id).where(DispatchOutbox.prescription_id == pid)
        ).one()
    assert stored == resp.headers["X-Request-ID"]


def test_a_send_moves_the_platform_auth_and_send_metrics(  # type: ignore[no-untyped-def]
    client, seeded, with_credentials, platform, dispatcher
) -> None:
    before = {
        "issued": sample("erx_sends_total", route="erx", outcome="issued"),
        "issue_ok": sample("erx_platform_calls_total", endpoint="issue", outcome="2xx"),
        "issue_timed": sample("erx_platform_call_duration_seconds_count", endpoint="issue"),
        "token_call": sample("erx_platform_calls_total", endpoint="token", outcome="2xx"),
        "login_call": sample("erx_platform_calls_total", endpoint="login", outcome="2xx"),
        "access": sample("erx_token_refreshes_total", kind="access"),
        "session": sample("erx_token_refreshes_total", kind="session"),
        "first_login": sample("erx_logins_total", kind="first"),
        "queued_to_issued": sample("erx_send_queued_to_issued_seconds_count"),
    }
    queue(client, seeded, "rx-000001")

    assert dispatcher.run_batch() == 1

    after = {
        "issued": sample("erx_sends_total", route="erx", outcome="issued"),
        "issue_ok": sample("erx_platform_calls_total", endpoint="issue", outcome="2xx"),
        "issue_timed": sample("erx_platform_call_duration_seconds_count", endpoint="issue"),
        "token_call": sample("erx_platform_calls_total", endpoint="token", outcome="2xx"),
        "login_call": sample("erx_platform_calls_total", endpoint="login", outcome="2xx"),
        "access": sample("erx_token_refreshes_total", kind="access"),
        "session": sample("erx_token_refreshes_total", kind="session"),
        "first_login": sample("erx_logins_total", kind="first"),
        "queued_to_issued": sample("erx_send_queued_to_issued_seconds_count"),
    }
    assert {k: after[k] - before[k] for k in before} == dict.fromkeys(before, 1.0)
    # The endpoint label is the fixed vocabulary, never a URL.
    endpoints = {
        s.labels["endpoint"]
        for m in REGISTRY.collect()
        if m.name == "erx_platform_calls"
        for s in m.samples
    }
    assert endpoints <= {
        "token",
        "login",
        "issue",
        "lookup",
        "read",
        "void",
        "clinics",
        "contacts",
        "medicines",
        "other",
    }


def test_the_breaker_state_is_exported(settings) -> None:  # type: ignore[no-untyped-def]
    breaker = make_breaker(settings)
    assert sample("erx_circuit_breaker_open") == 0
    breaker.open()
    assert sample("erx_circuit_breaker_open") == 1
    breaker.close()
    assert sample("erx_circuit_breaker_open") == 0
