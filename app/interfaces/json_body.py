"""Reading JSON bodies: the one parser for every request body the service accepts.

:func:`json_object` reads the current request's body (every ``/api/v1`` endpoint);
:func:`parse_json_object` is the same rule over raw bytes, for bodies read another way
(the webhook receiver parses the platform's body after its HMAC check). Before any schema
runs, a body is refused when:

- it is not UTF-8 JSON (RFC 8259 section 8.1; no ``NaN``/``Infinity``) or not an object:
  400 ``malformed_json``;
- an object repeats a key (RFC 8259 section 4 leaves the meaning of duplicate names to
  each parser, so two readers of one body could disagree): 400 ``duplicate_key``;
- arrays and objects nest deeper than :data:`MAX_JSON_DEPTH`: 400 ``too_deeply_nested``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request

from app.interfaces.errors import ApiError

# No body the service accepts nests deeper than 3 (a send, a void, a region update, a
# platform event with its field errors); 32 leaves room for the platform's growth while
# keeping the parser far from Python's recursion limit.
MAX_JSON_DEPTH = 32


class JsonBodyError(ValueError):
    """A body refused by :func:`parse_json_object`: ``code`` and a safe ``message`` (no body text).

    ``code`` is ``malformed_json``, ``duplicate_key`` or ``too_deeply_nested``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise JsonBodyError(
                "duplicate_key", "A key appears twice in one JSON object; send each key once."
            )
        obj[key] = value
    return obj


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are Python's extensions, not JSON (RFC 8259 section 6).
    raise JsonBodyError("malformed_json", "The body is not valid JSON.")


def _depth(value: Any) -> int:
    """Nesting depth of arrays/objects (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """Parse ``raw`` (UTF-8 bytes or text) as one JSON object under the module's rules.

    Returns the object as a dict. Raises :class:`JsonBodyError` (``malformed_json``,
    ``duplicate_key``, ``too_deeply_nested``); never ``RecursionError``.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        body = json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except RecursionError:
        raise JsonBodyError("too_deeply_nested", _too_deep()) from None
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, JsonBodyError):
            raise
        raise JsonBodyError("malformed_json", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise JsonBodyError("malformed_json", "The body is not a JSON object.")
    if _depth(body) > MAX_JSON_DEPTH:
        raise JsonBodyError("too_deeply_nested", _too_deep())
    return body


def _too_deep() -> str:
    return f"The body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels."


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
