"""Authentication endpoints (contract §1a, §1b): no faults are injected here."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, jsonify, request

from sandbox import directory
from sandbox.responses import access_token_expired, bearer_token, fail, json_body, ok
from sandbox.state import get_state

blueprint = Blueprint("auth", __name__)


def _oauth_error(error: str, description: str, status: int) -> Response:
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    return response


def _expires_in(ttl_s: float) -> float | int:
    return int(ttl_s) if float(ttl_s).is_integer() else ttl_s


@blueprint.post("/oauth/token")
def issue_token() -> Response:
    """Client-credentials grant (§1a), form-encoded; HTTP Basic client auth also accepted.

    200 ``{"access_token", "token_type": "Bearer", "expires_in" (seconds, unless
    omit_expires_in), "scope"}``; 401 ``invalid_client``; 400 for a wrong grant or scope.
    """
    state = get_state()
    state.stats.count_token_request()
    client = directory.OAUTH_CLIENT
    client_id = request.form.get("client_id", "")
    client_secret = request.form.get("client_secret", "")
    if request.authorization is not None and request.authorization.type == "basic":
        client_id = request.authorization.username or ""
        client_secret = request.authorization.password or ""
    if not (
        hmac.compare_digest(client_id.encode(), client.client_id.encode())
        and hmac.compare_digest(client_secret.encode(), client.client_secret.encode())
    ):
        return _oauth_error("invalid_client", "Client authentication failed.", 401)
    if request.form.get("grant_type") != "client_credentials":
        return _oauth_error("unsupported_grant_type", "Only client_credentials is supported.", 400)
    scope = request.form.get("scope") or client.scope
    if scope != client.scope:
        return _oauth_error("invalid_scope", "The requested scope is invalid.", 400)
    controls = state.controls.current()
    token = state.store.issue_access_token(now=state.clock(), ttl_s=controls.token_ttl_s)
    body: dict[str, object] = {"access_token": token, "token_type": "Bearer"}
    if not controls.omit_expires_in:
        body["expires_in"] = _expires_in(controls.token_ttl_s)
    body["scope"] = scope
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.post("/prescriber/login")
def prescriber_login() -> Response:
    """Prescriber login (§1b): needs a valid access token (else 401).

    200 ``{"success": true, "data": {"session_token", "expires_in", "prescriber":
    {"id", "clinic_ids"}}}`` or 200 ``{"success": false, "message": "Invalid credentials"}``.
    Earlier sessions stay valid.
    """
    state = get_state()
    now = state.clock()
    if not state.store.access_token_valid(bearer_token(), now=now):
        return access_token_expired()
    body = json_body()
    email = body.get("email")
    password = body.get("password")
    prescriber = directory.prescriber_by_email(email) if isinstance(email, str) else None
    if (
        prescriber is None
        or not isinstance(password, str)
        or not hmac.compare_digest(password.encode(), prescriber.password.encode())
    ):
        if isinstance(email, str):
            state.stats.count_login_refusal(email)
        return fail("Invalid credentials")
    controls = state.controls.current()
    session = state.store.open_session(prescriber.id, now=now, ttl_s=controls.session_ttl_s)
    state.stats.count_login(prescriber.email)
    return ok(
        {
            "session_token": session,
            "expires_in": _expires_in(controls.session_ttl_s),
            "prescriber": {"id": prescriber.id, "clinic_ids": list(prescriber.clinic_ids)},
        }
    )
