"""Test doubles for the connector's auth tests: token and login endpoints with counters (the clock is tests.support.FakeClock)."""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field

import requests
import responses

from connector import PrescriberCredentials

BASE = "https://platform.test/api"
TOKEN_URL = f"{BASE}/oauth/token"
LOGIN_URL = f"{BASE}/prescriber/login"
RX_URL = f"{BASE}/prescriptions"
CLIENT_SECRET = "cs-very-secret-value"


@dataclass
class FakePlatform:
    """Token and login endpoints with counters and switchable behaviour."""

    rsps: responses.RequestsMock
    token_expires_in: object = 3600
    session_expires_in: object = 1800
    token_status: int = 200
    bad_passwords: set[str] = field(default_factory=set)
    token_gate: threading.Event | None = None
    token_calls: int = 0
    logins: dict[str, int] = field(default_factory=dict)
    issued_access: list[str] = field(default_factory=list)
    issued_sessions: dict[str, str] = field(default_factory=dict)  # session token -> email
    expired_access: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: itertools.count = field(default_factory=itertools.count)

    def install(self) -> None:
        self.rsps.add_callback(responses.POST, TOKEN_URL, callback=self._token)
        self.rsps.add_callback(responses.POST, LOGIN_URL, callback=self._login)

    def _token(self, request: requests.PreparedRequest) -> tuple[int, dict, str]:
        if self.token_gate is not None:
            self.token_gate.wait(timeout=5)
        with self._lock:
            self.token_calls += 1
            if self.token_status != 200:
                return (self.token_status, {}, json.dumps({"error": "invalid_client"}))
            token = f"at-{next(self._seq)}"
            self.issued_access.append(token)
        body = {"access_token": token, "token_type": "Bearer", "scope": "prescriptions"}
        if self.token_expires_in is not None:
            body["expires_in"] = self.token_expires_in
        return (200, {}, json.dumps(body))

    def _login(self, request: requests.PreparedRequest) -> tuple[int, dict, str]:
        auth = request.headers.get("Authorization", "")
        creds = json.loads(request.body)
        with self._lock:
            if not auth.startswith("Bearer at-") or auth[7:] in self.expired_access:
                return (401, {}, json.dumps({"success": False, "code": "access_token_expired"}))
            self.logins[creds["email"]] = self.logins.get(creds["email"], 0) + 1
            if creds["password"] in self.bad_passwords:
                return (200, {}, json.dumps({"success": False, "message": "Invalid credentials"}))
            token = f"st-{creds['email'].split('@')[0]}-{next(self._seq)}"
            self.issued_sessions[token] = creds["email"]
        data = {"session_token": token, "prescriber": {"id": 5531, "clinic_ids": [994]}}
        if self.session_expires_in is not None:
            data["expires_in"] = self.session_expires_in
        return (200, {}, json.dumps({"success": True, "data": data}))

    def login_count(self, prescriber: PrescriberCredentials) -> int:
        return self.logins.get(prescriber.email, 0)


def make_prescriber(key: str = "5531", name: str = "dr.jones") -> PrescriberCredentials:
    return PrescriberCredentials(
        key=key, email=f"{name}@example.test", password=f"pw-{name}-xyzzy", secure_pin="918273"
    )


def success_issue_body(token: str = "SRXC49F3D4F66A7", ref: str = "rx-000042") -> dict:
    return {
        "success": True,
        "message": "Prescription issued",
        "data": {
            "prescription": {
                "id": token,
                "status": "issued",
                "client_ref_id": ref,
                "created_at": "2026-11-20T10:15:02Z",
            }
        },
    }
