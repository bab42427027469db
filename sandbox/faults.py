"""Fault injection for the platform API (contract §2: transient failures).

Which faults apply where:

- ``POST /prescriptions``: all of them.
- other session-protected API endpoints: rate limit (429), 503, 500, session_expired.
- never ``/oauth/token``, ``/prescriber/login``, ``/pharmacy/*`` or ``/sandbox/*``.

Each request rolls a seeded ``random.Random`` once per applicable fault; a
fault that fires is counted in ``/sandbox/stats`` ``faults_injected`` by name.
"""

from __future__ import annotations

import logging
import random
import socket
from typing import Any

from flask import Response, jsonify

from sandbox.config import ControlValues
from sandbox.control import Controls
from sandbox.stats import Stats

log = logging.getLogger(__name__)

RATE_LIMIT = "rate_limit"
FAIL_503 = "fail_503"
FAIL_500 = "fail_500"
SESSION_EXPIRED = "session_expired"
TIMEOUT_BEFORE_COMMIT = "timeout_before_commit"
COMMIT_THEN_DROP = "commit_then_drop"

_RATE_FIELD = {
    RATE_LIMIT: "rate_limit_rate",
    FAIL_503: "fail_503_rate",
    FAIL_500: "fail_500_rate",
    SESSION_EXPIRED: "session_expired_rate",
    TIMEOUT_BEFORE_COMMIT: "timeout_before_commit_rate",
    COMMIT_THEN_DROP: "commit_then_drop_rate",
}

CONNECTION_DROPPED_KEY = "sandbox.connection_dropped"
"""WSGI environ key set once a fault shut the connection: the server must not answer."""

GATEWAY_FAULTS = (RATE_LIMIT, FAIL_503, FAIL_500)
"""Faults answered before authentication, as a gateway in front of the platform would."""


class FaultInjector:
    """Decides, per request, whether a named fault fires."""

    def __init__(self, *, controls: Controls, rng: random.Random, stats: Stats) -> None:
        self._controls = controls
        self._rng = rng
        self._stats = stats

    def roll(self, name: str) -> bool:
        """True (and counted) when fault ``name`` fires for this request."""
        rate = getattr(self._controls.current(), _RATE_FIELD[name])
        if rate > 0 and self._rng.random() < rate:
            self._stats.count_fault(name)
            return True
        return False

    def gateway_fault(self) -> str | None:
        """The first of rate_limit, fail_503, fail_500 that fires, or None."""
        for name in GATEWAY_FAULTS:
            if self.roll(name):
                return name
        return None


def gateway_fault_response(name: str, controls: ControlValues) -> Response:
    """The HTTP response for a gateway fault: 429 (+Retry-After), 503 (HTML) or 500 (JSON)."""
    if name == RATE_LIMIT:
        response = jsonify(
            {"success": False, "code": "rate_limited", "message": "Too Many Attempts."}
        )
        response.status_code = 429
        response.headers["Retry-After"] = str(controls.retry_after_s)
        return response
    if name == FAIL_503:
        return Response(
            "<html><head><title>503 Service Temporarily Unavailable</title></head>"
            "<body><h1>503 Service Temporarily Unavailable</h1></body></html>",
            status=503,
            mimetype="text/html",
        )
    response = jsonify({"success": False, "message": "Server Error"})
    response.status_code = 500
    return response


def gateway_timeout_response() -> Response:
    """A 504 as a proxy sends it when the platform did not answer in time."""
    return Response(
        "<html><head><title>504 Gateway Time-out</title></head>"
        "<body><h1>504 Gateway Time-out</h1></body></html>",
        status=504,
        mimetype="text/html",
    )


def drop_connection(environ: dict[str, Any]) -> bool:
    """Shut the client's TCP connection down without a response, if the server allows.

    Uses ``environ["werkzeug.socket"]`` (Werkzeug's development server). The
    client sees the connection closed with no status line (``requests`` raises
    ``ConnectionError``). Sets ``environ[CONNECTION_DROPPED_KEY]`` so that a
    keep-alive server (``sandbox.http_server``) writes nothing more on it.
    Returns False when there is no socket to drop (the Flask test client, other
    WSGI servers).
    """
    sock = environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):
        return False
    environ[CONNECTION_DROPPED_KEY] = True
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        log.debug("connection already gone while dropping it")
    return True
