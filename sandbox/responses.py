"""The platform's response envelope (contract §2) and request header helpers."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request


def ok(data: dict[str, Any], message: str | None = None) -> Response:
    """HTTP 200 ``{"success": true, ["message": ...,] "data": {...}}``."""
    body: dict[str, Any] = {"success": True}
    if message is not None:
        body["message"] = message
    body["data"] = data
    return jsonify(body)


def fail(
    message: str | None = None,
    *,
    code: str | None = None,
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
) -> Response:
    """``{"success": false, ["code"], ["message"], ["errors"]}``; HTTP 200 unless ``status``.

    Business failures are HTTP 200 on this platform (§2).
    """
    body: dict[str, Any] = {"success": False}
    if code is not None:
        body["code"] = code
    if message is not None:
        body["message"] = message
    if errors is not None:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    return response


def access_token_expired() -> Response:
    """HTTP 401 ``{"success": false, "code": "access_token_expired"}`` (§1)."""
    return fail(code="access_token_expired", status=401)


def session_expired() -> Response:
    """HTTP 200 ``{"success": false, "code": "session_expired", "message": "Session expired"}`` (§1c)."""
    return fail("Session expired", code="session_expired")


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def json_body() -> dict[str, Any]:
    """The request's JSON object, or ``{}`` when absent, malformed or not an object."""
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}
