"""/sandbox/* control and observation endpoints."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient

from sandbox import SandboxState
from sandbox.lifecycle import can_transition
from sandbox.store import Prescription

Issue = Callable[..., dict[str, Any]]

CONTROL_KEYS = {
    "fail_500_rate",
    "fail_503_rate",
    "rate_limit_rate",
    "retry_after_s",
    "timeout_before_commit_rate",
    "commit_then_drop_rate",
    "session_expired_rate",
    "fault_sleep_s",
    "issue_delay_s",
    "void_delay_s",
    "token_ttl_s",
    "session_ttl_s",
    "omit_expires_in",
    "auto",
    "auto_delay_s",
    "auto_skip_printed_rate",
    "webhook_url",
    "webhook_secret",
    "webhook_secrets",
    "webhook_duplicate_rate",
    "webhook_drop_rate",
    "webhook_shuffle",
    "webhook_hold",
    "webhook_retry_base_s",
    "webhook_delay_max_s",
}


def test_control_read_and_partial_update(client: FlaskClient, state: SandboxState) -> None:
    current = client.get("/sandbox/control").get_json()
    assert set(current) == CONTROL_KEYS
    assert current["retry_after_s"] == 1
    assert current["fault_sleep_s"] == 5.0
    assert current["auto_skip_printed_rate"] == 0.3
    assert "whsec_sandbox_test_secret" not in str(current)

    updated = client.post(
        "/sandbox/control", json={"fail_500_rate": 0.25, "auto": True, "retry_after_s": 3}
    )
    assert updated.status_code == 200
    assert updated.get_json()["fail_500_rate"] == 0.25
    values = state.controls.current()
    assert (values.fail_500_rate, values.auto, values.retry_after_s) == (0.25, True, 3)
    assert values.fail_503_rate == 0.0


def test_control_rejects_unknown_keys_and_bad_values_atomically(
    client: FlaskClient, state: SandboxState
) -> None:
    unknown = client.post("/sandbox/control", json={"fail_500_rate": 0.5, "nonsense": 1})
    assert unknown.status_code == 400
    assert "nonsense" in unknown.get_json()["errors"]
    assert state.controls.current().fail_500_rate == 0.0
    for bad in (
        {"fail_500_rate": 1.5},
        {"auto": "yes"},
        {"retry_after_s": 1.5},
        {"token_ttl_s": -1},
        {"webhook_url": "ftp://x"},
        {"webhook_secrets": []},
    ):
        assert client.post("/sandbox/control", json=bad).status_code == 400, bad
    assert client.post("/sandbox/control", data="nope").status_code == 400


def test_stats_counts_and_reset(
    client: FlaskClient, auth: dict[str, str], issue: Issue, state: SandboxState
) -> None:
    issue(client_ref_id="a")
    issue(client_ref_id="a")
    issue(client_ref_id="b")
    client.post("/prescriptions", json={}, headers=auth)  # invalid: an attempt, not an issue
    stats = client.get("/sandbox/stats").get_json()
    assert stats == {
        "token_requests": 1,
        "logins": 1,
        "logins_by_email": {"dr.jones@example.test": 1},
        "login_refusals_by_email": {},
        "prescriptions_issued": 3,
        "issued_by_client_ref": {"a": 2, "b": 1},
        "issue_attempts": 4,
        "faults_injected": {},
        "connections_accepted": 0,  # the test client opens no TCP connection
        "webhooks": {
            "enqueued": 0,
            "delivered": 0,
            "attempts": 0,
            "failed_attempts": 0,
            "gave_up": 0,
            "dropped": 0,
            "duplicated": 0,
            "pending": 0,
        },
    }
    state.controls.update({"webhook_hold": True})
    client.post("/sandbox/storm", json={"count": 2})

    assert client.post("/sandbox/reset").get_json() == {"reset": True}
    after = client.get("/sandbox/stats").get_json()
    assert after["prescriptions_issued"] == 0 and after["token_requests"] == 0
    assert after["webhooks"]["enqueued"] == 0 and after["webhooks"]["pending"] == 0
    assert state.store.prescription_count() == 0
    # tokens and sessions are gone too
    assert client.get("/clinics", headers=auth).status_code == 401
    assert state.controls.current().webhook_hold is True  # controls survive a reset


def test_storm_shape(client: FlaskClient, state: SandboxState) -> None:
    response = client.post("/sandbox/storm", json={"count": 200})
    assert response.status_code == 200
    storm = response.get_json()["prescriptions"]
    assert len(storm) == 200
    assert [p["client_ref_id"] for p in storm[:2]] == ["storm-000001", "storm-000002"]
    assert storm[-1]["client_ref_id"] == "storm-000200"
    transitions = 0
    for p in storm:
        assert set(p) >= {"id", "client_ref_id", "status", "history"}
        statuses = [h["status"] for h in p["history"]]
        assert statuses[0] == "issued"
        assert statuses[-1] == p["status"]
        assert all(can_transition(a, b) for a, b in zip(statuses, statuses[1:], strict=False))
        assert [h["at"] for h in p["history"]] == sorted(h["at"] for h in p["history"])
        transitions += len(statuses) - 1
    finals = {p["status"] for p in storm}
    assert {"dispensed", "expired", "voided"} <= finals
    assert finals & {"signed", "printed"}
    assert state.stats_json()["webhooks"]["enqueued"] == transitions
    rx: Prescription | None = state.store.get(storm[0]["id"])
    assert rx is not None and rx.status == storm[0]["status"]

    more = client.post("/sandbox/storm", json={"count": 1}).get_json()["prescriptions"]
    assert more[0]["client_ref_id"] == "storm-000201"
    for bad in ({"count": 0}, {"count": "5"}, {}):
        assert client.post("/sandbox/storm", json=bad).status_code == 400


def test_storm_noise_events_are_other_types(
    client: FlaskClient, state: SandboxState, sender: Any
) -> None:
    body = client.post("/sandbox/storm", json={"count": 4, "noise_events": 3}).get_json()
    assert body["noise_events"] == 12
    transitions = sum(len(p["history"]) - 1 for p in body["prescriptions"])
    assert state.stats_json()["webhooks"]["enqueued"] == transitions + 12
    state.dispatcher.drain()
    types = [json.loads(s.body)["type"] for s in sender.sent]
    assert types.count("prescription.status_updated") == transitions
    other = [t for t in types if t != "prescription.status_updated"]
    assert len(other) == 12
    assert all(t.startswith(("prescription.", "pharmacy.")) for t in other)
    assert client.post("/sandbox/storm", json={"count": 1, "noise_events": -1}).status_code == 400
