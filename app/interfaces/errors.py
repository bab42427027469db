"""One error shape for every response: ``{"code", "message", "errors"}``.

Handlers here turn :class:`ApiError`, the services' domain errors
(:mod:`app.foundation.errors`, through :func:`domain_status`), HTTP errors raised by Flask/Werkzeug
(404, 405, 413, ...) and anything unexpected into that JSON body. Unexpected
errors become a 500 with a generic message: no stack trace, no request data.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from app.foundation.connection_names import url_location
from app.foundation.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    Misconfigured,
    NotFound,
    Unavailable,
)
from app.mechanisms.runtime import runtime

log = logging.getLogger("app.interfaces.errors")


class ApiError(Exception):
    """An error answered to the caller.

    ``status``: HTTP status (int); ``code``: machine-readable snake_case string;
    ``message``: safe human text (no PHI, no secrets); ``errors``: field name to
    list of messages; ``headers``: response headers to add (e.g.
    ``WWW-Authenticate`` on a 401, RFC 6750 section 3); ``extra``: further
    top-level keys (e.g. ``reason``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = dict(errors or {})
        self.headers = dict(headers or {})
        self.extra = extra


def error_response(
    status: int, code: str, message: str, errors: Mapping[str, Any] | None = None, **extra: Any
) -> tuple[Response, int]:
    """Return the JSON error response ``({"code", "message", "errors", **extra}, status)``."""
    body = {"code": code, "message": message, "errors": dict(errors or {}), **extra}
    return jsonify(body), status


# Most specific first: the first matching class gives the status.
_DOMAIN_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (Invalid, 422),
    (Forbidden, 403),
    (Unavailable, 503),
    (Misconfigured, 500),
)


def domain_status(exc: DomainError) -> int:
    """The HTTP status that answers ``exc``: 404, 409, 422, 403, 503, 500 (misconfigured or unknown)."""
    for cls, status in _DOMAIN_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def _code_for(exc: HTTPException) -> str:
    name = (exc.name or "error").lower()
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def init_app(app: Flask) -> None:
    """Register the handlers on ``app``."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        response, status = error_response(
            exc.status, exc.code, exc.message, exc.errors, **exc.extra
        )
        response.headers.update(exc.headers)
        return response, status

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> tuple[Response, int]:
        return error_response(domain_status(exc), exc.code, exc.message, exc.errors, **exc.details)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 429:
            # Flask-Limiter's description is the limit itself ("3 per 1 minute"): say what to do.
            message = "Too many requests: wait the number of seconds in Retry-After, then retry."
        response, status = error_response(status, _code_for(exc), message)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response, status

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError) -> tuple[Response, int]:
        # The database is unreachable or locked: the caller may retry; nothing was stored.
        log.error(
            "database unavailable: %s at %s",
            type(exc.orig).__name__ if exc.orig else "unknown",
            url_location(runtime().settings.database_url),
        )
        response, status = error_response(
            503, "database_unavailable", "The service cannot reach its database; retry later."
        )
        response.headers["Retry-After"] = "5"
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        # Only the type and the frames: an exception's text can carry SQL parameters (PHI).
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error("unhandled error %s\n%s", type(exc).__name__, frames)
        return error_response(500, "internal_error", "An unexpected error occurred.")
