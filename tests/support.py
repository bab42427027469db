"""Test support in one place: the fake clock and the fake platform every test module uses.

Fixtures (``app``, ``client``, ``runner``, the seeded database) are in
``tests/conftest.py``; the process stack (sandbox, service, workers as real
processes) is ``scripts.stack``, shared with the demo and the benchmarks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

PRESCRIBER_SECRETS = {
    "dr.jones@example.test": ("sandbox-jones-pass", "481516"),
    "dr.patel@example.test": ("sandbox-patel-pass", "234223"),
}


class FakeClock:
    """One fake time behind every clock the code takes, moving only when a test says so.

    - ``clock()`` / ``clock.now``: aware UTC datetime (the ``now=`` parameters);
    - ``clock.unix_time()``: the same instant as Unix seconds (``Services.unix_time``);
    - ``clock.monotonic()``: seconds since the clock was made, plus 1000
      (the connector's ``monotonic=``).
    """

    MONOTONIC_START = 1000.0

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)
        self._origin = self.now

    def __call__(self) -> datetime:
        return self.now

    def unix_time(self) -> float:
        return self.now.timestamp()

    def monotonic(self) -> float:
        return self.MONOTONIC_START + (self.now - self._origin).total_seconds()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def advance_to(self, when: datetime) -> None:
        """Move to ``when``; never backwards."""
        self.now = max(self.now, when)

    def set_unix(self, seconds: float) -> None:
        """Jump to Unix time ``seconds`` (either direction: signature tolerance tests need both)."""
        self.now = datetime.fromtimestamp(seconds, UTC)

    def set_monotonic(self, seconds: float) -> None:
        """Jump to monotonic reading ``seconds``."""
        self.now = self._origin + timedelta(seconds=seconds - self.MONOTONIC_START)


BASE = "http://platform.test"
CLIENT_ID = "erx-test-client"
CLIENT_SECRET = "cs-platform-client-secret-7731"
ACCESS_TOKEN = "at-access-token-5b1f0e"
SESSION_TOKEN = "st-session-token-9c2d4a"
RX_URL = f"{BASE}/prescriptions"
INVALID_DATA = {
    "success": False,
    "message": "The given data was invalid.",
    "errors": {"medicines.0.qty": ["The qty field is required."]},
}
UNAUTHORIZED_CLINIC = {
    "success": False,
    "message": "You trying to issue prescription to unauthorized clinic.",
}

Answer = tuple[int, dict[str, str], Any] | Exception


class FakePlatform:
    """Contract §1 auth, §4 issue and lookup. POST answers are scripted, else success."""

    def __init__(self, rsps: responses.RequestsMock) -> None:
        self.rsps = rsps
        self.post_script: list[Answer] = []
        self.found: dict[str, list[dict[str, Any]]] = {}
        self.posts: list[dict[str, Any]] = []
        self.post_headers: list[dict[str, str]] = []
        self.lookups: list[str] = []
        self.on_post: Callable[[], None] | None = None
        self._seq = 0
        rsps.add_callback(responses.POST, f"{BASE}/oauth/token", callback=self._token)
        rsps.add_callback(responses.POST, f"{BASE}/prescriber/login", callback=self._login)
        rsps.add_callback(responses.POST, RX_URL, callback=self._issue)
        rsps.add_callback(responses.GET, RX_URL, callback=self._lookup)
        rsps.add_callback(responses.GET, re.compile(re.escape(RX_URL) + r"/[^/?]+$"), callback=self._read)
        rsps.add_callback(responses.GET, f"{BASE}/clinics", callback=self._clinics)
        self.clinics: list[dict[str, Any]] = [{"id": 994, "display_id": "201334", "name": "Harley Street Clinic"}]

    @staticmethod
    def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body)

    def _token(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        form = parse_qs(str(request.body))
        if form.get("client_secret") != [CLIENT_SECRET]:
            return self._json(401, {"error": "invalid_client", "error_description": "bad"})
        return self._json(
            200,
            {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 3600, "scope": "prescriptions"},
        )

    def _login(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        if request.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
            return self._json(401, {"success": False, "code": "access_token_expired"})
        creds = json.loads(request.body or b"{}")
        password, _pin = PRESCRIBER_SECRETS.get(creds.get("email"), ("", ""))
        if not password or creds.get("password") != password:
            return self._json(200, {"success": False, "message": "Invalid credentials"})
        return self._json(
            200,
            {
                "success": True,
                "data": {
                    "session_token": SESSION_TOKEN,
                    "expires_in": 1800,
                    "prescriber": {"id": 5531, "clinic_ids": [994]},
                },
            },
        )

    def _authorised(self, request: requests.PreparedRequest) -> bool:
        return (
            request.headers.get("Authorization") == f"Bearer {ACCESS_TOKEN}"
            and request.headers.get("X-Session-Token") == SESSION_TOKEN
        )

    def _issue(self, request: requests.PreparedRequest) -> Any:
        if not self._authorised(request):
            return self._json(401, {"success": False, "code": "access_token_expired"})
        payload = json.loads(request.body or b"{}")
        self.posts.append(payload)
        self.post_headers.append(dict(request.headers))
        if self.on_post is not None:
            self.on_post()
        if self.post_script:
            answer = self.post_script.pop(0)
            if isinstance(answer, Exception):
                return answer
            status, headers, body = answer
            return self._json(status, body, headers)
        self._seq += 1
        token = f"SRXTOKEN{self._seq:06d}"
        return self._json(
            200,
            {
                "success": True,
                "message": "Prescription issued",
                "data": {
                    "prescription": {
                        "id": token,
                        "status": "issued",
                        "client_ref_id": payload.get("client_ref_id"),
                        "created_at": "2026-11-20T10:15:02Z",
                    }
                },
            },
        )

    def _lookup(self, request: requests.PreparedRequest) -> Any:
        if not self._authorised(request):
            return self._json(401, {"success": False, "code": "access_token_expired"})
        ref = parse_qs(urlsplit(str(request.url)).query).get("client_ref_id", [""])[0]
        self.lookups.append(ref)
        return self._json(200, {"success": True, "data": {"prescriptions": self.found.get(ref, [])}})

    def _read(self, request: requests.PreparedRequest) -> Any:
        if not self._authorised(request):
            return self._json(401, {"success": False, "code": "access_token_expired"})
        token = urlsplit(str(request.url)).path.rsplit("/", 1)[-1]
        for items in self.found.values():
            for item in items:
                if item["id"] == token:
                    return self._json(200, {"success": True, "data": {"prescription": item}})
        return self._json(200, {"success": False, "code": "not_found", "message": "Prescription not found."})

    def _clinics(self, request: requests.PreparedRequest) -> Any:
        if not self._authorised(request):
            return self._json(401, {"success": False, "code": "access_token_expired"})
        return self._json(200, {"success": True, "data": {"clinics": self.clinics}})

    def holds(self, ref: str, token: str) -> None:
        """The platform has a prescription for ``ref`` (e.g. committed before a lost reply)."""
        self.found.setdefault(ref, []).append(
            {"id": token, "status": "issued", "client_ref_id": ref, "created_at": "2026-11-20T10:15:02Z"}
        )


