"""Stage a status event in the event outbox, inside the caller's transaction.

The history function calls :func:`stage_status_event` for every history row
it actually appends, so the event row commits or rolls back with the
transition: a transition is never lost and never published without having
happened. Nothing here talks to the broker.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.foundation.models import EventOutbox, Patient, Prescription, Region
from app.mechanisms.event_contract import STATUS_CHANGED, STATUS_CHANGED_VERSION
from app.mechanisms.queue import pending_values


def rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with a ``Z`` (``2026-12-01T09:14:02.118000Z``).

    Raises ``ValueError`` for a naive datetime (its zone would be a guess).
    """
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC datetime")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def routing_key(region: str, to_status: str) -> str:
    """Return ``prescription.status_changed.<region>.<to>`` (docs/events.md, "Routing keys")."""
    return f"{STATUS_CHANGED}.{region}.{to_status}"


def status_event_values(
    prescription: Prescription,
    *,
    region: str,
    route: str,
    from_status: str | None,
    to_status: str,
    occurred_at: datetime,
    recorded_at: datetime,
    source: str,
    request_id: str | None,
) -> dict[str, Any]:
    """The column values of one ``prescription.status_changed`` v1 event row (a fresh event id).

    ``region`` and ``route`` are the patient's region code and its flow; the
    other arguments are as for :func:`stage_status_event`. Used where event
    rows are inserted many at once (the inbox's set-based apply).
    """
    event_id = str(uuid.uuid4())
    message = {
        "event_id": event_id,
        "type": STATUS_CHANGED,
        "version": STATUS_CHANGED_VERSION,
        "occurred_at": rfc3339(occurred_at),
        "recorded_at": rfc3339(recorded_at),
        "prescription": {
            "id": prescription.id,
            "reference": prescription.reference,
            "region": region,
            "route": route,
            "pharmacy_id": prescription.pharmacy_id,
        },
        "from": from_status,
        "to": to_status,
        "source": source,
        "request_id": request_id,
    }
    return {
        "event_id": event_id,
        "prescription_id": prescription.id,
        "event_type": STATUS_CHANGED,
        "version": STATUS_CHANGED_VERSION,
        "routing_key": routing_key(region, to_status),
        "payload": json.dumps(message, separators=(",", ":")),
        **pending_values(now=recorded_at),
        "created_at": recorded_at,
    }


def stage_status_event(
    session: Session,
    prescription: Prescription,
    *,
    from_status: str | None,
    to_status: str,
    occurred_at: datetime,
    recorded_at: datetime,
    source: str,
    request_id: str | None,
) -> EventOutbox:
    """Insert one ``prescription.status_changed`` v1 event row in ``session``'s transaction.

    Args:
        session: the caller's session, inside the transaction that appends the
            history row; nothing is committed here.
        prescription: the prescription that moved (its id, reference, patient
            and pharmacy are read; only ids go into the message, no PHI).
        from_status, to_status: the statuses before and after.
        occurred_at, recorded_at: aware UTC datetimes (when it happened; when
            the history row was written).
        source: the history source (``service``, ``api``, ``webhook``, ...).
        request_id: what caused it (the webhook event id) or None.

    Returns:
        The pending :class:`~app.foundation.models.EventOutbox` row (flushed with the session).
    """
    region, route = session.execute(
        select(Patient.region_code, Region.flow)
        .join(Region, Region.code == Patient.region_code)
        .where(Patient.id == prescription.patient_id)
    ).one()
    row = EventOutbox(
        **status_event_values(
            prescription,
            region=region,
            route=route,
            from_status=from_status,
            to_status=to_status,
            occurred_at=occurred_at,
            recorded_at=recorded_at,
            source=source,
            request_id=request_id,
        )
    )
    session.add(row)
    return row
