"""The patient page and the support page: server-rendered HTML, plain JavaScript, no build step.

The pages hold no data of their own: their scripts call ``/api/v1`` with the
caller's bearer token, so every rule of the API (roles, a patient's own data
only) applies to them unchanged.

Where the token comes from:

- development and test (``ERX_ENV`` not ``production``): the page is rendered
  with a token minted by :func:`app.identity.mint_token`, the logic behind
  ``flask --app app tokens mint``, for ``?patient=<external ref>`` (default
  ``pt-0001``) or, on ``/support``, for a support user;
- production: nothing is minted. The hosting app passes the identity
  provider's access token, either as ``sessionStorage["erx.token"]`` before it
  loads the page or in the URL fragment ``#access_token=<JWT>`` (a fragment
  never reaches a server or its logs); the page moves it to
  ``sessionStorage`` and removes it from the address bar.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, render_template, request

from app.extensions import services
from app.identity import mint_token

bp = Blueprint("pages", __name__)
_EXTERNAL_REF = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DEV_SUPPORT_SUBJECT = "support-dev"
DEV_TOKEN_TTL_S = 8 * 3600


def _dev_token(*, role: str, subject: str) -> str | None:
    """A development token for the page, or None in production (the IdP provides it)."""
    settings = services().settings
    if settings.env == "production":
        return None
    return mint_token(settings, role=role, subject=subject, ttl_s=DEV_TOKEN_TTL_S)


@bp.get("/")
def patient_page() -> str:
    """The patient's page: region, pharmacy search, send, live timeline."""
    subject = request.args.get("patient", "pt-0001")
    if not _EXTERNAL_REF.match(subject):
        subject = "pt-0001"
    return render_template("patient.html", token=_dev_token(role="patient", subject=subject))


@bp.get("/support")
def support_page() -> str:
    """The support page: any prescription's timeline, and void."""
    return render_template("support.html", token=_dev_token(role="support", subject=DEV_SUPPORT_SUBJECT))


def init_app(app: Flask) -> None:
    """Register the page blueprint on ``app``."""
    app.register_blueprint(bp)
