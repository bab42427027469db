"""The patient page and the support page: server-rendered HTML, plain JavaScript, no build step.

The pages hold no data of their own: their scripts call ``/api/v1`` with the
caller's bearer token, so every rule of the API (roles, a patient's own data
only) applies to them unchanged.

Where the token comes from:

- development and test (``ERX_ENV`` not ``production``): the page is rendered
  with a token minted by :func:`app.interfaces.identity.mint_token`, the logic behind
  ``flask --app app tokens mint``, for ``?patient=<external ref>`` (default
  ``pt-0001``) or, on ``/support``, for a support user. It lives
  :data:`PAGE_TOKEN_TTL_S` (15 minutes); the page asks ``GET /page-token``
  for a fresh one before it expires;
- production: nothing is minted (``/page-token`` answers 404). The hosting app
  passes the identity provider's access token, either as
  ``sessionStorage["erx.token"]`` before it loads the page (and refreshes it
  there) or in the URL fragment ``#access_token=<JWT>`` (a fragment never
  reaches a server or its logs); the page moves it to ``sessionStorage`` and
  removes it from the address bar.

Every page and static file answers with a strict Content-Security-Policy (no
inline script or style: everything is a static file), ``nosniff``,
``Referrer-Policy: no-referrer`` and ``frame-ancestors 'none'`` (OWASP Secure
Headers Project; CSP Level 3, W3C).
"""

from __future__ import annotations

import re

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    render_template,
    request,
    url_for,
)

from app.interfaces.errors import ApiError
from app.interfaces.identity import mint_token
from app.mechanisms.runtime import runtime

bp = Blueprint("pages", __name__)
_EXTERNAL_REF = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEFAULT_PATIENT = "pt-0001"
DEV_SUPPORT_SUBJECT = "support-dev"
PAGE_TOKEN_TTL_S = 15 * 60
"""Lifetime of a page-minted token, seconds: short, because it sits in the page."""

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_HEADED_ENDPOINTS = frozenset({"static"})


def page_subject(raw: str | None) -> str:
    """The patient subject the development page mints for: ``raw`` if it is a whole
    external ref (``[A-Za-z0-9._-]{1,64}``, a full match: no trailing newline), else
    :data:`DEFAULT_PATIENT`."""
    if raw is not None and _EXTERNAL_REF.fullmatch(raw):
        return raw
    return DEFAULT_PATIENT


def _dev_token(*, role: str, subject: str) -> str | None:
    """A development token for the page, or None in production (the IdP provides it)."""
    settings = runtime().settings
    if settings.env == "production":
        return None
    return mint_token(settings, role=role, subject=subject, ttl_s=PAGE_TOKEN_TTL_S)


def _render(template: str, *, role: str, subject: str) -> str:
    token = _dev_token(role=role, subject=subject)
    return render_template(
        template,
        token=token,
        token_ttl_s=PAGE_TOKEN_TTL_S if token else 0,
        refresh_url=url_for("pages.page_token", role=role, patient=subject) if token else "",
    )


@bp.get("/")
def patient_page() -> str:
    """The patient's page: region, pharmacy search, send, live timeline."""
    return _render(
        "patient.html", role="patient", subject=page_subject(request.args.get("patient"))
    )


@bp.get("/support")
def support_page() -> str:
    """The support page: find a prescription by reference, token or id; its timeline; void."""
    return _render("support.html", role="support", subject=DEV_SUPPORT_SUBJECT)


@bp.get("/page-token")
def page_token() -> tuple[Response, int]:
    """A fresh development token for a page: ``{"token", "expires_in"}`` (seconds).

    ``role`` is ``patient`` (for ``patient``, see :func:`page_subject`) or
    ``support``. Answers 404 ``not_found`` in production, where tokens come from
    the identity provider, and 422 for another role.
    """
    if runtime().settings.env == "production":
        raise ApiError(404, "not_found", "Page tokens are not minted in production.")
    role = request.args.get("role", "patient")
    if role == "patient":
        subject = page_subject(request.args.get("patient"))
    elif role == "support":
        subject = DEV_SUPPORT_SUBJECT
    else:
        raise ApiError(
            422, "validation_error", "Invalid role.", {"role": ["Use patient or support."]}
        )
    token = _dev_token(role=role, subject=subject)
    response = jsonify({"token": token, "expires_in": PAGE_TOKEN_TTL_S})
    response.headers["Cache-Control"] = "no-store"
    return response, 200


@bp.get("/favicon.ico")
def favicon() -> Response:
    """The site icon (browsers ask for it unprompted; a 404 would fill the logs)."""
    response = current_app.send_static_file("favicon.ico")
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


def _secure_headers(response: Response) -> Response:
    """Add :data:`SECURITY_HEADERS` to the pages' and static files' answers."""
    if request.blueprint == bp.name or request.endpoint in _HEADED_ENDPOINTS:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """Register the page blueprint on ``app`` and its security headers."""
    app.register_blueprint(bp)
    app.after_request(_secure_headers)
