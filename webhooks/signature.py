"""HMAC-SHA256 webhook signatures (contract §7; the scheme of Stripe's ``Stripe-Signature``).

Header: ``X-Signature: t=<unix seconds>,v1=<64 lowercase hex>[,v1=...]``. ``v1``
is HMAC-SHA256 keyed with the UTF-8 bytes of the shared secret, over
``f"{t}."`` followed by the raw body bytes exactly as received. Several ``v1``
entries appear while the platform rotates its secret; one match is enough.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from webhooks.errors import SignatureError

MAX_HEADER_CHARS = 2048
MAX_SIGNATURES = 8
_HEX = frozenset("0123456789abcdef")
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True)
class ParsedSignature:
    """The parts of a well-formed header: ``timestamp`` (Unix seconds) and ``v1`` digests."""

    timestamp: int
    signatures: tuple[str, ...]


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Return the lowercase hex HMAC-SHA256 of ``f"{timestamp}."`` + ``body`` under ``secret``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii"), hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def sign(body: bytes, secrets: Sequence[str], *, timestamp: int) -> str:
    """Return an ``X-Signature`` header value with one ``v1`` per secret (newest first)."""
    parts = [f"t={timestamp}"] + [f"v1={compute_signature(s, timestamp, body)}" for s in secrets]
    return ",".join(parts)


def parse_header(header: str | None) -> ParsedSignature:
    """Parse ``header`` strictly; raises :class:`SignatureError` on anything unexpected.

    ``t`` must be ASCII digits only (no sign, no fullwidth digits), present
    once; each ``v1`` must be 64 lowercase hex characters. Unknown schemes
    (``v0=``, ``v2=``) are skipped, but a header with no ``v1`` is malformed.
    """
    if header is None or header == "":
        raise SignatureError("missing_header", "X-Signature header is missing")
    if len(header) > MAX_HEADER_CHARS or not header.isascii():
        raise SignatureError("malformed_header", "X-Signature header is malformed")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed_header", "X-Signature header is malformed")
        if key == "t":
            if timestamp is not None or not value or len(value) > 12 or not set(value) <= _DIGITS:
                raise SignatureError("malformed_header", "X-Signature timestamp is malformed")
            timestamp = int(value)
        elif key == "v1":
            if len(value) != 64 or not set(value) <= _HEX:
                raise SignatureError("malformed_header", "X-Signature v1 entry is malformed")
            signatures.append(value)
    if timestamp is None or not signatures or len(signatures) > MAX_SIGNATURES:
        raise SignatureError("malformed_header", "X-Signature needs one t and at least one v1")
    return ParsedSignature(timestamp=timestamp, signatures=tuple(signatures))


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance_s: int,
    unix_time: float,
) -> int:
    """Authenticate ``body`` (raw bytes) against ``header`` and every secret in ``secrets``.

    ``unix_time`` is our clock in Unix seconds; the timestamp must be within
    ``tolerance_s`` of it in either direction. Returns the header's timestamp.
    Raises :class:`SignatureError` with reason ``missing_header``,
    ``malformed_header``, ``stale_timestamp`` or ``no_match``. Every candidate is
    compared with :func:`hmac.compare_digest`; nothing is decoded before this passes.
    """
    parsed = parse_header(header)
    if abs(unix_time - parsed.timestamp) > tolerance_s:
        raise SignatureError("stale_timestamp", "X-Signature timestamp is outside the tolerance")
    matched = False
    for secret in secrets:
        expected = compute_signature(secret, parsed.timestamp, body)
        for candidate in parsed.signatures:
            # No early exit: the time taken does not depend on which secret matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no_match", "X-Signature does not match the body")
    return parsed.timestamp
