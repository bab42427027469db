"""Reading a verified webhook body into an event envelope (contract §7).

Tolerant by design: anything the platform can send is classified, never
refused. A body that is not a JSON object with a string ``id`` is stored under
a digest of its bytes (so redeliveries still de-duplicate) and marked dead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connector.parsing import (
    MAX_JSON_DEPTH,
    JsonBodyError,
    ResponseParseError,
    parse_json_object,
    parse_timestamp,
    value_at,
)
from webhooks.errors import EventPayloadError

STATUS_EVENT = "prescription.status_updated"
MAX_EVENT_ID_CHARS = 100


@dataclass(frozen=True)
class Envelope:
    """How the receiver stores an event: id, type, platform token, and initial inbox ``state``.

    ``state`` is ``pending`` (to process), ``ignored`` (another event type) or
    ``dead`` (unreadable); ``error`` names why for the latter two.
    """

    event_id: str
    event_type: str | None
    platform_token: str | None
    state: str
    error: str | None = None


@dataclass(frozen=True)
class StatusEvent:
    """A parsed ``prescription.status_updated`` event; times are aware UTC."""

    event_id: str
    platform_token: str
    client_ref_id: str | None
    status: str
    previous_status: str | None
    occurred_at: datetime


def _digest_id(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# The cause stored on a signed body that cannot be an event (the inbox row's ``last_error``,
# shown by `webhooks list --dead`), for each way the strict decoder refuses it.
_REFUSED_JSON = {
    "malformed_json": ("not_json", "the signed body is not one UTF-8 JSON object"),
    "duplicate_key": (
        "duplicate_key",
        "the signed body repeats a key in one JSON object, so readers could disagree on it",
    ),
    "too_deeply_nested": (
        "too_deeply_nested",
        f"the signed body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels",
    ),
}
_NO_EVENT_ID = (
    f"the signed body has no event id (a non-empty string of at most {MAX_EVENT_ID_CHARS} "
    "characters at id)"
)


def _unhandled(event_type: str | None) -> str:
    return f"event type {event_type!r} is not one this service handles (only {STATUS_EVENT})"


def envelope(raw: bytes) -> Envelope:
    """Classify the raw body of a verified event. Never raises.

    The body is decoded by :func:`connector.parsing.parse_json_object`, the one
    strict decoder. A body that is not a JSON object, that repeats a key (two readers
    could disagree on which ``id`` or ``status`` it carries), that nests too deep, or
    that has no usable ``id`` is stored ``dead``; another event type ``ignored``. The
    ``error`` is the one-line cause an operator reads in `webhooks list --dead`.
    """
    try:
        body = parse_json_object(raw)
    except JsonBodyError as exc:
        return Envelope(_digest_id(raw), None, None, "dead", _REFUSED_JSON[exc.code][1])
    event_id = _text(body.get("id"), MAX_EVENT_ID_CHARS)
    if event_id is None:
        return Envelope(_digest_id(raw), None, None, "dead", _NO_EVENT_ID)
    event_type = body.get("type")
    event_type = _text(event_type[:100] if isinstance(event_type, str) else None, 100)
    prescription = _optional_at(body, ("data", "prescription"))
    token = _text(prescription.get("id") if isinstance(prescription, dict) else None, 64)
    if event_type != STATUS_EVENT:
        return Envelope(event_id, event_type, token, "ignored", _unhandled(event_type))
    return Envelope(event_id, event_type, token, "pending")


def _text(value: Any, limit: int) -> str | None:
    """``value`` if it is a non-empty string that fits a text column, else None.

    PostgreSQL text cannot hold NUL and no column can hold a lone surrogate, so
    a value containing either is treated as absent.
    """
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        return None
    try:
        value.encode("utf-8")  # a lone surrogate ("\ud800") can't be stored
    except UnicodeEncodeError:
        return None
    return value


def _optional_at(body: Any, path: tuple[str, ...]) -> Any:
    """``connector.parsing.value_at``, with "absent" as None: the receiver classifies, never refuses."""
    try:
        return value_at(body, path)
    except ResponseParseError:
        return None


def parse_status_event(body: Any) -> StatusEvent:
    """Read a decoded ``prescription.status_updated`` body (contract §7).

    ``body`` is the JSON the processor decoded once from the stored bytes.
    Fields and times are read with :mod:`connector.parsing` (the one tolerant
    parser). Raises :class:`EventPayloadError` with reason ``no_prescription``,
    ``no_status`` or ``bad_time``.
    """
    prescription = _optional_at(body, ("data", "prescription"))
    if not isinstance(prescription, dict):
        raise EventPayloadError("no_prescription", "event has no data.prescription")
    token, status = prescription.get("id"), prescription.get("status")
    if not isinstance(token, str) or not isinstance(status, str):
        raise EventPayloadError("no_status", "event has no prescription id or status")
    previous = prescription.get("previous_status")
    ref = prescription.get("client_ref_id")
    return StatusEvent(
        event_id=str(body.get("id")),
        platform_token=token,
        client_ref_id=ref if isinstance(ref, str) else None,
        status=status,
        previous_status=previous if isinstance(previous, str) else None,
        occurred_at=_event_time(prescription.get("occurred_at")),
    )


def _event_time(value: Any) -> datetime:
    try:
        return parse_timestamp(value, path="data.prescription.occurred_at")
    except ResponseParseError:
        raise EventPayloadError("bad_time", "occurred_at is missing or not ISO 8601") from None


def decode_body(raw: bytes) -> Any:
    """Decode a stored event body once, as :func:`envelope` does; raises
    :class:`EventPayloadError` (``not_json``, ``duplicate_key``, ``too_deeply_nested``)."""
    try:
        return parse_json_object(raw)
    except JsonBodyError as exc:
        raise EventPayloadError(*_REFUSED_JSON[exc.code]) from None
