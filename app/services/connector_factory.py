"""The connector factory: builds the platform client from service settings (the only place that does)."""

from __future__ import annotations

from app.config import Settings
from connector import ConnectorClient, ConnectorSettings


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
    """Return a :class:`ConnectorClient` (one per process: it owns the token cache)."""
    return ConnectorClient(connector_settings(settings))
