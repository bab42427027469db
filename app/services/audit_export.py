"""One prescription's complete record for an auditor, with Merkle inclusion proofs.

:func:`export_prescription` returns JSON-ready data that an auditor can check
offline with ``docs/audit_verify_export.py`` (no database, no service): each
sealed audit row's leaf is rebuilt from its fields, its RFC 9162 inclusion proof
is checked against the root of a checkpoint, and the checkpoint's Ed25519
signed-note signature against the public key (which the auditor should compare
with the keys the operator publishes: ``flask --app app audit public-keys``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.foundation.db import Database
from app.foundation.errors import NotFound
from app.foundation.models import (
    AuditEvent,
    DispatchOutbox,
    Prescription,
    StatusHistory,
    WebhookInbox,
)
from app.mechanisms.audit import event_leaf_data, iso_utc, naming, record
from app.mechanisms.audit_keys import SigningKey, public_keys_document
from app.mechanisms.audit_sealer import (
    StoredTree,
    latest_checkpoint,
    leaf_positions,
    prove_inclusion,
)

# 3: a row may name several prescriptions (``prescription_ids``, leaf format 2).
EXPORT_FORMAT = "erx-audit-export/3"


def _find_prescription(session: Session, key: str | int) -> Prescription:
    text_key = str(key).strip()
    if text_key.isdigit():
        found = session.get(Prescription, int(text_key))
    else:
        found = session.scalars(
            select(Prescription).where(Prescription.reference == text_key)
        ).first()
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
                "received_at": iso_utc(row.received_at),
                "processed_at": iso_utc(row.processed_at),
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
    keys: Sequence[SigningKey],
    actor: str,
    role: str,
    request_id: str | None,
    client_addr: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Return one prescription's complete record for an auditor, and audit the export itself.

    ``prescription``: its id or its reference; ``keys``: the log's keys (their
    public halves are included). The export is recorded as an ``export`` audit
    row in the same transaction, so it lists itself (unsealed, without a proof).
    Raises :class:`~app.foundation.errors.NotFound`.

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
    audit row naming it (alone in ``prescription_id``, or in a list read's
    ``prescription_ids``), each with ``leaf`` (index, leaf data as text, leaf hash
    hex) and ``inclusion_proof`` (hex hashes) against ``checkpoint`` when sealed,
    else ``sealed: false``; ``checkpoint``: the newest signed checkpoint (id,
    size, root hex, the signed note) or null; ``public_keys``: as
    ``flask --app app audit public-keys`` prints them.
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
            select(StatusHistory)
            .where(StatusHistory.prescription_id == rx.id)
            .order_by(StatusHistory.id)
        ).all()
        outbox = session.scalars(
            select(DispatchOutbox).where(DispatchOutbox.prescription_id == rx.id)
        ).first()
        audit_rows = session.scalars(
            select(AuditEvent).where(naming(session, rx.id)).order_by(AuditEvent.id)
        ).all()
        checkpoint = latest_checkpoint(session)
        audit_out = _audit_rows(session, audit_rows, checkpoint.tree_size if checkpoint else 0)
        return {
            "format": EXPORT_FORMAT,
            "exported_at": iso_utc(now),
            "prescription": {
                "id": rx.id,
                "reference": rx.reference,
                "status": rx.status,
                "platform_token": rx.platform_token,
                "patient_id": rx.patient_id,
                "prescriber_id": rx.prescriber_id,
                "clinic_id": rx.clinic_id,
                "pharmacy_id": rx.pharmacy_id,
                "created_at": iso_utc(rx.created_at),
                "updated_at": iso_utc(rx.updated_at),
                "last_event_at": iso_utc(rx.last_event_at),
                "rejection_message": rx.rejection_message,
            },
            "status_history": [
                {
                    "id": h.id,
                    "from_status": h.from_status,
                    "to_status": h.to_status,
                    "occurred_at": iso_utc(h.occurred_at),
                    "received_at": iso_utc(h.received_at),
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
                "created_at": iso_utc(outbox.created_at),
                "updated_at": iso_utc(outbox.updated_at),
                "next_attempt_at": iso_utc(outbox.next_attempt_at),
            },
            "audit_events": audit_out,
            "checkpoint": None
            if checkpoint is None
            else {
                "id": checkpoint.id,
                "tree_size": checkpoint.tree_size,
                "root_hash": bytes(checkpoint.root_hash).hex(),
                "key_id": checkpoint.key_id,
                "signed_at": iso_utc(checkpoint.signed_at),
                "note": checkpoint.note,
            },
            "public_keys": public_keys_document(tuple(keys))["keys"],
        }


def _audit_rows(session: Session, rows: Sequence[AuditEvent], size: int) -> list[dict[str, Any]]:
    positions = leaf_positions(session, [r.id for r in rows])
    tree = StoredTree(session)
    out = []
    for a in rows:
        item: dict[str, Any] = {
            "id": a.id,
            "actor": a.actor,
            "role": a.role,
            "action": a.action,
            "prescription_id": a.prescription_id,
            "prescription_ids": a.prescription_ids,
            "occurred_at": iso_utc(a.occurred_at),
            "request_id": a.request_id,
            "client_addr": a.client_addr,
            "prev_hash": a.prev_hash,
            "hash": a.hash,
        }
        found = positions.get(a.id)
        if found is None or found[0] >= size:
            item["sealed"] = False
        else:
            index, leaf = found
            data = event_leaf_data(a)
            item["sealed"] = True
            item["leaf"] = {"index": index, "data": data.decode("utf-8"), "hash": leaf.hex()}
            item["inclusion_proof"] = [
                h.hex() for h in prove_inclusion(session, index, size, tree=tree)
            ]
        out.append(item)
    return out
