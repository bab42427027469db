"""The connector factory: builds the platform client from service settings (the only place that does).

The client gets a :class:`MetricsObserver`, so the connector's calls, token
refreshes and logins are counted in :mod:`app.mechanisms.metrics` while ``connector/``
itself imports no metrics library (``/work/shared/design.md``).
"""

from __future__ import annotations

from app.foundation.config import Settings
from app.mechanisms import metrics
from connector import ConnectorClient, ConnectorSettings


class MetricsObserver:
    """A :class:`connector.observe.Observer` that updates :mod:`app.mechanisms.metrics`.

    ``erx_platform_calls_total{endpoint,outcome}`` and
    ``erx_platform_call_duration_seconds{endpoint}`` (seconds) per call;
    ``erx_token_refreshes_total{kind}`` (``access``/``session``);
    ``erx_logins_total{kind}`` (``first``/``renewal``); ``erx_logins_refused_total``.
    """

    def platform_call(self, endpoint: str, outcome: str, duration_s: float) -> None:
        """Count one platform call and observe its duration in seconds."""
        metrics.PLATFORM_CALLS.labels(endpoint=endpoint, outcome=outcome).inc()
        metrics.PLATFORM_CALL_DURATION.labels(endpoint=endpoint).observe(duration_s)

    def token_refreshed(self, kind: str) -> None:
        """Count one token obtained (``access`` or ``session``)."""
        metrics.TOKEN_REFRESHES.labels(kind=kind).inc()

    def login(self, kind: str) -> None:
        """Count one prescriber login attempt (``first`` or ``renewal``)."""
        metrics.LOGINS.labels(kind=kind).inc()

    def login_refused(self) -> None:
        """Count one login the platform refused (login_failed)."""
        metrics.LOGINS_REFUSED.inc()


def connector_settings(settings: Settings) -> ConnectorSettings:
    """Map service :class:`Settings` to the connector's own frozen settings."""
    return ConnectorSettings(
        base_url=settings.erx_base_url,
        client_id=settings.erx_client_id,
        client_secret=settings.erx_client_secret,
        connect_timeout_s=settings.erx_connect_timeout_s,
        read_timeout_s=settings.erx_read_timeout_s,
    )


def make_client(settings: Settings) -> ConnectorClient:
    """Return a :class:`ConnectorClient` counting into app.mechanisms.metrics.

    One per process: it owns the token cache.
    """
    return ConnectorClient(connector_settings(settings), observer=MetricsObserver())
