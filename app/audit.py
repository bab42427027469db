"""The audit trail: an append-only, hash-chained record of every access to a prescription.

Each ``audit_events`` row stores ``prev_hash`` (the previous row's ``hash``, or
64 zeros for the first) and ``hash`` = SHA-256 (hex) over the canonical JSON of
its content plus ``prev_hash`` (:func:`row_hash`). Changing, inserting or
removing a row in the middle breaks the chain at that row, which
:func:`verify` reports. Triggers (migration 0006) refuse UPDATE and DELETE (and
TRUNCATE on PostgreSQL) outright; the chain catches what goes around them.

Writers are serialised so the chain never forks: on PostgreSQL a
transaction-level advisory lock (held until the caller commits), on SQLite the
write lock ``BEGIN IMMEDIATE`` already takes; ``prev_hash`` is also unique, so
a fork could not be stored even if the lock were bypassed. Removing the newest
rows (truncating the tail) leaves a valid shorter chain: compare ``count``
with an earlier export or verify run to catch that.

:func:`export_prescription` assembles one prescription's complete record for an
auditor (see its docstring for exactly what it contains).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.db import Database
from app.models import AuditEvent, DispatchOutbox, Prescription, StatusHistory, WebhookInbox
from app.services.errors import NotFound

GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key for the chain: the ASCII bytes of "erxaudit" as a signed 64-bit int.
AUDIT_LOCK_KEY = int.from_bytes(b"erxaudit", "big", signed=True)
# What an audit row can say was done; a typo should fail loudly, not start a new action.
# API reads: read (one prescription), list (/me/prescriptions, one row per prescription
# listed), fhir-read / fhir-search / fhir-history; changes: send, void, webhook-applied,
# requeue, confirm-sent, reconcile (a transition the reconcile job recorded).
ACTIONS = frozenset(
    {
        "read",
        "list",
        "send",
        "void",
        "export",
        "fhir-read",
        "fhir-search",
        "fhir-history",
        "webhook-applied",
        "requeue",
        "confirm-sent",
        "replay",
        "reconcile",
        "reconcile-applied",
        # Reads answered 304 (If-None-Match matched): still an access, so still a row.
        "read-not-modified",
        "list-not-modified",
        # A support/service lookup by reference or platform token that found nothing.
        "lookup",
    }
)
EXPORT_FORMAT = "erx-audit-export/1"


def _iso(value: datetime | None) -> str | None:
    """UTC ISO 8601 with microseconds and ``Z``: one spelling on PostgreSQL and SQLite."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_content(
    *,
    actor: str,
    role: str,
    action: str,
    prescription_id: int | None,
    occurred_at: datetime,
    request_id: str | None,
    client_addr: str | None,
    prev_hash: str,
) -> dict[str, Any]:
    """The hashed content of a row: every column but ``id`` and ``hash``."""
    return {
        "actor": actor,
        "role": role,
        "action": action,
        "prescription_id": prescription_id,
        "occurred_at": _iso(occurred_at),
        "request_id": request_id,
        "client_addr": client_addr,
        "prev_hash": prev_hash,
    }


