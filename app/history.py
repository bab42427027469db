"""The prescription status history: append-only transitions, forward-only current status.

Every status a prescription passes through is appended to
``prescription_status_history``; nothing is overwritten. The prescription's
current status moves only forward along the lifecycle (contract §6): a late
or duplicate event is still recorded (once) but never moves it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from app import queue_wakeup
from app.db import insert_ignore, insert_ignore_statement, utcnow
from app.events.outbox import stage_status_event, status_event_values
from app.models import EventOutbox, Prescription, StatusHistory
from connector.statuses import LIFECYCLE, can_advance

# Committing a staged event row wakes the event publisher (PostgreSQL NOTIFY in the
# same transaction; the ORM rows of stage_status_event through the after-flush hook).
queue_wakeup.install()

SOURCES = ("service", "api", "webhook", "reconcile", "operator")


class UnknownSource(ValueError):
    """A transition names a source outside :data:`SOURCES` (a programming error)."""

    def __init__(self, source: str) -> None:
        super().__init__(f"unknown history source {source!r}")
        self.source = source


@dataclass(frozen=True)
class Transition:
    """A status change learned from ``source``; times are aware UTC datetimes."""

    to_status: str
    from_status: str | None
    occurred_at: datetime
    source: str
    received_at: datetime | None = None
    event_id: str | None = None
    detail: str | None = None
    actor: str | None = None  # who did an operator step (a void), e.g. "support:<subject>"


def record_transition(
    session: Session, prescription: Prescription, transition: Transition
) -> tuple[bool, bool]:
    """Append ``transition`` to the history of ``prescription`` and advance its status.

    The history insert is idempotent: a lifecycle status (§6) is stored at
    most once per prescription (a partial unique index) and an event id at
    most once overall. The
    current status moves only if :func:`connector.statuses.can_advance` allows.
    Returns ``(recorded, advanced)``. Must run inside the caller's transaction
    with ``prescription`` locked in it (``SELECT ... FOR UPDATE``): the lock is
    what makes a prescription's event ids follow commit order, which the event
    publisher's per-prescription order relies on (docs/events.md).
    """
    if transition.source not in SOURCES:
        raise UnknownSource(transition.source)
    received_at = transition.received_at or utcnow()
    step = transition.to_status if transition.to_status in LIFECYCLE else None
    recorded = insert_ignore(
        session,
        StatusHistory.__table__,
        {
            "prescription_id": prescription.id,
            "from_status": transition.from_status,
            "to_status": transition.to_status,
            "occurred_at": transition.occurred_at,
            "received_at": received_at,
            "source": transition.source,
            "event_id": transition.event_id,
            "detail": transition.detail,
            "actor": transition.actor,
        },
    )
    if recorded:  # one event per appended row, in this transaction (issue 11)
        stage_status_event(session, prescription, from_status=transition.from_status, to_status=transition.to_status, occurred_at=transition.occurred_at, recorded_at=received_at, source=transition.source, request_id=transition.event_id)
    advanced = False
    if step is not None and can_advance(prescription.status, transition.to_status):
        prescription.status = transition.to_status
        advanced = True
    if step is not None and (prescription.last_event_at is None or prescription.last_event_at < received_at):
        prescription.last_event_at = received_at
    prescription.updated_at = received_at
    return recorded, advanced


@dataclass(frozen=True)
class BatchItem:
    """One transition of a batch: ``prescription`` (locked), its patient's ``region`` code and ``route`` (flow)."""

    prescription: Prescription
    region: str
    route: str
    transition: Transition


def record_transitions(session: Session, items: Sequence[BatchItem]) -> list[bool]:
    """:func:`record_transition` for many transitions at once, with the same rows as one by one.

    Every transition must carry an ``event_id`` (the webhook's: it matches
    inserted history rows back to their items) and a lifecycle ``to_status``.
    One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` appends the history
    rows (in ``items`` order, so of two events for the same step the first
    wins, as one by one), one INSERT stages one event row per appended history
    row (issue 11), and the prescriptions move forward only, in item order,
    flushed as one executemany. Returns ``recorded`` per item. Raises
    :class:`UnknownSource`, or ValueError for an item without an event id or
    with a local status. Must run inside the caller's transaction with every
    prescription locked.
    """
    if not items:
        return []
    values = []
    for item in items:
        t = item.transition
        if t.source not in SOURCES:
            raise UnknownSource(t.source)
        if t.event_id is None or t.to_status not in LIFECYCLE:
            raise ValueError("a batched transition needs an event id and a lifecycle status")
        values.append(
            {
                "prescription_id": item.prescription.id,
                "from_status": t.from_status,
                "to_status": t.to_status,
                "occurred_at": t.occurred_at,
                "received_at": t.received_at or utcnow(),
                "source": t.source,
                "event_id": t.event_id,
                "detail": t.detail,
            }
        )
    stmt = insert_ignore_statement(session.get_bind().dialect.name, StatusHistory.__table__)
    inserted = set(session.scalars(stmt.returning(StatusHistory.event_id), values))
    recorded = [item.transition.event_id in inserted for item in items]
    events = [
        status_event_values(
            item.prescription,
            region=item.region,
            route=item.route,
            from_status=item.transition.from_status,
            to_status=item.transition.to_status,
            occurred_at=item.transition.occurred_at,
            recorded_at=row["received_at"],
            source=item.transition.source,
            request_id=item.transition.event_id,
        )
        for item, row, was_recorded in zip(items, values, recorded, strict=True)
        if was_recorded
    ]
    if events:  # one event per appended row, in this transaction (issue 11)
        session.execute(insert(EventOutbox), events)
        queue_wakeup.notify_queued(session, EventOutbox)
    for item, row in zip(items, values, strict=True):
        prescription, received_at = item.prescription, row["received_at"]
        if can_advance(prescription.status, item.transition.to_status):
            prescription.status = item.transition.to_status
        if prescription.last_event_at is None or prescription.last_event_at < received_at:
            prescription.last_event_at = received_at
        prescription.updated_at = received_at
    return recorded


