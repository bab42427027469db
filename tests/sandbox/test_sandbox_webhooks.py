"""Webhook emission and delivery (contract §6, §7), with a fake sender and clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from sandbox import ControlValues, SandboxConfig, SandboxState, create_app, get_state
from sandbox.webhooks import compute_signature

SECRET = "whsec_sandbox_test_secret"  # the secret the conftest's app signs with
FakeSender = Any  # conftest.FakeSender: ``.sent`` (url, body, headers, timeout_s), ``.replies``

Issue = Callable[..., dict[str, Any]]


def parse_signature(header: str) -> tuple[int, list[str]]:
    items = [part.split("=", 1) for part in header.split(",")]
    t = int(next(v for k, v in items if k == "t"))
    return t, [v for k, v in items if k == "v1"]


def advance(client: FlaskClient, rx_id: str, status: str) -> Any:
    return client.post(f"/sandbox/prescriptions/{rx_id}/advance", json={"status": status})


def test_advance_enqueues_one_signed_event(
    client: FlaskClient, issue: Issue, state: SandboxState, sender: FakeSender
) -> None:
    rx = issue()
    response = advance(client, rx["id"], "signed")
    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True
    assert body["data"]["prescription"]["status"] == "signed"
    assert state.stats_json()["webhooks"]["enqueued"] == 1
    assert state.stats_json()["webhooks"]["pending"] == 1

    assert state.dispatcher.drain() == 1
    [sent] = sender.sent
    assert sent.url == "http://receiver.test/webhooks/platform"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.timeout_s == 10.0
    t, v1s = parse_signature(sent.headers["X-Signature"])
    assert t == int(state.clock())
    assert v1s == [compute_signature(SECRET, t, sent.body)]

    event = json.loads(sent.body)
    assert sent.body == json.dumps(event, separators=(",", ":")).encode()
    assert event["id"].startswith("evt_") and len(event["id"]) == 30
    assert event["type"] == "prescription.status_updated"
    assert event["created"] == "2025-11-20T10:35:02Z"
    assert event["data"] == {
        "prescription": {
            "id": rx["id"],
            "client_ref_id": "rx-000042",
            "status": "signed",
            "previous_status": "issued",
            "occurred_at": "2025-11-20T10:35:02Z",
        }
    }
    webhooks = state.stats_json()["webhooks"]
    assert webhooks["delivered"] == 1 and webhooks["attempts"] == 1 and webhooks["pending"] == 0


def test_advance_rejects_invalid_moves(client: FlaskClient, issue: Issue) -> None:
    rx = issue()
    assert advance(client, rx["id"], "dispensed").status_code == 409  # needs signed first
    assert advance(client, rx["id"], "signed").status_code == 200
    assert advance(client, rx["id"], "printed").status_code == 200
    assert advance(client, rx["id"], "dispensed").status_code == 200
    final = advance(client, rx["id"], "voided")
    assert final.status_code == 409
    assert final.get_json()["code"] == "invalid_transition"
    assert advance(client, rx["id"], "lost").status_code == 400
    assert advance(client, "SRXNOPE", "signed").status_code == 404


def test_retry_with_backoff_then_success_same_body_fresh_t(
    client: FlaskClient, issue: Issue, state: SandboxState, sender: FakeSender, clock: Any
) -> None:
    state.controls.update({"webhook_retry_base_s": 2.0})
    sender.replies = [500, ConnectionError("refused")]
    rx = issue()
    advance(client, rx["id"], "signed")

    assert state.dispatcher.drain() == 1  # fails with 500, retry due in 2 s
    clock.advance(1.9)
    assert state.dispatcher.drain() == 0
    clock.advance(0.1)
    assert state.dispatcher.drain() == 1  # transport error, retry due in 4 s
    clock.advance(4)
    assert state.dispatcher.drain() == 1  # 200

    bodies = {s.body for s in sender.sent}
    assert len(bodies) == 1
    timestamps = [parse_signature(s.headers["X-Signature"])[0] for s in sender.sent]
    assert timestamps == sorted(timestamps) and len(set(timestamps)) == 3
    webhooks = state.stats_json()["webhooks"]
    assert webhooks["attempts"] == 3
    assert webhooks["failed_attempts"] == 2
    assert webhooks["delivered"] == 1
    assert webhooks["pending"] == 0


def test_gives_up_after_eight_attempts(
    client: FlaskClient, issue: Issue, state: SandboxState, sender: FakeSender, clock: Any
) -> None:
    sender.replies = [503] * 20
    rx = issue()
    advance(client, rx["id"], "signed")
    for _ in range(10):
        state.dispatcher.drain()
        clock.advance(1000)
    webhooks = state.stats_json()["webhooks"]
    assert webhooks["attempts"] == 8
    assert webhooks["gave_up"] == 1
    assert webhooks["pending"] == 0


def test_hold_then_release(
    client: FlaskClient, issue: Issue, state: SandboxState, sender: FakeSender
) -> None:
    state.controls.update({"webhook_hold": True})
    rx = issue()
    advance(client, rx["id"], "signed")
    advance(client, rx["id"], "dispensed")
    assert state.dispatcher.drain() == 0
    assert state.stats_json()["webhooks"]["pending"] == 2
    assert client.post("/sandbox/webhooks/release").get_json() == {"released": 2}
    assert state.dispatcher.drain() == 2
    statuses = [json.loads(s.body)["data"]["prescription"]["status"] for s in sender.sent]
    assert statuses == ["signed", "dispensed"]


def test_drop_and_duplicate(
    client: FlaskClient, issue: Issue, state: SandboxState, sender: FakeSender
) -> None:
    rx = issue()
    state.controls.update({"webhook_drop_rate": 1.0})
    advance(client, rx["id"], "signed")
    state.controls.update({"webhook_drop_rate": 0.0, "webhook_duplicate_rate": 1.0})
    advance(client, rx["id"], "dispensed")
    state.dispatcher.drain()
    assert len(sender.sent) == 2
    assert sender.sent[0].body == sender.sent[1].body
    webhooks = state.stats_json()["webhooks"]
    assert webhooks["enqueued"] == 2
    assert webhooks["dropped"] == 1
    assert webhooks["duplicated"] == 1
    assert webhooks["delivered"] == 2


def test_shuffle_delivers_every_event_in_another_order(
    client: FlaskClient, state: SandboxState, sender: FakeSender
) -> None:
    state.controls.update({"webhook_hold": True, "webhook_shuffle": True})
    storm = client.post("/sandbox/storm", json={"count": 30}).get_json()["prescriptions"]
    transitions = sum(len(p["history"]) - 1 for p in storm)
    assert client.post("/sandbox/webhooks/release").get_json() == {"released": transitions}
    state.dispatcher.drain()
    ids = [json.loads(s.body)["id"] for s in sender.sent]
    assert len(ids) == len(set(ids)) == transitions
    assert ids != sorted(ids)  # event ids are time-ordered; shuffled delivery is not


def test_secret_rotation_signs_with_every_secret(
    client: FlaskClient, issue: Issue, state: SandboxState, sender: FakeSender
) -> None:
    control = client.post(
        "/sandbox/control", json={"webhook_secrets": ["whsec_new_secret_value", SECRET]}
    ).get_json()
    assert SECRET not in json.dumps(control)
    rx = issue()
    advance(client, rx["id"], "signed")
    state.dispatcher.drain()
    sent = sender.sent[0]
    t, v1s = parse_signature(sent.headers["X-Signature"])
    assert v1s == [
        compute_signature("whsec_new_secret_value", t, sent.body),
        compute_signature(SECRET, t, sent.body),
    ]
    client.post("/sandbox/control", json={"webhook_secret": "whsec_only_one"})
    advance(client, rx["id"], "dispensed")
    state.dispatcher.drain()
    t, v1s = parse_signature(sender.sent[1].headers["X-Signature"])
    assert v1s == [compute_signature("whsec_only_one", t, sender.sent[1].body)]


def test_no_webhook_url_means_no_events(make_app: Callable[..., Flask], sender: FakeSender) -> None:
    app = make_app(webhook_url=None)
    client = app.test_client()
    storm = client.post("/sandbox/storm", json={"count": 3}).get_json()
    assert len(storm["prescriptions"]) == 3
    assert get_state(app).stats_json()["webhooks"]["enqueued"] == 0


@pytest.mark.parametrize(("skip_rate", "expected"), [(0.0, "printed"), (1.0, "dispensed")])
def test_auto_mode_walks_new_prescriptions(
    client: FlaskClient,
    issue: Issue,
    state: SandboxState,
    clock: Any,
    skip_rate: float,
    expected: str,
) -> None:
    state.controls.update({"auto": True, "auto_delay_s": 5.0, "auto_skip_printed_rate": skip_rate})
    rx = issue()
    assert state.autopilot.tick() == 0
    clock.advance(5)
    assert state.autopilot.tick() == 1
    assert state.store.get(rx["id"]).status == "signed"
    clock.advance(5)
    state.autopilot.tick()
    assert state.store.get(rx["id"]).status == expected
    for _ in range(3):
        clock.advance(5)
        state.autopilot.tick()
    final = state.store.get(rx["id"])
    assert final.status == "dispensed"
    assert len(final.history) == (4 if expected == "printed" else 3)
    assert state.stats_json()["webhooks"]["enqueued"] == len(final.history) - 1


class _Receiver:
    """A real HTTP receiver: fails the first request, then records and accepts."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            self.calls += 1
            first = self.calls == 1
            if not first:
                self.received.append((request.get_data(), request.headers["X-Signature"]))
        response = Response("no" if first else "ok", status=500 if first else 200)
        return response(environ, start_response)


@pytest.fixture
def receiver() -> Iterator[tuple[str, _Receiver]]:
    target = _Receiver()
    server = make_server("127.0.0.1", 0, target, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}/webhooks/platform", target
    finally:
        server.shutdown()
        server.server_close()
        thread.join(2)


def test_real_delivery_by_worker_threads(
    receiver: tuple[str, _Receiver], issue_payload: Callable[..., dict[str, Any]]
) -> None:
    url, target = receiver
    app = create_app(
        SandboxConfig(
            seed=5,
            webhook_workers=2,
            controls=ControlValues(webhook_url=url, webhook_retry_base_s=0.05),
        )
    )
    state = get_state(app)
    try:
        client = app.test_client()
        state.controls.update({"webhook_hold": True})
        client.post("/sandbox/storm", json={"count": 2})
        held = state.stats_json()["webhooks"]["pending"]
        client.post("/sandbox/webhooks/release")
        assert state.dispatcher.wait_idle(5.0)
    finally:
        state.shutdown()
    webhooks = state.stats_json()["webhooks"]
    assert webhooks["delivered"] == held
    assert webhooks["failed_attempts"] == 1
    for body, header in target.received:
        t, v1s = parse_signature(header)
        assert v1s == [compute_signature(SECRET, t, body)]
