"""``python -m sandbox`` keeps HTTP/1.1 connections alive, and its connection faults still bite.

Each test runs the sandbox as a real process and talks to it over one
``requests.Session``, as the connector does; ``/sandbox/stats``
``connections_accepted`` counts the TCP connections the server accepted.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 5

Payload = Callable[..., dict[str, Any]]
SandboxFactory = Callable[..., str]


@pytest.fixture
def start_sandbox() -> Iterator[SandboxFactory]:
    """``start_sandbox(*extra_flags)``: run ``python -m sandbox --port 0``; returns its base URL."""
    processes: list[subprocess.Popen[str]] = []

    def start(*extra: str) -> str:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "--port", "0", "--seed", "7", *extra],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        processes.append(process)
        lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        line = lines.get(timeout=20)
        assert line.startswith("sandbox listening on http://127.0.0.1:"), line
        return line.split(" on ", 1)[1].strip()

    yield start
    for process in processes:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
        assert process.returncode == 0


def _sign_in(http: requests.Session, base: str) -> dict[str, str]:
    token = http.post(
        f"{base}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "erx-sandbox-client",
            "client_secret": "erx-sandbox-secret",
        },
        timeout=TIMEOUT_S,
    ).json()["access_token"]
    session = http.post(
        f"{base}/prescriber/login",
        json={"email": "dr.jones@example.test", "password": "sandbox-jones-pass"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT_S,
    ).json()["data"]["session_token"]
    return {"Authorization": f"Bearer {token}", "X-Session-Token": session}


def _stats(http: requests.Session, base: str) -> dict[str, Any]:
    response = http.get(f"{base}/sandbox/stats", timeout=TIMEOUT_S)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def _control(http: requests.Session, base: str, **values: Any) -> None:
    response = http.post(f"{base}/sandbox/control", json=values, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text


def _client_refs(http: requests.Session, base: str, auth: dict[str, str], ref: str) -> list[Any]:
    body = http.get(
        f"{base}/prescriptions", params={"client_ref_id": ref}, headers=auth, timeout=TIMEOUT_S
    ).json()
    return body["data"]["prescriptions"]  # type: ignore[no-any-return]


def test_one_session_sends_every_call_over_one_connection(
    start_sandbox: SandboxFactory, issue_payload: Payload
) -> None:
    base = start_sandbox()
    with requests.Session() as http:
        auth = _sign_in(http, base)
        clinics = http.get(f"{base}/clinics", headers=auth, timeout=TIMEOUT_S)
        issued = http.post(
            f"{base}/prescriptions", json=issue_payload(), headers=auth, timeout=TIMEOUT_S
        )
        token = issued.json()["data"]["prescription"]["id"]
        read = http.get(f"{base}/prescriptions/{token}", headers=auth, timeout=TIMEOUT_S)
        stats = _stats(http, base)

    assert clinics.json()["success"] is True
    assert read.json()["data"]["prescription"]["id"] == token
    for response in (clinics, issued, read):
        assert response.raw.version == 11
        assert response.headers.get("Connection", "").lower() != "close"
    assert stats["prescriptions_issued"] == 1
    # Token, login, clinics, issue, read and stats: six requests, one connection.
    assert stats["connections_accepted"] == 1


def test_a_body_the_sandbox_ignores_does_not_spill_into_the_next_request(
    start_sandbox: SandboxFactory,
) -> None:
    base = start_sandbox()
    with requests.Session() as http:
        # The release endpoint never reads a body: the server must read it off
        # the socket, or its bytes would be parsed as the next request line.
        released = http.post(
            f"{base}/sandbox/webhooks/release", data=b"x" * 50_000, timeout=TIMEOUT_S
        )
        _control(http, base, fault_sleep_s=0.25)
        stats = _stats(http, base)

    assert released.json() == {"released": 0}
    assert stats["connections_accepted"] == 1


def test_commit_then_drop_loses_the_answer_on_a_kept_alive_connection(
    start_sandbox: SandboxFactory, issue_payload: Payload
) -> None:
    base = start_sandbox()
    with requests.Session() as http:
        auth = _sign_in(http, base)
        _control(http, base, commit_then_drop_rate=1.0)

        with pytest.raises(requests.ConnectionError):
            http.post(
                f"{base}/prescriptions", json=issue_payload(), headers=auth, timeout=TIMEOUT_S
            )

        _control(http, base, commit_then_drop_rate=0.0)
        found = _client_refs(http, base, auth, "rx-000042")
        stats = _stats(http, base)

    assert len(found) == 1  # accepted, though the client never heard so
    assert stats["faults_injected"] == {"commit_then_drop": 1}
    # The dropped connection, then one fresh connection for everything after it.
    assert stats["connections_accepted"] == 2


def test_timeout_before_commit_still_times_the_client_out(
    start_sandbox: SandboxFactory, issue_payload: Payload
) -> None:
    base = start_sandbox()
    with requests.Session() as http:
        auth = _sign_in(http, base)
        # The server holds the call for 3 s; the client gives up after 0.3 s.
        _control(http, base, timeout_before_commit_rate=1.0, fault_sleep_s=3.0)

        with pytest.raises(requests.Timeout):
            http.post(f"{base}/prescriptions", json=issue_payload(), headers=auth, timeout=0.3)

        _control(http, base, timeout_before_commit_rate=0.0)
        assert _client_refs(http, base, auth, "rx-000042") == []
        retried = http.post(
            f"{base}/prescriptions", json=issue_payload(), headers=auth, timeout=TIMEOUT_S
        ).json()
        stats = _stats(http, base)

    assert retried["success"] is True
    assert stats["prescriptions_issued"] == 1
    assert stats["faults_injected"] == {"timeout_before_commit": 1}


def test_keep_alive_zero_closes_every_connection(start_sandbox: SandboxFactory) -> None:
    base = start_sandbox("--keep-alive", "0")
    with requests.Session() as http:
        first = http.get(f"{base}/sandbox/control", timeout=TIMEOUT_S)
        stats = _stats(http, base)

    assert first.headers["Connection"].lower() == "close"
    assert stats["connections_accepted"] == 2
