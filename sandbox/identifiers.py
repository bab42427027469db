"""Identifier formats: prescription tokens, webhook event ids, opaque auth tokens."""

from __future__ import annotations

import random
import secrets

CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_prescription_id(rng: random.Random) -> str:
    """A prescription token: ``"SRX"`` + 12 upper-case hex digits (contract §4)."""
    return f"SRX{rng.getrandbits(48):012X}"


def new_event_id(rng: random.Random, now: float) -> str:
    """A webhook event id: ``"evt_"`` + 26 Crockford base32 characters (contract §7).

    ULID-shaped: 48 bits of milliseconds since the epoch (``now`` in Unix
    seconds), then 80 random bits, so ids sort roughly by creation time.
    """
    value = (int(now * 1000) & ((1 << 48) - 1)) << 80 | rng.getrandbits(80)
    chars = []
    for _ in range(26):
        chars.append(CROCKFORD_ALPHABET[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


def new_opaque_token() -> str:
    """An unguessable opaque token for access tokens and sessions (contract §1)."""
    return secrets.token_urlsafe(32)
