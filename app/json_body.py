"""Reading a request's JSON object body: the one parser every ``/api/v1`` endpoint uses."""

from __future__ import annotations

from typing import Any

from flask import request

from app.errors import ApiError


def json_object() -> dict[str, Any]:
    """Return the current request's body as a JSON object (a dict).

    Raises :class:`app.errors.ApiError` 415 ``unsupported_media_type`` when the
    body is not declared ``application/json``, 400 ``malformed_json`` when it
    does not parse or is not an object (including absurdly nested JSON, which
    the parser refuses with ``RecursionError``).
    """
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send a JSON body (Content-Type: application/json).")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # absurdly nested JSON
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "The body is not a JSON object.")
    return body
