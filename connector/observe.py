"""What the connector tells an observer about its calls, without importing a metrics library.

The connector may import only the standard library, requests, cachetools and
marshmallow (``/work/shared/design.md``), so it cannot count into Prometheus
itself. Instead it calls an :class:`Observer` that the application passes in
(``app/services/connector_factory.py`` passes one that updates ``app.mechanisms.metrics``).
Every label value is drawn from a small fixed vocabulary, never from request
data: endpoint names are :data:`ENDPOINTS`, never URLs with ids in them.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ENDPOINTS", "NULL_OBSERVER", "NullObserver", "Observer", "call_outcome"]

# The endpoint names passed to Observer.platform_call (contract §1, §3, §4, §5).
ENDPOINTS = frozenset(
    {
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
)


def call_outcome(*, status: int | None = None, error_code: str | None = None) -> str:
    """The ``outcome`` label of one platform call.

    Args:
        status: the HTTP status when a response came back.
        error_code: the :class:`~connector.errors.TransportError` code when none
            did (``connect_timeout``, ``read_timeout``, ``connection_failed``,
            ``connection_error``, ``invalid_request``).

    Returns:
        ``"2xx"``, ``"3xx"``, ``"4xx"``, ``"5xx"`` by status class, else the
        error code, else ``"error"``.
    """
    if status is not None:
        return f"{max(1, min(status // 100, 5))}xx"
    return error_code or "error"


class Observer(Protocol):
    """Receives the connector's events; implementations must be thread-safe and must not raise."""

    def platform_call(self, endpoint: str, outcome: str, duration_s: float) -> None:
        """One HTTP call finished: ``endpoint`` from :data:`ENDPOINTS`, ``outcome`` from
        :func:`call_outcome`, ``duration_s`` wall seconds from send to response or error."""

    def token_refreshed(self, kind: str) -> None:
        """A token was obtained: ``kind`` is ``"access"`` (OAuth client token, §1a) or
        ``"session"`` (prescriber session, §1b)."""

    def login(self, kind: str) -> None:
        """A prescriber login was attempted: ``kind`` is ``"first"`` (no session seen for
        that prescriber in this process) or ``"renewal"``."""

    def login_refused(self) -> None:
        """The platform refused a prescriber login (``login_failed``, §1b)."""


class NullObserver:
    """The default :class:`Observer`: ignores everything."""

    def platform_call(self, endpoint: str, outcome: str, duration_s: float) -> None:
        """Ignore a finished call."""

    def token_refreshed(self, kind: str) -> None:
        """Ignore a token refresh."""

    def login(self, kind: str) -> None:
        """Ignore a login."""

    def login_refused(self) -> None:
        """Ignore a refused login."""


NULL_OBSERVER: Observer = NullObserver()
