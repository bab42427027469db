"""Fault injection (contract §2): rates of 1.0 make each fault deterministic."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from sandbox import ControlValues, SandboxConfig, SandboxState, create_app, get_state
from sandbox.clock import FakeClock

Payload = Callable[..., dict[str, Any]]


@pytest.mark.parametrize(
    ("key", "status", "fault"),
    [
        ("fail_500_rate", 500, "fail_500"),
        ("fail_503_rate", 503, "fail_503"),
        ("rate_limit_rate", 429, "rate_limit"),
    ],
)
def test_gateway_faults_on_issue_and_reads(
    client: FlaskClient,
    auth: dict[str, str],
    issue_payload: Payload,
    state: SandboxState,
    key: str,
    status: int,
    fault: str,
) -> None:
    state.controls.update({key: 1.0, "retry_after_s": 7})
    issued = client.post("/prescriptions", json=issue_payload(), headers=auth)
    read = client.get("/clinics", headers=auth)
    for response in (issued, read):
        assert response.status_code == status
    if status == 429:
        assert issued.headers["Retry-After"] == "7"
        assert issued.get_json() == {
            "success": False,
            "code": "rate_limited",
            "message": "Too Many Attempts.",
        }
    stats = state.stats_json()
    assert stats["faults_injected"] == {fault: 2}
    assert stats["issue_attempts"] == 1
    assert stats["prescriptions_issued"] == 0


def test_faults_spare_auth_and_sandbox_endpoints(client: FlaskClient, state: SandboxState) -> None:
    state.controls.update({"fail_500_rate": 1.0, "session_expired_rate": 1.0})
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "erx-sandbox-client",
            "client_secret": "erx-sandbox-secret",
        },
    )
    assert response.status_code == 200
    token = response.get_json()["access_token"]
    login = client.post(
        "/prescriber/login",
        json={"email": "dr.jones@example.test", "password": "sandbox-jones-pass"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert login.get_json()["success"] is True
    assert client.get("/sandbox/stats").status_code == 200
    assert state.stats_json()["faults_injected"] == {}


def test_session_expired_fault_on_a_valid_session(
    client: FlaskClient, auth: dict[str, str], state: SandboxState
) -> None:
    state.controls.update({"session_expired_rate": 1.0})
    response = client.get("/medicines", headers=auth)
    assert response.status_code == 200
    assert response.get_json()["code"] == "session_expired"
    assert state.stats_json()["faults_injected"] == {"session_expired": 1}


def test_timeout_before_commit_creates_nothing(
    client: FlaskClient,
    auth: dict[str, str],
    issue_payload: Payload,
    state: SandboxState,
    clock: FakeClock,
) -> None:
    state.controls.update({"timeout_before_commit_rate": 1.0, "fault_sleep_s": 12.5})
    response = client.post("/prescriptions", json=issue_payload(), headers=auth)
    assert response.status_code == 504
    assert clock.sleeps == [12.5]
    state.controls.update({"timeout_before_commit_rate": 0.0})
    found = client.get("/prescriptions?client_ref_id=rx-000042", headers=auth).get_json()
    assert found["data"]["prescriptions"] == []
    assert state.stats_json()["prescriptions_issued"] == 0


def test_commit_then_drop_commits_without_a_useful_answer(
    client: FlaskClient,
    auth: dict[str, str],
    issue_payload: Payload,
    state: SandboxState,
    clock: FakeClock,
) -> None:
    state.controls.update({"commit_then_drop_rate": 1.0, "fault_sleep_s": 30})
    response = client.post("/prescriptions", json=issue_payload(), headers=auth)
    # The test client has no socket to drop: the sandbox answers after the
    # client's timeout instead (the sleep is faked), with a 504.
    assert response.status_code == 504
    assert clock.sleeps == [30]
    stats = state.stats_json()
    assert stats["prescriptions_issued"] == 1
    assert stats["issued_by_client_ref"] == {"rx-000042": 1}
    assert stats["faults_injected"] == {"commit_then_drop": 1}
    found = client.get("/prescriptions?client_ref_id=rx-000042", headers=auth).get_json()
    assert len(found["data"]["prescriptions"]) == 1


@pytest.fixture
def live_sandbox() -> Iterator[tuple[str, Flask]]:
    """A sandbox behind a real threaded HTTP server on a free port (no background threads)."""
    app = create_app(
        SandboxConfig(seed=3, background=False, controls=ControlValues()),
        clock=FakeClock(),
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}", app
    finally:
        server.shutdown()
        server.server_close()
        thread.join(2)


def test_commit_then_drop_drops_the_real_connection(
    live_sandbox: tuple[str, Flask], issue_payload: Payload
) -> None:
    base, app = live_sandbox
    token = requests.post(
        f"{base}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "erx-sandbox-client",
            "client_secret": "erx-sandbox-secret",
        },
        timeout=5,
    ).json()["access_token"]
    session = requests.post(
        f"{base}/prescriber/login",
        json={"email": "dr.jones@example.test", "password": "sandbox-jones-pass"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    ).json()["data"]["session_token"]
    headers = {"Authorization": f"Bearer {token}", "X-Session-Token": session}
    get_state(app).controls.update({"commit_then_drop_rate": 1.0})

    with pytest.raises(requests.ConnectionError):
        requests.post(f"{base}/prescriptions", json=issue_payload(), headers=headers, timeout=5)

    get_state(app).controls.update({"commit_then_drop_rate": 0.0})
    found = requests.get(
        f"{base}/prescriptions", params={"client_ref_id": "rx-000042"}, headers=headers, timeout=5
    ).json()
    assert len(found["data"]["prescriptions"]) == 1
    assert get_state(app).stats_json()["prescriptions_issued"] == 1