def record_local_status(
    session: Session,
    prescription: Prescription,
    to_status: str,
    *,
    source: str,
    detail: str | None = None,
    now: datetime | None = None,
    region: str | None = None,
    route: str | None = None,
    actor: str | None = None,
) -> None:
    """Set a service-side status (queued, rejected, dead, emailed, issued) and log it.

    Unlike :func:`record_transition` this always moves the current status: the
    caller (dispatch, the send API, an operator) owns these transitions.
    ``now`` is aware UTC (default: the current time). ``region`` (the
    patient's region code) and ``route`` (its flow), when the caller already
    knows them, spare the event row a query; on PostgreSQL the history row
    and its event row are then written by ONE statement
    (``WITH h AS (INSERT ... ON CONFLICT DO NOTHING RETURNING) INSERT INTO
    event_outbox SELECT ... FROM h``). Raises :class:`UnknownSource`. As
    :func:`record_transition`, call it with ``prescription`` locked in the
    caller's transaction. ``actor``: who did an operator step (a void), stored
    on the history row, e.g. ``"support:<subject>"``.
    """
    if source not in SOURCES:
        raise UnknownSource(source)
    at = now or utcnow()
    history = {
        "prescription_id": prescription.id,
        "from_status": prescription.status,
        "to_status": to_status,
        "occurred_at": at,
        "received_at": at,
        "source": source,
        "event_id": None,
        "detail": detail,
        "actor": actor,
    }
    dialect = session.get_bind().dialect.name
    if region is not None and route is not None:
        event = status_event_values(
            prescription, region=region, route=route, from_status=prescription.status, to_status=to_status,
            occurred_at=at, recorded_at=at, source=source, request_id=None,
        )
        if dialect == "postgresql":
            # One round trip: the event row exists exactly when the history row was appended.
            params = {f"h_{k}": v for k, v in history.items()} | {f"e_{k}": v for k, v in event.items()}
            session.execute(_history_with_event_pg(tuple(event)), params)
        elif insert_ignore(session, StatusHistory.__table__, history):
            session.execute(insert(EventOutbox), [event])  # SQLite: the publisher polls
    else:
        recorded = insert_ignore(session, StatusHistory.__table__, history)
        if recorded:  # one event per appended row, in this transaction (issue 11)
            stage_status_event(session, prescription, from_status=prescription.status, to_status=to_status, occurred_at=at, recorded_at=at, source=source, request_id=None)
    prescription.status = to_status
    prescription.updated_at = at
    if to_status in LIFECYCLE:
        prescription.last_event_at = at


_HISTORY_WITH_EVENT: dict[tuple[str, ...], Any] = {}


def _history_with_event_pg(event_columns: tuple[str, ...]) -> Any:
    """The PostgreSQL statement appending a history row and, if it was appended, its event row (built once).

    The event row's insert also notifies the publisher's channel (app/queue_wakeup.py):
    a Core insert is invisible to the after-flush hook.

    Bind parameters: ``h_<history column>`` and ``e_<event_outbox column>``.
    """
    stmt = _HISTORY_WITH_EVENT.get(event_columns)
    if stmt is None:
        hist, events = StatusHistory.__table__, EventOutbox.__table__
        appended = (
            postgresql.insert(hist)
            .values({c: bindparam(f"h_{c}", type_=hist.c[c].type) for c in _HISTORY_COLUMNS})
            .on_conflict_do_nothing()
            .returning(hist.c.id)
            .cte("appended")
        )
        rows = select(*(bindparam(f"e_{c}", type_=events.c[c].type) for c in event_columns)).select_from(appended)
        stmt = _HISTORY_WITH_EVENT[event_columns] = (
            insert(events)
            .from_select(list(event_columns), rows)
            .add_cte(appended, nest_here=True)
            # Wakes the event publisher, on commit, only when an event row was staged.
            .returning(literal_column(queue_wakeup.notify_sql(queue_wakeup.CHANNELS[EventOutbox])))
        )
    return stmt


_HISTORY_COLUMNS = (
    "prescription_id", "from_status", "to_status", "occurred_at", "received_at", "source",
    "event_id", "detail", "actor",
)
