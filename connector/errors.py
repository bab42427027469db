"""Typed connector errors, and the one function that maps a response to one (contract §1, §2).

Every error carries only safe facts: a message we wrote (or the platform's
short business message), the HTTP status, the platform's error code and the
platform request id. Response bodies, tokens and patient details never enter an
error, so errors can be logged and stored as they are.

Two flags tell a caller what to do next:

* ``retryable``: sending the same request again later may succeed.
* ``outcome_unknown``: the request may have been processed by the platform
  even though we saw a failure (timeout after sending, 5xx on a POST). For an
  issue this means: look the ``client_ref_id`` up before sending again (§4).
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

__all__ = [
    "AuthError",
    "ConnectorError",
    "PayloadError",
    "PlatformRejected",
    "PlatformUnavailable",
    "RateLimited",
    "ResponseParseError",
    "TransportError",
    "classify_response",
    "parse_retry_after",
]

# A platform message is shown to operators; it is a short business sentence, and
# anything longer is more likely an echo of our input than a message.
_MAX_PLATFORM_MESSAGE = 300
# 500/502/504 on a POST may come after the platform committed; 503 usually means
# "not accepted", but a load balancer can also answer 503 after forwarding, so
# it is treated as unknown too (contract §2, §4).
_OUTCOME_UNKNOWN_STATUSES = frozenset({500, 502, 503, 504})
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ConnectorError(Exception):
    """Base of every connector error.

    Args:
        message: safe, human-readable text (no PHI, secrets or bodies).

    Keyword-only:
        http_status: HTTP status of the response, or None (no response).
        code: machine-readable code (the platform's, or ours), or None.
        request_id: platform request id from the ``X-Request-Id`` header, or None.
        retryable: whether sending again later may succeed; defaults to the
            class's ``default_retryable``.
        outcome_unknown: True when the platform may have processed the request.
        retry_after_s: the platform's requested wait in seconds, or None.
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
        outcome_unknown: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code
        self.request_id = request_id
        self.retryable = self.default_retryable if retryable is None else retryable
        self.outcome_unknown = outcome_unknown
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        parts = [self.message]
        if self.http_status is not None:
            parts.append(f"http_status={self.http_status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, http_status={self.http_status!r}, "
            f"code={self.code!r}, request_id={self.request_id!r}, "
            f"retryable={self.retryable!r}, outcome_unknown={self.outcome_unknown!r})"
        )


class TransportError(ConnectorError):
    """No usable HTTP response: timeout, refused or reset connection (contract §2).

    Retryable. ``outcome_unknown`` is True when the request may have reached the
    platform (read timeout, reset after sending) and False when it cannot have
    (connect timeout, connection refused, DNS failure).
    """

    default_retryable = True


class AuthError(ConnectorError):
    """Authentication failed at one step of the two-step scheme (contract §1).

    Keyword-only:
        step: ``"access_token"`` (OAuth token missing, expired or refused),
            ``"login"`` (prescriber login refused) or ``"session"`` (session
            token expired). Other arguments as :class:`ConnectorError`.
    """

    def __init__(self, message: str, *, step: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.step = step

    def __str__(self) -> str:
        return f"{super().__str__()} step={self.step}"


class RateLimited(ConnectorError):
    """HTTP 429 (contract §2). ``retry_after_s`` holds the ``Retry-After`` wait, or None."""

    default_retryable = True


class PlatformUnavailable(ConnectorError):
    """HTTP 5xx (contract §2). Retryable; ``outcome_unknown`` is True for a POST."""

    default_retryable = True


class PlatformRejected(ConnectorError):
    """HTTP 200 with ``"success": false``: a business rejection (contract §2).

    ``message`` is the platform's own message (e.g. the "unauthorized clinic"
    sentence), ``code`` its code if any, and ``errors`` its field errors as
    ``{"medicines.0.qty": ["The qty field is required."]}``. Not retryable:
    the same request will be rejected again.
    """

    def __init__(
        self, message: str, *, errors: dict[str, list[str]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.errors: dict[str, list[str]] = dict(errors or {})

    def __str__(self) -> str:
        text = super().__str__()
        if self.errors:
            text += " fields=" + ",".join(sorted(self.errors))
        return text


class ResponseParseError(ConnectorError):
    """A response could not be understood: not JSON, not an object, or a value
    missing or of the wrong type at ``path`` (dotted, e.g. ``"data.prescription.id"``).

    The message names the path and the JSON types involved, never the values.
    """

    def __init__(self, message: str, *, path: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.path = path


class PayloadError(ConnectorError):
    """Our own request could not be built (contract §4 field rules).

    ``errors`` maps field keys (``"patient.phone"``, ``"medicines.0.qty"``) to
    rule descriptions; the offending values are never included.
    """

    def __init__(self, errors: dict[str, list[str]], *, message: str | None = None) -> None:
        fields = ", ".join(sorted(errors))
        super().__init__(
            message or f"invalid prescription payload: {fields}", code="invalid_payload"
        )
        self.errors: dict[str, list[str]] = {k: list(v) for k, v in errors.items()}


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse a ``Retry-After`` header value into seconds to wait.

    Args:
        value: delay-seconds (``"30"``) or an HTTP-date
            (``"Wed, 21 Oct 2026 07:28:00 GMT"``), or None.
        now: current UTC time for HTTP-dates; defaults to the wall clock.

    Returns:
        Seconds (>= 0) to wait, or None when the header is absent or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.fromtimestamp(time.time(), tz=UTC)
    return max(0.0, (when - current).total_seconds())


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _platform_message(body: dict[str, Any], fallback: str) -> str:
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        return fallback
    message = message.strip()
    if len(message) > _MAX_PLATFORM_MESSAGE:
        message = message[:_MAX_PLATFORM_MESSAGE] + "..."
    return message


def _field_errors(value: object) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    errors: dict[str, list[str]] = {}
    for key, messages in value.items():
        if isinstance(messages, str):
            messages = [messages]
        if not isinstance(messages, list):
            messages = []
        errors[str(key)] = [m for m in messages if isinstance(m, str)]
    return errors


def _decode_json(resp: requests.Response) -> object:
    try:
        return json.loads(resp.content or b"")
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON") from None


def _method(resp: requests.Response) -> str | None:
    request = getattr(resp, "request", None)
    method = getattr(request, "method", None)
    return method.upper() if isinstance(method, str) else None


def classify_response(
    resp: requests.Response, *, request_id_header: str = "X-Request-Id"
) -> tuple[dict[str, Any] | None, ConnectorError | None]:
    """Decode a platform response once and map it to the error it means, if any (§1c, §2).

    The one function that maps a response to an error:

    * 401 -> :class:`AuthError` (``step="access_token"``, code
      ``"access_token_expired"`` unless the body names another);
    * 429 -> :class:`RateLimited` with ``retry_after_s`` from ``Retry-After``
      (seconds or HTTP-date; None if absent);
    * 5xx -> :class:`PlatformUnavailable`, ``outcome_unknown=True`` when the
      request was a POST (or other unsafe method) answered 500/502/503/504;
    * other non-2xx -> :class:`ConnectorError`;
    * 2xx whose body is not a JSON object, or has no ``success`` key ->
      :class:`ResponseParseError` (``outcome_unknown`` for a POST);
    * 2xx with ``success`` not exactly ``true``: code ``session_expired`` ->
      :class:`AuthError` (``step="session"``), otherwise
      :class:`PlatformRejected` with the platform's message, code and field
      errors (the HTTP 200 ``success:false`` lesson).

    Every error carries ``http_status`` and ``request_id``.

    Args:
        resp: a ``requests.Response`` from any platform endpoint that answers
            with the ``{"success": ...}`` envelope (§1b, §1c, §2-§5).
        request_id_header: response header holding the platform request id.

    Returns:
        ``(body, None)`` on success (``body`` is the decoded JSON object), or
        ``(None, error)``.
    """
    status = resp.status_code
    request_id = _text(resp.headers.get(request_id_header))
    method = _method(resp)
    unsafe = method in _UNSAFE_METHODS if method else True
    common: dict[str, Any] = {"http_status": status, "request_id": request_id}

    body: object = None
    try:
        body = _decode_json(resp)
    except ValueError:
        body = None
    code = _text(body.get("code")) if isinstance(body, dict) else None

    if status == 401:
        return None, AuthError(
            "platform refused the access token",
            step="access_token",
            code=code or "access_token_expired",
            retryable=True,
            **common,
        )
    if status == 429:
        return None, RateLimited(
            "platform rate limit reached",
            code=code or "rate_limited",
            retry_after_s=parse_retry_after(resp.headers.get("Retry-After")),
            **common,
        )
    if status >= 500:
        return None, PlatformUnavailable(
            f"platform unavailable (HTTP {status})",
            code=code,
            outcome_unknown=unsafe and status in _OUTCOME_UNKNOWN_STATUSES,
            retry_after_s=parse_retry_after(resp.headers.get("Retry-After")),
            **common,
        )
    if status >= 300 or status < 200:
        return None, ConnectorError(
            f"unexpected HTTP status {status} from platform", code=code, **common
        )

    # 2xx: only the body says whether the platform did anything (§2).
    if not isinstance(body, dict):
        kind = "non-JSON" if body is None else f"JSON {type(body).__name__}"
        return None, ResponseParseError(
            f"platform answered with a {kind} body where an object was expected",
            code="invalid_response",
            outcome_unknown=unsafe,
            **common,
        )
    if "success" not in body:
        return None, ResponseParseError(
            "platform response has no 'success' flag",
            path="success",
            code="invalid_response",
            outcome_unknown=unsafe,
            **common,
        )
    if body["success"] is True:
        return body, None
    if code == "session_expired":
        return None, AuthError(
            "prescriber session expired", step="session", code=code, retryable=True, **common
        )
    return None, PlatformRejected(
        _platform_message(body, "platform rejected the request"),
        code=code,
        errors=_field_errors(body.get("errors")),
        **common,
    )
