"""Rate limits on pharmacy search, send and failed token verification (Flask-Limiter).

Limits (settings in ``app/foundation/config.py``, documented in the README, "Rate limits"):

- ``RATE_LIMIT_SEARCH`` on ``GET /api/v1/pharmacies``, per verified subject and, separately,
  per client address;
- ``RATE_LIMIT_SEND`` on ``POST /api/v1/prescriptions/<id>/send``, the same two ways;
- ``RATE_LIMIT_AUTH_FAILURES``: answers with 401 ``invalid_token`` per client address, over
  every bearer endpoint together; once spent, that address gets 429 until the window ends,
  whatever token it sends. Not per subject: a refused token's subject is unverified, and
  counting it would let anyone lock a patient out by sending bad tokens in their name.

Over a limit the caller gets 429 ``too_many_requests`` in the one JSON shape (an
OperationOutcome under ``/fhir``) with ``Retry-After`` in seconds (RFC 9110 section 10.2.3).
Counters live in ``RATE_LIMIT_STORAGE_URL``: ``memory://`` (development, tests: per process)
or ``redis://host:port/db`` (production: shared by every worker and pod). When the storage
cannot be reached the request is let through and the error logged: an outage of the
counter store must not take the API down with it.

The client address is ``request.remote_addr`` (the proxy-corrected one when
``TRUSTED_PROXIES`` > 0), as in the access audit.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from flask_limiter import Limiter

from app.foundation.config import Settings
from app.interfaces.identity import request_identity

log = logging.getLogger("app.interfaces.rate_limits")

_EXTENSION = "erx_rate_limiter"
# Endpoints (Flask endpoint names) and the setting that limits each.
SEARCH_ENDPOINTS = ("directory_api.pharmacies",)
SEND_ENDPOINTS = ("api.send",)
# Paths that carry no bearer token: the webhook receiver (HMAC), probes, metrics, pages' assets.
_UNLIMITED_PREFIXES = ("/webhooks/", "/healthz", "/readyz", "/metrics", "/static/")


def client_address() -> str:
    """The rate-limit key of the caller's address: ``addr:<ip>`` (``addr:unknown`` without one)."""
    return f"addr:{request.remote_addr or 'unknown'}"


def verified_subject() -> str:
    """The rate-limit key of the verified caller: ``sub:<role>:<subject>``.

    Only called when :func:`_no_verified_identity` is False (see ``exempt_when``).
    """
    identity = request_identity()
    return f"sub:{identity.role}:{identity.subject}" if identity else "sub:-"


def _no_verified_identity() -> bool:
    return request_identity() is None


def _refused_bearer_token(response: Response) -> bool:
    """True for a 401 answered to a bearer token (not the webhook receiver's HMAC 401s)."""
    return (
        response.status_code == 401
        and "bearer" in response.headers.get("WWW-Authenticate", "").lower()
    )


def _unlimited_path() -> bool:
    return request.path.startswith(_UNLIMITED_PREFIXES)


def init_app(app: Flask, settings: Settings) -> Limiter:
    """Install the limits of the module docstring on ``app`` (after its blueprints).

    Returns the :class:`flask_limiter.Limiter` (also in ``app.mechanisms.runtime``). Raises
    ``KeyError`` when an endpoint named here is not registered (a renamed view).
    """
    limiter = Limiter(
        client_address,
        app=app,
        storage_uri=settings.rate_limit_storage_url,
        strategy="fixed-window",
        headers_enabled=True,
        swallow_errors=True,
        key_prefix="erx",
        application_limits=[settings.rate_limit_auth_failures],
        application_limits_deduct_when=_refused_bearer_token,
    )
    limiter.request_filter(_unlimited_path)
    for endpoints, value, scope in (
        (SEARCH_ENDPOINTS, settings.rate_limit_search, "search"),
        (SEND_ENDPOINTS, settings.rate_limit_send, "send"),
    ):
        for endpoint in endpoints:
            view = app.view_functions[endpoint]
            view = limiter.limit(value, key_func=client_address, scope=f"{scope}-addr")(view)
            view = limiter.limit(
                value,
                key_func=verified_subject,
                scope=f"{scope}-sub",
                exempt_when=_no_verified_identity,
            )(view)
            app.view_functions[endpoint] = view
    if settings.env == "production" and settings.rate_limit_storage_url.startswith("memory://"):
        log.warning(
            "RATE_LIMIT_STORAGE_URL is memory://: each process counts alone (set a redis:// URL)"
        )
    app.extensions[_EXTENSION] = limiter
    return limiter
