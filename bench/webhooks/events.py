"""Pre-signed webhook requests for wrk: one line per request, ``<X-Signature>\\t<body>``.

wrk's Lua has no HMAC, so Python signs every event up front (contract §7:
HMAC-SHA256 keyed with the secret over ``f"{t}."`` + body) and
``post_signed.lua`` sends each line once. Event ids are unique across a run.
Bodies are ``prescription.status_updated`` events padded to about 1 KB with
fields a real platform plausibly sends (prescriber, clinic, contact, medicines).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BODY_BYTES = 1024
TRANSITIONS = (("signed", "issued"), ("printed", "signed"), ("dispensed", "printed"))
_MEDICINES = (
    {
        "vpid": "39929811000001101",
        "description": "Semaglutide 250micrograms/0.19ml solution for injection 1.5ml pre-filled disposable devices",
        "qty": "4",
        "directions": "Inject 0.25mg under the skin once weekly",
    },
    {
        "vpid": "43003211000001108",
        "description": "Tirzepatide 2.5mg/0.5ml solution for injection pre-filled disposable devices",
        "qty": "4",
        "directions": "Inject 2.5mg under the skin once weekly",
    },
)


@dataclass(frozen=True)
class Target:
    """A prescription an event is about: platform token and our reference."""

    token: str
    client_ref_id: str


def run_tag() -> str:
    """Six random upper-case characters that make this run's event ids unique."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(secrets.choice(alphabet) for _ in range(6))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_body(event_id: str, target: Target, status: str, previous: str, now: float) -> bytes:
    """A compact JSON status event of about :data:`BODY_BYTES` bytes."""
    event = {
        "id": event_id,
        "type": "prescription.status_updated",
        "created": _iso(now),
        "livemode": False,
        "api_version": "2026-11-01",
        "data": {
            "prescription": {
                "id": target.token,
                "client_ref_id": target.client_ref_id,
                "status": status,
                "previous_status": previous,
                "occurred_at": _iso(now - 1),
                "prescriber": {"id": 5531, "name": "Dr Rhiannon Jones"},
                "clinic": {
                    "id": 994,
                    "display_id": "201334",
                    "name": "Harley Street Weight Clinic",
                },
                "contact": {
                    "branch_id": 17,
                    "name": "Marylebone Pharmacy",
                    "group": "All Other Pharmacies",
                    "email": "branch17@pharmacy.example.test",
                },
                "medicines": list(_MEDICINES),
            }
        },
    }
    body = json.dumps(event, separators=(",", ":"))
    pad = BODY_BYTES - len(body) - len(',"metadata":{"trace":""}')
    if pad > 0:
        event["metadata"] = {"trace": ("0123456789abcdef" * (pad // 16 + 1))[:pad]}
        body = json.dumps(event, separators=(",", ":"))
    return body.encode("utf-8")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Signature`` header value (one ``v1``), contract §7."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii"), hashlib.sha256)
    mac.update(body)
    return f"t={timestamp},v1={mac.hexdigest()}"


def signed_requests(
    *,
    prefix: str,
    count: int,
    targets: Sequence[Target],
    secret: str,
) -> Iterator[tuple[str, bytes]]:
    """``count`` signed events as ``(X-Signature value, body)`` pairs, made one at a time.

    Event ``i`` is about ``targets[i % len(targets)]`` and makes transition
    ``i // len(targets)`` of :data:`TRANSITIONS` (signed, then printed, then
    dispensed), so with ``len(targets) * 3 >= count`` every event is a real,
    new lifecycle step. Ids are ``prefix`` + a zero-padded sequence number.
    Raises ValueError without targets.
    """
    if not targets:
        raise ValueError("at least one target is needed")
    now = time.time()
    timestamp = int(now)
    for i in range(count):
        target = targets[i % len(targets)]
        status, previous = TRANSITIONS[min(i // len(targets), len(TRANSITIONS) - 1)]
        body = event_body(f"{prefix}{i:010d}", target, status, previous, now)
        yield signature(secret, timestamp, body), body


def write_requests(
    path: Path,
    *,
    prefix: str,
    count: int,
    targets: Sequence[Target],
    secret: str,
) -> int:
    """Write :func:`signed_requests` to ``path`` for wrk, one ``<signature>\\t<body>`` line each;
    returns the number written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for sig, body in signed_requests(
            prefix=prefix, count=count, targets=targets, secret=secret
        ):
            out.write(f"{sig}\t{body.decode('utf-8')}\n")
    return count
