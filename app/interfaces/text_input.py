"""The one rule for text that reaches the service: no control characters, no lone surrogates.

A NUL byte in a value handed to psycopg2 raises ``ValueError`` and a lone surrogate
(``"\\ud800"``, which JSON's ``\\u`` escapes can spell) cannot be encoded as UTF-8: both
would surface as a 500 deep inside a query. Other control characters are never part of a
name, a reference, a search or a key, and would reach logs, PDFs and the platform. So every
text value is checked here, once, at the boundary:

- body fields: the marshmallow field :class:`Text` (every string field of the request
  schemas in ``app/interfaces/schemas.py`` and ``app/interfaces/directory_schemas.py``);
- path, query string and the header values the service stores (:data:`CHECKED_HEADERS`):
  :func:`init_app` installs a ``before_request`` check answering 422 ``validation_error``
  with the field named in ``errors``;
- token claims: ``app/interfaces/identity.py`` calls :func:`control_character_problem` and refuses the
  token (401 ``invalid_token``).

Refused: C0 controls U+0000..U+001F (tab and newline allowed only where a field is
``multiline``), DEL U+007F, C1 controls U+0080..U+009F (Unicode, chapter 23.1 "Control
Codes"), and surrogate code points U+D800..U+DFFF (unpaired in a Python ``str``; RFC 3629
forbids them in UTF-8).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, request
from marshmallow import ValidationError, fields

from app.interfaces.errors import ApiError

_REFUSED_SINGLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_REFUSED_MULTILINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# The accepted text as an anchored OpenAPI "pattern" (lone surrogates cannot occur in
# valid JSON text, so a pattern need not name them).
SINGLE_LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
MULTILINE_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$"
MESSAGE = "Remove control characters (such as NUL or line breaks) and unpaired surrogates."
MULTILINE_MESSAGE = (
    "Remove control characters (tab and line breaks are fine) and unpaired surrogates."
)
# Request headers whose values the service keeps (idempotency rows, log lines).
CHECKED_HEADERS = ("Idempotency-Key", "X-Request-Id")


def control_character_problem(value: str, *, multiline: bool = False) -> str | None:
    """Return why ``value`` is refused (a message for the caller), or None when it is clean.

    ``multiline``: tab (U+0009) and line feed (U+000A) are allowed (free text).
    """
    pattern = _REFUSED_MULTILINE if multiline else _REFUSED_SINGLE_LINE
    if pattern.search(value) is None:
        return None
    return MULTILINE_MESSAGE if multiline else MESSAGE


class Text(fields.String):
    """A marshmallow string field that refuses control characters and lone surrogates.

    ``multiline=True`` (keyword-only) allows tab and line feed, for free text such as a
    void reason. Raises ``marshmallow.ValidationError`` with a message naming what to
    remove; other options are those of ``fields.String``.
    """

    def __init__(self, *args: Any, multiline: bool = False, **kwargs: Any) -> None:
        metadata = dict(kwargs.pop("metadata", None) or {})
        if "enum" not in metadata:
            # The same rule for the OpenAPI document (ECMA 262 and Python read it alike).
            metadata.setdefault("pattern", MULTILINE_PATTERN if multiline else SINGLE_LINE_PATTERN)
        super().__init__(*args, metadata=metadata, **kwargs)
        self.multiline = multiline

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        problem = control_character_problem(text, multiline=self.multiline)
        if problem is not None:
            raise ValidationError(problem)
        return text


def _request_text_errors() -> dict[str, list[str]]:
    """Field name -> messages for every refused value in the path, query string and stored headers."""
    errors: dict[str, list[str]] = {}
    if request.routing_exception is not None:
        # No route matched (typed converters refuse a non-integer id): the answer is the
        # JSON 404/405, whatever the path holds, and nothing reads the request further.
        return errors
    if control_character_problem(request.path) is not None:
        errors["path"] = [MESSAGE]
    for key, values in request.args.lists():
        if control_character_problem(key) is not None:
            errors.setdefault("query", []).append("A parameter name has control characters.")
        elif any(control_character_problem(value) is not None for value in values):
            errors[key] = [MESSAGE]
    for name in CHECKED_HEADERS:
        value = request.headers.get(name)
        if value is not None and control_character_problem(value) is not None:
            errors[name] = [MESSAGE]
    return errors


def check_request_text() -> None:
    """Refuse the current request when its path, query or stored headers carry refused characters.

    Raises :class:`app.interfaces.errors.ApiError` 422 ``validation_error`` with ``errors`` naming each
    field (``path``, the query parameter, ``query`` for a bad parameter name, the header).
    """
    errors = _request_text_errors()
    if errors:
        raise ApiError(422, "validation_error", "The request is invalid.", errors)


def init_app(app: Flask) -> None:
    """Run :func:`check_request_text` before every request of ``app`` (before any view)."""
    app.before_request(check_request_text)
