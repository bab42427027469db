"""Fixtures for the sandbox tests: a fake clock, a fake webhook sender, a Flask test client."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sandbox import ControlValues, SandboxConfig, SandboxState, create_app, get_state
from sandbox.clock import FakeClock

SECRET = "whsec_sandbox_test_secret"
RECEIVER_URL = "http://receiver.test/webhooks/platform"

VALID_ISSUE: dict[str, Any] = {
    "action": "issueToContact",
    "clinic_id": 994,
    "contact_id": 17,
    "secure_pin": "481516",
    "client_ref_id": "rx-000042",
    "notify": True,
    "patient": {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "gender": "female",
        "birth_day": "07",
        "birth_month": "03",
        "birth_year": "1984",
        "email": "ada@example.test",
        "phone": "447700900123",
        "address_ln1": "1 Test Street",
        "address_ln2": "",
        "city": "London",
        "post_code": "W1G 9PF",
        "country": "United Kingdom",
    },
    "medicines": [
        {
            "vpid": "39929811000001101",
            "description": "Semaglutide 250micrograms/0.19ml solution for injection 1.5ml "
            "pre-filled disposable devices",
            "qty": "4",
            "directions": "Inject 0.25mg once weekly",
        }
    ],
}


@dataclass(frozen=True)
class SentWebhook:
    url: str
    body: bytes
    headers: dict[str, str]
    timeout_s: float


class FakeSender:
    """Captures deliveries; answers the queued statuses (or raises them), then 200."""

    def __init__(self) -> None:
        self.sent: list[SentWebhook] = []
        self.replies: list[int | Exception] = []

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        self.sent.append(SentWebhook(url, body, dict(headers), timeout_s))
        reply = self.replies.pop(0) if self.replies else 200
        if isinstance(reply, Exception):
            raise reply
        return reply


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


@pytest.fixture
def make_app(clock: FakeClock, sender: FakeSender) -> Callable[..., Flask]:
    """``make_app(**control_overrides)``: an app with no background threads."""

    def build(**controls: Any) -> Flask:
        values = {"webhook_url": RECEIVER_URL, "webhook_secrets": (SECRET,), **controls}
        config = SandboxConfig(seed=1234, background=False, controls=ControlValues(**values))
        return create_app(
            config,
            clock=clock,
            sleep=clock.sleep,
            webhook_sender=sender,
            jitter=lambda delay, rng: delay,
        )

    return build


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def state(app: Flask) -> SandboxState:
    return get_state(app)


def get_access_token(client: FlaskClient) -> str:
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "erx-sandbox-client",
            "client_secret": "erx-sandbox-secret",
            "scope": "prescriptions",
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["access_token"]


def login(
    client: FlaskClient,
    access_token: str,
    email: str = "dr.jones@example.test",
    password: str = "sandbox-jones-pass",
) -> str:
    response = client.post(
        "/prescriber/login",
        json={"email": email, "password": password},
        headers={"Authorization": f"Bearer {access_token}"},
    )
    body = response.get_json()
    assert body["success"] is True, body
    return body["data"]["session_token"]


@pytest.fixture
def auth(client: FlaskClient) -> dict[str, str]:
    """Headers carrying a fresh access token and a session for dr.jones."""
    token = get_access_token(client)
    session = login(client, token)
    return {"Authorization": f"Bearer {token}", "X-Session-Token": session}


@pytest.fixture
def issue_payload() -> Callable[..., dict[str, Any]]:
    """``issue_payload(**top_level_overrides)``: a deep copy of a valid §4 body."""

    def build(**overrides: Any) -> dict[str, Any]:
        body = copy.deepcopy(VALID_ISSUE)
        body.update(overrides)
        return body

    return build


@pytest.fixture
def issue(
    client: FlaskClient, auth: dict[str, str], issue_payload: Callable[..., dict[str, Any]]
) -> Callable[..., dict[str, Any]]:
    """``issue(**overrides)``: POST /prescriptions and return the created prescription summary."""

    def send(**overrides: Any) -> dict[str, Any]:
        body = client.post(
            "/prescriptions", json=issue_payload(**overrides), headers=auth
        ).get_json()
        assert body["success"] is True, body
        return body["data"]["prescription"]

    return send


@pytest.fixture
def new_access_token(client: FlaskClient) -> Callable[[], str]:
    """``new_access_token()``: POST /oauth/token with the seed client."""
    return lambda: get_access_token(client)


@pytest.fixture
def new_session(client: FlaskClient) -> Callable[..., str]:
    """``new_session(access_token, email=..., password=...)``: a prescriber login."""
    return lambda token, **kw: login(client, token, **kw)
