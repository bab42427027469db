"""Reading JSON bodies: the one parser for every request body the service accepts.

:func:`json_object` reads the current request's body (every ``/api/v1`` endpoint) with
:func:`connector.parsing.parse_json_object`, the one strict decoder, which the webhook
receiver also uses for the platform's bodies after its HMAC check. Before any schema
runs, a body is refused when:

- it is not UTF-8 JSON (RFC 8259 section 8.1; no ``NaN``/``Infinity``) or not an object:
  400 ``malformed_json``;
- an object repeats a key (RFC 8259 section 4 leaves the meaning of duplicate names to
  each parser, so two readers of one body could disagree): 400 ``duplicate_key``;
- arrays and objects nest deeper than :data:`MAX_JSON_DEPTH`: 400 ``too_deeply_nested``.
"""

from __future__ import annotations

from typing import Any

from flask import request

from app.interfaces.errors import ApiError
from connector.parsing import JsonBodyError, parse_json_object


def json_object() -> dict[str, Any]:
    """Return the current request's body as a JSON object (a dict).

    Raises :class:`app.interfaces.errors.ApiError` 415 ``unsupported_media_type`` when the
    body is not declared ``application/json``; 400 ``malformed_json``,
    ``duplicate_key`` or ``too_deeply_nested`` as :func:`parse_json_object` refuses it.
    """
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "Send a JSON body (Content-Type: application/json)."
        )
    try:
        return parse_json_object(request.get_data(cache=True))
    except JsonBodyError as exc:
        raise ApiError(400, exc.code, exc.message) from None
