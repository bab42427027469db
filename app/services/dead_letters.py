"""Dead-lettered sends: listing them, and putting one back in the queue (operator use cases);
sends parked in ``blocked_credentials`` (listing them: they resume when the
prescriber's credentials are stored again)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from app.foundation.db import Database
from app.foundation.errors import Conflict, NotFound
from app.foundation.models import DispatchOutbox, Prescriber, Prescription
from app.mechanisms.audit import OPERATOR, record_by
from app.mechanisms.history import Change, local, record
from app.mechanisms.queue import BLOCKED_CREDENTIALS, reopen
from app.services.mail import reopen_for_resend


@dataclass(frozen=True)
class DeadLetter:
    """One dead outbox row: ids, reference, attempts, the one-line cause, outcome unknown or not."""

    outbox_id: int
    prescription_id: int
    reference: str
    attempts: int
    last_error: str | None
    outcome_unknown: bool

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict, in declaration order."""
        return asdict(self)


@dataclass(frozen=True)
class Requeued:
    """A dead letter put back in the queue."""

    outbox_id: int
    prescription_id: int


def list_dead(db: Database) -> list[DeadLetter]:
    """Return every dead outbox row, oldest id first."""
    with db.session() as session:
        rows = session.execute(
            select(DispatchOutbox, Prescription.reference)
            .join(Prescription, Prescription.id == DispatchOutbox.prescription_id)
            .where(DispatchOutbox.state == "dead")
            .order_by(DispatchOutbox.id)
        ).all()
        return [
            DeadLetter(
                outbox_id=row.id,
                prescription_id=row.prescription_id,
                reference=reference,
                attempts=row.attempts,
                last_error=row.last_error,
                outcome_unknown=row.outcome_unknown,
            )
            for row, reference in rows
        ]


@dataclass(frozen=True)
class BlockedSend:
    """A send parked: its prescriber's credentials can't be used (refused, missing, undecryptable).

    ``login``: the prescriber's login email (what ``prescribers set-credentials`` takes);
    ``blocked_since``: when the platform refused that prescriber (aware UTC, ISO 8601 in
    ``as_dict``; None when no login was refused); ``last_error``: the one-line cause.
    """

    outbox_id: int
    prescription_id: int
    reference: str
    login: str
    blocked_since: datetime | None
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict, in declaration order."""
        item = asdict(self)
        item["blocked_since"] = self.blocked_since.isoformat() if self.blocked_since else None
        return item


def list_blocked(db: Database) -> list[BlockedSend]:
    """Return every outbox row in ``blocked_credentials``, oldest id first."""
    with db.session() as session:
        rows = session.execute(
            select(
                DispatchOutbox.id,
                Prescription.id,
                Prescription.reference,
                Prescriber.email,
                Prescriber.credentials_refused_at,
                DispatchOutbox.last_error,
            )
            .join(Prescription, Prescription.id == DispatchOutbox.prescription_id)
            .join(Prescriber, Prescriber.id == Prescription.prescriber_id)
            .where(DispatchOutbox.state == BLOCKED_CREDENTIALS)
            .order_by(DispatchOutbox.id)
        ).all()
        return [BlockedSend(*row) for row in rows]


def requeue(db: Database, outbox_id: int, *, now: datetime) -> Requeued:
    """Put dead outbox row ``outbox_id`` back in the queue, due at ``now`` (aware UTC).

    Attempts restart from zero; ``outcome_unknown`` is kept, so a lookup still
    comes before any new send. The prescription goes back to ``queued``
    (source ``operator``), with a ``requeue`` audit row (actor ``operator``).
    A ``blocked_credentials`` row is requeued the same way (after a key was put
    back in ``ERX_ENCRYPTION_KEYS``). Raises :class:`NotFound` (no such row) or
    :class:`Conflict` (the row is neither dead nor blocked).
    """
    with db.session() as session:
        row = session.get(DispatchOutbox, outbox_id, with_for_update=True)
        if row is None:
            raise NotFound(f"outbox row {outbox_id} does not exist")
        if row.state not in ("dead", BLOCKED_CREDENTIALS):
            raise Conflict(f"outbox row {outbox_id} is not a dead letter (state {row.state})")
        reopen(row, now=now)
        row.updated_at = now
        if row.flow == "email":
            # An email in doubt is sent again only on this explicit decision (same Message-ID).
            reopen_for_resend(session, row.prescription_id, now=now)
        prescription = session.get(Prescription, row.prescription_id, with_for_update=True)
        if prescription is None:
            raise NotFound(f"outbox row {outbox_id} has no prescription {row.prescription_id}")
        if prescription.status != "queued":  # a blocked send's prescription still is
            record(
                session,
                [
                    Change(
                        prescription,
                        local(
                            prescription, "queued", source="operator", detail="requeued", now=now
                        ),
                    )
                ],
            )
        record_by(session, OPERATOR, action="requeue", prescription_id=prescription.id, now=now)
        return Requeued(outbox_id=row.id, prescription_id=row.prescription_id)
