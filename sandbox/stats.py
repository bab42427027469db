"""Request counters behind ``GET /sandbox/stats`` (webhook counters live in the dispatcher)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Stats:
    """Thread-safe counters of what the connector did to the platform.

    - ``token_requests``: every ``POST /oauth/token``.
    - ``logins`` / ``logins_by_email``: successful prescriber logins.
    - ``login_refusals_by_email``: prescriber logins refused ("Invalid
      credentials"), by the email tried: what could lock a real account.
    - ``issue_attempts``: every ``POST /prescriptions`` that reached the sandbox.
    - ``prescriptions_issued`` / ``issued_by_client_ref``: prescriptions created
      through the API (including ones whose response was then dropped; storms
      are not counted).
    - ``faults_injected``: injected faults by name.
    - ``connections_accepted``: TCP connections accepted by ``python -m sandbox``
      (a client that keeps its connection alive adds one, not one per request;
      always 0 under the Flask test client).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._token_requests = 0
            self._logins = 0
            self._logins_by_email: Counter[str] = Counter()
            self._login_refusals_by_email: Counter[str] = Counter()
            self._issue_attempts = 0
            self._issued = 0
            self._issued_by_ref: Counter[str] = Counter()
            self._faults: Counter[str] = Counter()
            self._connections = 0

    def count_token_request(self) -> None:
        with self._lock:
            self._token_requests += 1

    def count_login(self, email: str) -> None:
        with self._lock:
            self._logins += 1
            self._logins_by_email[email.lower()] += 1

    def count_login_refusal(self, email: str) -> None:
        with self._lock:
            self._login_refusals_by_email[email.lower()] += 1

    def count_issue_attempt(self) -> None:
        with self._lock:
            self._issue_attempts += 1

    def count_issued(self, client_ref_id: str | None) -> None:
        with self._lock:
            self._issued += 1
            if client_ref_id is not None:
                self._issued_by_ref[client_ref_id] += 1

    def count_fault(self, name: str) -> None:
        with self._lock:
            self._faults[name] += 1

    def count_connection(self) -> None:
        with self._lock:
            self._connections += 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as the JSON shape of ``/sandbox/stats`` (without ``webhooks``)."""
        with self._lock:
            return {
                "token_requests": self._token_requests,
                "logins": self._logins,
                "logins_by_email": dict(self._logins_by_email),
                "login_refusals_by_email": dict(self._login_refusals_by_email),
                "prescriptions_issued": self._issued,
                "issued_by_client_ref": dict(self._issued_by_ref),
                "issue_attempts": self._issue_attempts,
                "faults_injected": dict(self._faults),
                "connections_accepted": self._connections,
            }