def row_hash(content: Mapping[str, Any]) -> str:
    """SHA-256 hex of ``content`` as canonical JSON (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _content_of(event: AuditEvent) -> dict[str, Any]:
    return row_content(
        actor=event.actor,
        role=event.role,
        action=event.action,
        prescription_id=event.prescription_id,
        occurred_at=event.occurred_at,
        request_id=event.request_id,
        client_addr=event.client_addr,
        prev_hash=event.prev_hash,
    )


def _lock_chain(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        # Released at commit or rollback of the caller's transaction, after its row is visible.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
    # SQLite: the connection's BEGIN IMMEDIATE (app/db.py) already serialises writers.


def record(
    session: Session,
    *,
    actor: str,
    role: str,
    action: str,
    prescription_id: int | None,
    request_id: str | None,
    client_addr: str | None,
    now: datetime,
) -> AuditEvent:
    """Append one audit row in the caller's transaction and return it (flushed: ``id`` set).

    ``actor``: who (API token subject, operator login; <= 200 chars, no PHI);
    ``role``: as what (patient, support, service, operator; <= 32); ``action``:
    one of :data:`ACTIONS`; ``now``: aware UTC datetime. The row commits or
    rolls back with the caller's work. Raises ValueError for an unknown action,
    a naive ``now`` or an over-long field.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if now.tzinfo is None:
        raise ValueError("now must be an aware UTC datetime")
    if not actor or len(actor) > 200 or not role or len(role) > 32:
        raise ValueError("actor (1-200 chars) and role (1-32 chars) are required")
    if request_id is not None and len(request_id) > 100:
        raise ValueError("request_id is longer than 100 characters")
    if client_addr is not None and len(client_addr) > 64:
        raise ValueError("client_addr is longer than 64 characters")
    _lock_chain(session)
    prev = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)) or GENESIS_HASH
    occurred_at = now.astimezone(UTC)
    event = AuditEvent(
        actor=actor,
        role=role,
        action=action,
        prescription_id=prescription_id,
        occurred_at=occurred_at,
        request_id=request_id,
        client_addr=client_addr,
        prev_hash=prev,
    )
    event.hash = row_hash(_content_of(event))
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class Accessor:
    """Who is acting, as recorded on each audit row they cause.

    ``actor``: API token subject, ``"platform"`` (webhooks), ``"operator"`` (CLI)
    or ``"reconcile"``; ``role``: patient, support, service, platform, operator;
    ``request_id``: the HTTP request id (``X-Request-ID``) when there is one;
    ``client_addr``: the caller's address as the app sees it (after ProxyFix).
    """

    actor: str
    role: str
    request_id: str | None = None
    client_addr: str | None = None


PLATFORM = Accessor(actor="platform", role="platform")
OPERATOR = Accessor(actor="operator", role="operator")
RECONCILER = Accessor(actor="reconcile", role="service")


