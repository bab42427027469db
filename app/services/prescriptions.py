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

from app.foundation.db import Database, utcnow
from app.foundation.errors import Conflict, Invalid, NotFound
from app.foundation.models import (
    DispatchOutbox,
    IdempotencyKey,
    Medicine,
    Pharmacy,
    Prescription,
    Region,
)
from app.mechanisms.audit import Accessor, record_by
from app.mechanisms.history import Change, local, record
from app.mechanisms.queue import pending_values, reopen
from app.services.prescription_reads import Viewer, find_view

# dm+d controlled-drug schedules the platform refuses (contract §4: "controlled_drug").
BLOCKED_SCHEDULES = frozenset({"2", "3"})

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
        return {
            "id": self.id,
            "reference": self.reference,
            "status": self.status,
            "status_url": self.status_url,
        }


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
    patient_ref: str | None = None,
    request_id: str | None = None,
    audit: Accessor | None = None,
) -> QueuedSend:
    """Queue ``prescription_id`` for sending to ``pharmacy_id``; returns a :class:`QueuedSend`.

    One transaction writes status ``queued``, a history row and the outbox
    row, or nothing at all. ``now`` is aware UTC. With ``idempotency_key`` a
    repeat returns the first result. ``patient_ref`` (a patient caller's
    ``Patient.external_ref``) limits the send to that patient's own
    prescriptions: another patient's answers exactly like a missing one.
    Raises (``app.foundation.errors``): :class:`NotFound` unknown (or not the
    caller's) prescription; :class:`Conflict` not sendable from its status
    (``details["current_status"]``); :class:`Invalid` when a pre-send check
    fails (:func:`presend_errors`: pharmacy, region, medicines, controlled
    drugs, patient record, credentials), or a reused key with a different body.
    ``request_id``: the queuing request's id (``app.foundation.logs.current_request_id()``,
    passed by the API layer), stored on the outbox row so the worker logs the
    send under it. ``audit``: who is sending; a ``send`` audit row is written in
    the same transaction (an idempotent replay writes none: nothing changed).
    """
    now = now or utcnow()
    scope = f"POST {status_url(prescription_id)}/send"
    fingerprint = request_fingerprint({"pharmacy_id": pharmacy_id})
    try:
        with db.session() as session:
            prescription = session.get(Prescription, prescription_id, with_for_update=True)
            if prescription is not None and not is_visible_to(prescription, patient_ref):
                # Before the idempotency replay: another patient's key must not reveal a stored answer.
                raise NotFound(f"Prescription {prescription_id} does not exist.")
            if idempotency_key is not None:
                replay = _stored_result(session, scope, idempotency_key, fingerprint)
                if replay is not None:
                    return replay
            result = _queue(
                session, prescription, prescription_id, pharmacy_id, now, request_id=request_id
            )
            if audit is not None:
                record_by(session, audit, action="send", prescription_id=prescription_id, now=now)
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
                "The prescription was queued by a concurrent request.",
                code="already_queued_or_sent",
            ) from None
        with db.session() as session:
            replay = _stored_result(session, scope, idempotency_key, fingerprint)
        if replay is None:
            raise
        return replay


def is_visible_to(prescription: Prescription, patient_ref: str | None) -> bool:
    """Whether a caller limited to ``patient_ref`` may see ``prescription``.

    ``patient_ref`` is the patient caller's ``Patient.external_ref`` (the JWT
    ``sub``), or None for a caller who may see every prescription (support,
    service). A patient who may not see it is told it does not exist (404).
    """
    return patient_ref is None or prescription.patient.external_ref == patient_ref


# Fields of the patient record the platform payload (contract §4) and the Region A
# PDF both print; an empty one is refused before anything is queued.
_PATIENT_FIELDS = {
    "date_of_birth": "date of birth",
    "address_line1": "address line 1",
    "city": "town or city",
    "post_code": "post code",
}


