"""Queueing a prescription for sending, and reading it back with its timeline.

``queue_send`` is the "acknowledge" half of acknowledge-then-fulfil: in one
transaction it validates, moves the prescription to ``queued`` and writes the
dispatch outbox row. It makes no outbound call; a worker fulfils the row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import Database, utcnow
from app.history import record_local_status
from app.models import (
    DispatchOutbox,
    IdempotencyKey,
    Pharmacy,
    Prescription,
    Region,
    StatusHistory,
)
from app.queue import reopen
from app.services.errors import Conflict, Invalid, NotFound
from connector.statuses import rank

# Statuses from which a send may be (re)queued. A rejected prescription can be
# corrected and sent again; anything queued or already on the platform cannot.
SENDABLE = ("draft", "rejected")


# The idempotency table keeps the answer the API gave to the first request;
# a queued send is always answered "202 Accepted" (the work happens later).
ACCEPTED = 202


@dataclass(frozen=True)
class QueuedSend:
    """The result of :func:`queue_send`: ids and the status resource's path."""

    id: int
    reference: str
    status: str
    status_url: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON body: ``{"id", "reference", "status", "status_url"}``."""
        return {"id": self.id, "reference": self.reference, "status": self.status, "status_url": self.status_url}


def request_fingerprint(payload: Any) -> str:
    """Return a stable SHA-256 hex digest of a JSON-able request payload."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def status_url(prescription_id: int) -> str:
    """Return the path of the status resource of ``prescription_id``."""
    return f"/api/v1/prescriptions/{prescription_id}"