def record_by(
    session: Session, accessor: Accessor, *, action: str, prescription_id: int | None, now: datetime
) -> AuditEvent:
    """:func:`record` with the who of ``accessor``; same transaction rules and errors."""
    return record(
        session,
        actor=accessor.actor,
        role=accessor.role,
        action=action,
        prescription_id=prescription_id,
        request_id=accessor.request_id,
        client_addr=accessor.client_addr,
        now=now,
    )


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify`.

    ``ok``: the whole chain holds; ``count``: rows checked (all of them when ok,
    up to and including the bad one otherwise); ``first_bad_id``: the first row
    that breaks the chain, or None; ``reason``: why, in words (no row content).
    """

    ok: bool
    count: int
    first_bad_id: int | None = None
    reason: str | None = None


def verify(db: Database, *, batch: int = 1000) -> VerifyResult:
    """Walk ``audit_events`` in id order and check every link and hash.

    A row is bad when its ``prev_hash`` is not the previous row's ``hash`` (a row
    was removed, inserted or reordered before it) or when its ``hash`` does not
    match its content (the row was changed). Reads in pages of ``batch`` rows.
    """
    expected_prev = GENESIS_HASH
    count = 0
    last_id = 0
    with db.session() as session:
        while True:
            rows = session.scalars(
                select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch)
            ).all()
            if not rows:
                return VerifyResult(ok=True, count=count)
            for event in rows:
                count += 1
                if event.prev_hash != expected_prev:
                    return VerifyResult(False, count, event.id, "prev_hash does not match the previous row's hash")
                if row_hash(_content_of(event)) != event.hash:
                    return VerifyResult(False, count, event.id, "hash does not match the row's content")
                expected_prev = event.hash
            last_id = rows[-1].id
            session.expunge_all()


def _find_prescription(session: Session, key: str | int) -> Prescription:
    text_key = str(key).strip()
    if text_key.isdigit():
        found = session.get(Prescription, int(text_key))
    else:
        found = session.scalars(select(Prescription).where(Prescription.reference == text_key)).first()
    if found is None:
        raise NotFound(f"no prescription {text_key}")
    return found


def _webhook_events(session: Session, token: str | None) -> list[dict[str, Any]]:
    """The inbox rows for ``token``, re-verifiable: the raw body (UTF-8 text when it
    decodes, and always base64 of the exact bytes) with the ``X-Signature`` it came with."""
    if not token:
        return []
    rows = session.scalars(
        select(WebhookInbox).where(WebhookInbox.platform_token == token).order_by(WebhookInbox.id)
    )
    out = []
    for row in rows:
        raw = bytes(row.body)
        try:
            text_body: str | None = raw.decode("utf-8")
        except UnicodeDecodeError:
            text_body = None
        out.append(
            {
                "id": row.id,
                "event_id": row.event_id,
                "event_type": row.event_type,
                "state": row.state,
                "attempts": row.attempts,
                "received_at": _iso(row.received_at),
                "processed_at": _iso(row.processed_at),
                "last_error": row.last_error,
                "signature": row.signature,
                "body": text_body,
                "body_base64": base64.b64encode(raw).decode("ascii"),
            }
        )
    return out


def export_prescription(
    db: Database,
    prescription: str | int,
    *,
    actor: str,
    role: str,
    request_id: str | None,
    client_addr: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Return one prescription's complete record for an auditor, and audit the export itself.

    ``prescription``: its id or its reference. The export is recorded as an
    ``export`` audit row in the same transaction, so it lists itself. Raises
    :class:`~app.services.errors.NotFound`.

    Contents (JSON-ready; times UTC ISO 8601), ids and statuses only:
    ``prescription``: id, reference, status, platform token, patient /
    prescriber / clinic / pharmacy ids, created / updated / last-event times,
    the platform's rejection message if any (no patient name, date of birth,
    address, phone or email, no medicines); ``status_history``: every
    transition; ``webhook_events``: the inbox rows for its platform token with
    the raw body exactly as received and, where the inbox stores them, the
    signature header columns, so each event can be re-verified against the
    webhook secret; ``dispatch``: the outbox row (flow, state, attempts,
    outcome-unknown flag, last error, times) or null; ``audit_events``: every
    audit row for it with ``prev_hash`` and ``hash``.
    """
    with db.session() as session:
        rx = _find_prescription(session, prescription)
        record(
            session,
            actor=actor,
            role=role,
            action="export",
            prescription_id=rx.id,
            request_id=request_id,
            client_addr=client_addr,
            now=now,
        )
        history = session.scalars(
            select(StatusHistory).where(StatusHistory.prescription_id == rx.id).order_by(StatusHistory.id)
        ).all()
        outbox = session.scalars(select(DispatchOutbox).where(DispatchOutbox.prescription_id == rx.id)).first()
        audit_rows = session.scalars(
            select(AuditEvent).where(AuditEvent.prescription_id == rx.id).order_by(AuditEvent.id)
        ).all()
        return {
            "format": EXPORT_FORMAT,
            "exported_at": _iso(now),
            "prescription": {
                "id": rx.id,
                "reference": rx.reference,
                "status": rx.status,
                "platform_token": rx.platform_token,
                "patient_id": rx.patient_id,
                "prescriber_id": rx.prescriber_id,
                "clinic_id": rx.clinic_id,
                "pharmacy_id": rx.pharmacy_id,
                "created_at": _iso(rx.created_at),
                "updated_at": _iso(rx.updated_at),
                "last_event_at": _iso(rx.last_event_at),
                "rejection_message": rx.rejection_message,
            },
            "status_history": [
                {
                    "id": h.id,
                    "from_status": h.from_status,
                    "to_status": h.to_status,
                    "occurred_at": _iso(h.occurred_at),
                    "received_at": _iso(h.received_at),
                    "source": h.source,
                    "event_id": h.event_id,
                    "detail": h.detail,
                }
                for h in history
            ],
            "webhook_events": _webhook_events(session, rx.platform_token),
            "dispatch": None
            if outbox is None
            else {
                "id": outbox.id,
                "flow": outbox.flow,
                "state": outbox.state,
                "attempts": outbox.attempts,
                "outcome_unknown": outbox.outcome_unknown,
                "last_error": outbox.last_error,
                "created_at": _iso(outbox.created_at),
                "updated_at": _iso(outbox.updated_at),
                "next_attempt_at": _iso(outbox.next_attempt_at),
            },
            "audit_events": [
                {
                    "id": a.id,
                    "actor": a.actor,
                    "role": a.role,
                    "action": a.action,
                    "occurred_at": _iso(a.occurred_at),
                    "request_id": a.request_id,
                    "client_addr": a.client_addr,
                    "prev_hash": a.prev_hash,
                    "hash": a.hash,
                }
                for a in audit_rows
            ],
        }