def presend_errors(
    session: Session,
    prescription: Prescription,
    pharmacy: Pharmacy | None,
    region: Region | None,
) -> dict[str, list[str]]:
    """Return the field errors that stop ``prescription`` going to ``pharmacy`` (empty when none).

    Each message says what to fix. Checked, in the patient's ``region`` (which
    decides the route):

    - ``pharmacy_id``: unknown pharmacy; a pharmacy of another region; in an
      ``erx`` region (B) a pharmacy without a platform branch id (contract §3).
    - ``medicines``: none at all; a dm+d Schedule 2 or 3 controlled drug
      (``Medicine.controlled_schedule``), which the platform refuses with
      ``controlled_drug`` (contract §4) and which UK law requires on a paper
      FP10PCD form whatever the route (Misuse of Drugs Regulations 2001, reg. 15).
    - ``patient.<field>``: date of birth, address line 1, city, post code missing
      (the payload of contract §4 and the Region A PDF need them).
    - ``prescriber``: in an ``erx`` region, no stored platform credentials.

    Messages name ids and dm+d codes, never patient details.
    """
    errors: dict[str, list[str]] = {}
    if pharmacy is None:
        errors["pharmacy_id"] = ["Unknown pharmacy: pick one from GET /api/v1/pharmacies."]
    elif region is None or pharmacy.region_code != region.code:
        errors["pharmacy_id"] = [
            "The pharmacy is not in the patient's region: pick a pharmacy of region "
            f"{prescription.patient.region_code} (GET /api/v1/pharmacies?region={prescription.patient.region_code})."
        ]
    elif region.flow == "erx" and pharmacy.branch_id is None:
        errors["pharmacy_id"] = [
            "The pharmacy has no platform branch id, so the platform cannot route to it: pick another pharmacy."
        ]
    if not prescription.medicines:
        errors["medicines"] = ["The prescription has no medicines: add at least one."]
    controlled = _controlled_lines(session, prescription)
    if controlled:
        errors.setdefault("medicines", []).extend(controlled)
    patient = prescription.patient
    for attr, label in _PATIENT_FIELDS.items():
        if not _filled(getattr(patient, attr)):
            errors[f"patient.{attr}"] = [
                f"The patient record has no {label}: add it before sending."
            ]
    if region is not None and region.flow == "erx":
        prescriber = prescription.prescriber
        if not prescriber.password_enc or not prescriber.pin_enc:
            errors["prescriber"] = [
                f"Prescriber {prescriber.email} has no stored platform credentials: store them with "
                f"`flask --app app prescribers set-credentials {prescriber.email}`."
            ]
    return errors


def _filled(value: object) -> bool:
    return value is not None and (not isinstance(value, str) or bool(value.strip()))


def _controlled_lines(session: Session, prescription: Prescription) -> list[str]:
    vpids = [line.vpid for line in prescription.medicines if line.vpid]
    if not vpids:
        return []
    schedules = dict(
        session.execute(
            select(Medicine.vpid, Medicine.controlled_schedule).where(Medicine.vpid.in_(vpids))
        ).all()
    )
    messages = []
    for line in prescription.medicines:
        schedule = schedules.get(line.vpid) if line.vpid else None
        if schedule in BLOCKED_SCHEDULES:
            messages.append(
                f"Line {line.position} (dm+d {line.vpid}) is a Schedule {schedule} controlled drug, which "
                "cannot be prescribed electronically: the prescriber must write it on a paper FP10PCD "
                "prescription and remove it here."
            )
    return messages


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
    region = session.get(Region, prescription.patient.region_code)
    errors = presend_errors(session, prescription, pharmacy, region)
    if errors:
        raise Invalid("The prescription cannot be sent.", errors=errors)
    if pharmacy is None or region is None:  # presend_errors refuses both missing
        raise RuntimeError(f"prescription {prescription_id} passed the pre-send checks incomplete")

    prescription.pharmacy_id = pharmacy.id
    prescription.rejection_message = None
    prescription.rejection_errors = None
    record(
        session,
        [
            Change(
                prescription,
                local(
                    prescription, "queued", source="service", detail=f"flow={region.flow}", now=now
                ),
                # Known here: the history and event rows go in one statement (no look-up).
                region=region.code,
                route=region.flow,
            )
        ],
    )
    outbox = session.scalars(
        select(DispatchOutbox).where(DispatchOutbox.prescription_id == prescription.id)
    ).first()
    if outbox is None:
        session.add(
            DispatchOutbox(
                prescription_id=prescription.id,
                flow=region.flow,
                **pending_values(now=now),
                outcome_unknown=False,
                created_at=now,
                updated_at=now,
                request_id=request_id,
            )
        )
    else:
        # Re-sending after a rejection: a definite "no" means nothing was created.
        reopen(outbox, now=now)
        outbox.flow, outbox.updated_at = region.flow, now
    return QueuedSend(
        id=prescription.id,
        reference=prescription.reference,
        status="queued",
        status_url=status_url(prescription.id),
    )


def prescription_view(
    db: Database,
    prescription_id: int,
    *,
    patient_ref: str | None = None,
    include_token: bool = False,
) -> dict[str, Any]:
    """Return the status resource of ``prescription_id`` as a JSON-able dict (own transaction).

    The keys and the timeline's order are
    :func:`app.services.prescription_reads.view_from_row`'s; ``include_token``
    (support and service callers) adds ``platform_token`` and the ``patient``
    block. ``patient_ref`` limits the read to that patient's own prescriptions:
    another patient's raises :class:`NotFound` exactly like a missing one.
    One query (the API runs :func:`app.services.prescription_reads.find_view`
    in the transaction of its audit row instead).
    """
    viewer = Viewer(patient_ref=patient_ref, privileged=include_token)
    with db.session() as session:
        view = find_view(session, viewer=viewer, prescription_id=prescription_id)
    if view is None:
        raise NotFound(f"Prescription {prescription_id} does not exist.")
    return view
