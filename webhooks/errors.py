"""Errors of the webhook receiver. Each carries a machine-readable ``reason``."""

from __future__ import annotations

from typing import Literal

SignatureReason = Literal["missing_header", "malformed_header", "stale_timestamp", "no_match"]


class SignatureError(Exception):
    """The ``X-Signature`` header does not authenticate the body (contract §7).

    ``reason`` is one of ``missing_header``, ``malformed_header``,
    ``stale_timestamp``, ``no_match``; it is logged and returned, never the body.
    """

    def __init__(self, reason: SignatureReason, message: str) -> None:
        super().__init__(message)
        self.reason: SignatureReason = reason
        self.message = message


class EventPayloadError(Exception):
    """A verified event whose body cannot be processed (not JSON, missing fields).

    Named apart from :class:`connector.errors.PayloadError` (an issue request
    the platform could never accept): this one is about what we received.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