def _stored_result(session: Session, scope: str, key: str, fingerprint: str) -> QueuedSend | None:
    stored = session.scalars(
        select(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
    ).first()
    if stored is None:
        return None
    if stored.request_hash != fingerprint:
        raise Invalid(
            "This Idempotency-Key was used with a different request body.",
            code="idempotency_key_reused",
            errors={"Idempotency-Key": ["Already used with a different body."]},
        )
    return QueuedSend(**json.loads(stored.response_body))


def queue_send(
    db: Database,
    prescription_id: int,
    *,
    pharmacy_id: int,
    idempotency_key: str | None = None,
    now: datetime | None = None,
    request_id: str | None = None,
) -> QueuedSend:
    """Queue ``prescription_id`` for sending to ``pharmacy_id``; returns a :class:`QueuedSend`.

    One transaction writes status ``queued``, a history row and the outbox
    row, or nothing at all. ``now`` is aware UTC. With ``idempotency_key`` a
    repeat returns the first result. Raises (``app.services.errors``):
    :class:`NotFound` unknown prescription; :class:`Conflict` not sendable from
    its status (``details["current_status"]``); :class:`Invalid` bad
    pharmacy/region/medicines/credentials, or a reused key with a different body.
    ``request_id``: the queuing request's id (``app.logs.current_request_id()``,
    passed by the API layer), stored on the outbox row so the worker logs the
    send under it.
    """
    now = now or utcnow()
    scope = f"POST {status_url(prescription_id)}/send"
    fingerprint = request_fingerprint({"pharmacy_id": pharmacy_id})
    try:
        with db.session() as session:
            prescription = session.get(Prescription, prescription_id, with_for_update=True)
            if idempotency_key is not None:
                replay = _stored_result(session, scope, idempotency_key, fingerprint)
                if replay is not None:
                    return replay
            result = _queue(session, prescription, prescription_id, pharmacy_id, now, request_id=request_id)
            if idempotency_key is not None:
                session.add(
                    IdempotencyKey(
                        scope=scope,
                        key=idempotency_key,
                        request_hash=fingerprint,
                        status_code=ACCEPTED,
                        response_body=json.dumps(result.as_dict()),
                        created_at=now,
                    )
                )
            return result
    except IntegrityError:
        # A concurrent request with the same key committed first: answer as it did.
        if idempotency_key is None:
            # A concurrent send of the same prescription won the race.
            raise Conflict(
                "The prescription was queued by a concurrent request.", code="already_queued_or_sent"
            ) from None
        with db.session() as session:
            replay = _stored_result(session, scope, idempotency_key, fingerprint)
        if replay is None:
            raise
        return replay


def _queue(
    session: Session,
    prescription: Prescription | None,
    prescription_id: int,
    pharmacy_id: int,
    now: datetime,
    *,
    request_id: str | None = None,
) -> QueuedSend:
    if prescription is None:
        raise NotFound(f"Prescription {prescription_id} does not exist.")
    if prescription.status not in SENDABLE:
        raise Conflict(
            f"Prescription {prescription_id} is {prescription.status}; it cannot be queued again.",
            code="already_queued_or_sent",
            details={"current_status": prescription.status},
        )
    pharmacy = session.get(Pharmacy, pharmacy_id)
    if pharmacy is None:
        raise Invalid("The request is invalid.", errors={"pharmacy_id": ["Unknown pharmacy."]})
    region = session.get(Region, prescription.patient.region_code)
    if region is None or pharmacy.region_code != region.code:
        raise Invalid(
            "The request is invalid.", errors={"pharmacy_id": ["The pharmacy is not in the patient's region."]}
        )
    errors: dict[str, list[str]] = {}
    if not prescription.medicines:
        errors["medicines"] = ["The prescription has no medicines."]
    if region.flow == "erx":
        if pharmacy.branch_id is None:
            errors["pharmacy_id"] = ["The pharmacy has no platform branch id."]
        prescriber = prescription.prescriber
        if not prescriber.password_enc or not prescriber.pin_enc:
            errors["prescriber"] = ["The prescriber has no platform credentials."]
    if errors:
        raise Invalid("The prescription cannot be sent.", errors=errors)

    prescription.pharmacy_id = pharmacy.id
    prescription.rejection_message = None
    prescription.rejection_errors = None
    record_local_status(session, prescription, "queued", source="service", detail=f"flow={region.flow}", now=now)
    outbox = session.scalars(
        select(DispatchOutbox).where(DispatchOutbox.prescription_id == prescription.id)
    ).first()
    if outbox is None:
        session.add(
            DispatchOutbox(
                prescription_id=prescription.id,
                flow=region.flow,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                outcome_unknown=False,
                created_at=now,
                updated_at=now,
                request_id=request_id,
            )
        )
    else:
        # Re-sending after a rejection: a definite "no" means nothing was created.
        reopen(outbox, now=now)
        outbox.flow, outbox.updated_at, outbox.last_error = region.flow, now, None
    return QueuedSend(
        id=prescription.id,
        reference=prescription.reference,
        status="queued",
        status_url=status_url(prescription.id),
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def prescription_view(db: Database, prescription_id: int) -> dict[str, Any]:
    """Return the status resource: current status, rejection, dispatch state and timeline.

    The timeline is in lifecycle order (contract §6): the service's own steps
    (queued, retries, rejected) by time, then issued, signed, printed and the
    final status. The platform stamps events to the second, so rank, not the
    clock, orders ``issued`` (our clock) before ``signed`` (theirs); a late
    event still sits where it belongs. Raises :class:`NotFound`. Contains ids and
    statuses only: no patient details.
    """
    with db.session() as session:
        prescription = session.get(Prescription, prescription_id)
        if prescription is None:
            raise NotFound(f"Prescription {prescription_id} does not exist.")
        history = list(
            session.scalars(
                select(StatusHistory).where(StatusHistory.prescription_id == prescription_id)
            )
        )
        history.sort(key=lambda h: (rank(h.to_status), h.occurred_at, h.id))
        outbox = session.scalars(
            select(DispatchOutbox).where(DispatchOutbox.prescription_id == prescription_id)
        ).first()
        return {
            "id": prescription.id,
            "reference": prescription.reference,
            "status": prescription.status,
            "region": prescription.patient.region_code,
            "pharmacy_id": prescription.pharmacy_id,
            "platform_token": prescription.platform_token,
            "rejection": (
                {
                    "message": prescription.rejection_message,
                    "errors": json.loads(prescription.rejection_errors or "{}"),
                }
                if prescription.status == "rejected"
                else None
            ),
            "dispatch": (
                {
                    "state": outbox.state,
                    "attempts": outbox.attempts,
                    "next_attempt_at": _iso(outbox.next_attempt_at) if outbox.state == "pending" else None,
                    "last_error": outbox.last_error,
                }
                if outbox
                else None
            ),
            "history": [
                {
                    "from": h.from_status,
                    "to": h.to_status,
                    "occurred_at": _iso(h.occurred_at),
                    "received_at": _iso(h.received_at),
                    "source": h.source,
                    "event_id": h.event_id,
                }
                for h in history
            ],
        }
