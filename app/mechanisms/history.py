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

from sqlalchemy import bindparam, case, insert, literal, literal_column, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.foundation.db import insert_ignore, insert_ignore_statement, utcnow
from app.foundation.models import EventOutbox, Prescription, StatusHistory
from app.mechanisms import wakeup as queue_wakeup
from app.mechanisms.event_outbox import stage_status_event, status_event_values
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
    """A status change learned from ``source``; times are aware UTC datetimes.

    ``ours``: the service decided this status itself (the send, dispatch, an
    operator): it always becomes the current status, even backwards (a
    requeue). Otherwise (a webhook, reconciliation) the current status moves
    forward only. ``actor``: who did it, stored in the history row
    (an operator's void; None otherwise). Build ours with :func:`local`.
    """

    to_status: str
    from_status: str | None
    occurred_at: datetime
    source: str
    received_at: datetime | None = None
    event_id: str | None = None
    detail: str | None = None
    ours: bool = False
    actor: str | None = None


@dataclass(frozen=True)
class Change:
    """One transition of one prescription, as :func:`record` takes it.

    ``prescription`` must be locked in the caller's transaction. ``region``
    (the patient's region code) and ``route`` (its flow), when the caller
    already knows them, spare the event row a query.
    """

    prescription: Prescription
    transition: Transition
    region: str | None = None
    route: str | None = None


def local(
    prescription: Prescription,
    to_status: str,
    *,
    source: str,
    detail: str | None = None,
    now: datetime | None = None,
    actor: str | None = None,
) -> Transition:
    """A status the service sets itself (queued, rejected, dead, emailed, issued, voided).

    From the prescription's current status, at ``now`` (aware UTC; default:
    the current time), always moving the current status (``ours``).
    """
    at = now or utcnow()
    return Transition(
        to_status=to_status,
        from_status=prescription.status,
        occurred_at=at,
        received_at=at,
        source=source,
        detail=detail,
        ours=True,
        actor=actor,
    )


def record(session: Session, changes: Sequence[Change]) -> list[bool]:
    """Append each change to its prescription's history and move its current status.

    The one way a prescription's status is recorded: the send, dispatch,
    webhooks, reconciliation, voids and operators all call it. Per change, in
    order:

    - the history row is appended at most once: a lifecycle status (contract
      §6) once per prescription (a partial unique index), an event id once
      overall; a duplicate is skipped, never an error;
    - each appended row stages one ``prescription.status_changed`` event row in
      the same transaction (docs/events.md);
    - the current status moves (:func:`_move`): always for ``ours``, else
      forward only (:func:`connector.statuses.can_advance`).

    Returns, per change, whether its history row was appended. Raises
    :class:`UnknownSource`. Must run inside the caller's transaction with
    every prescription locked (``SELECT ... FOR UPDATE``): the lock is what
    makes a prescription's event ids follow commit order, which the event
    publisher's per-prescription order relies on (docs/events.md).
    """
    rows = [_history_row(change) for change in changes]
    recorded = _append(session, changes, rows)
    moved = {change.prescription.id: change.prescription for change in changes}
    # Several prescriptions (the inbox's batch): the moves are computed on the objects in
    # order (two events for one prescription see each other) and stored in one UPDATE.
    stored = len(moved) > 1
    for change, row in zip(changes, rows, strict=True):
        _move(change.prescription, change.transition, row["received_at"], stored=stored)
    if stored:
        _store_moves(session, list(moved.values()))
    return recorded


_MOVED = ("status", "last_event_at", "updated_at")


def _move(
    prescription: Prescription, transition: Transition, received_at: datetime, *, stored: bool
) -> None:
    """The one rule for the current status: ours always moves it, a learned one forward only.

    ``stored``: the caller stores the moved columns itself (:func:`_store_moves`), so
    they are set as committed values (nothing for the ORM to flush); otherwise they
    are set as changes, flushed with whatever else the caller changed on the row in
    one UPDATE (dispatch's ``issued`` with its platform token).
    """
    lifecycle = transition.to_status in LIFECYCLE
    values: dict[str, Any] = {"updated_at": received_at}
    if transition.ours or (lifecycle and can_advance(prescription.status, transition.to_status)):
        values["status"] = transition.to_status
    last = prescription.last_event_at
    if lifecycle and (last is None or last < received_at):
        values["last_event_at"] = received_at
    for key, value in values.items():
        if stored:
            set_committed_value(prescription, key, value)
        else:
            setattr(prescription, key, value)


def _store_moves(session: Session, prescriptions: list[Prescription]) -> None:
    """Store the moved columns of ``prescriptions`` (as :func:`_move` left them) in ONE UPDATE.

    One statement for a batch where the ORM's flush sends one per row (and
    PostgreSQL parses and plans each). PostgreSQL: a statement built once, the
    values as four arrays (``UPDATE ... FROM unnest(...)``); SQLite:
    ``SET status = CASE id WHEN ... END, ...``, the values bound with the
    columns' own types. If the caller's savepoint rolls back
    afterwards, the objects still hold the moved values: it must expire them.
    """
    columns = {name: [getattr(p, name) for p in prescriptions] for name in _MOVED}
    ids = [p.id for p in prescriptions]
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_MOVES_PG, {"ids": ids, **columns})
        return
    table = Prescription.__table__
    values = {
        name: case(
            {
                pid: literal(value, type_=table.c[name].type)
                for pid, value in zip(ids, columns[name], strict=True)
            },
            value=table.c.id,
        )
        for name in _MOVED
    }
    session.execute(update(table).where(table.c.id.in_(ids)).values(values))


_MOVES_PG = text(
    "UPDATE prescriptions AS p"
    " SET status = m.status, last_event_at = m.last_event_at, updated_at = m.updated_at"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:status AS varchar[]),"
    " CAST(:last_event_at AS timestamptz[]), CAST(:updated_at AS timestamptz[]))"
    " AS m(id, status, last_event_at, updated_at)"
    " WHERE p.id = m.id"
)  # Not prepared: a prepared statement would type an array of NULLs as text[] and refuse it.


def _history_row(change: Change) -> dict[str, Any]:
    t = change.transition
    if t.source not in SOURCES:
        raise UnknownSource(t.source)
    row = {
        "prescription_id": change.prescription.id,
        "from_status": t.from_status,
        "to_status": t.to_status,
        "occurred_at": t.occurred_at,
        "received_at": t.received_at or utcnow(),
        "source": t.source,
        "event_id": t.event_id,
        "detail": t.detail,
        "actor": t.actor,
    }
    return row


def _event(change: Change, row: dict[str, Any]) -> dict[str, Any]:
    t = change.transition
    if change.region is None or change.route is None:
        raise ValueError("an event row needs the patient's region and route")
    return status_event_values(
        change.prescription,
        region=change.region,
        route=change.route,
        from_status=t.from_status,
        to_status=t.to_status,
        occurred_at=t.occurred_at,
        recorded_at=row["received_at"],
        source=t.source,
        request_id=t.event_id,
    )


def _append(session: Session, changes: Sequence[Change], rows: list[dict[str, Any]]) -> list[bool]:
    """Insert the history rows (skipping duplicates) and one event row per appended one.

    The statements are chosen for the fewest round trips; they store the same rows:

    - PostgreSQL, one change whose region and route are known (dispatch's
      ``issued``): ONE statement, ``WITH h AS (INSERT ... ON CONFLICT DO
      NOTHING RETURNING) INSERT INTO event_outbox SELECT ... FROM h``;
    - several changes, each with an event id and region and route (the inbox's
      batch): one ``INSERT ... ON CONFLICT DO NOTHING RETURNING event_id``
      executemany (in order, so of two events for the same step the first
      wins) and one event INSERT;
    - otherwise one INSERT per change, and its event row.
    """
    if not changes:
        return []
    known = all(c.region is not None and c.route is not None for c in changes)
    dialect = session.get_bind().dialect.name
    if known and len(changes) == 1 and dialect == "postgresql":
        event = _event(changes[0], rows[0])
        params = {f"h_{k}": v for k, v in rows[0].items()} | {f"e_{k}": v for k, v in event.items()}
        returned = session.execute(_history_with_event_pg(tuple(event)), params).first()
        return [returned is not None]
    batch = len(changes) > 1 and len({tuple(r) for r in rows}) == 1
    if known and batch and all(c.transition.event_id is not None for c in changes):
        stmt = insert_ignore_statement(dialect, StatusHistory.__table__)
        inserted = set(session.scalars(stmt.returning(StatusHistory.event_id), rows))
        recorded = [c.transition.event_id in inserted for c in changes]
        _stage(session, changes, rows, recorded)
        return recorded
    recorded = [insert_ignore(session, StatusHistory.__table__, row) for row in rows]
    _stage(session, changes, rows, recorded)
    return recorded


def _stage(
    session: Session, changes: Sequence[Change], rows: list[dict[str, Any]], recorded: list[bool]
) -> None:
    """One event row per appended history row, in this transaction (docs/events.md)."""
    events = []
    for change, row, appended in zip(changes, rows, recorded, strict=True):
        if not appended:
            continue
        if change.region is None or change.route is None:
            t = change.transition
            stage_status_event(
                session,
                change.prescription,
                from_status=t.from_status,
                to_status=t.to_status,
                occurred_at=t.occurred_at,
                recorded_at=row["received_at"],
                source=t.source,
                request_id=t.event_id,
            )
        else:
            events.append(_event(change, row))
    if events:
        session.execute(insert(EventOutbox), events)
        # A Core insert is invisible to the after-flush hook: wake the publisher here.
        queue_wakeup.notify_queued(session, EventOutbox)


_HISTORY_WITH_EVENT: dict[tuple[str, ...], Any] = {}


def _history_with_event_pg(event_columns: tuple[str, ...]) -> Any:
    """The PostgreSQL statement appending a history row and, if appended, its event row.

    Built once per set of event columns. The event row's insert also notifies
    the publisher's channel (app/mechanisms/wakeup.py): a Core insert is invisible
    to the after-flush hook. Bind parameters: ``h_<history column>`` and
    ``e_<event_outbox column>``; returns one row when the event row was staged.
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
        rows = select(
            *(bindparam(f"e_{c}", type_=events.c[c].type) for c in event_columns)
        ).select_from(appended)
        stmt = _HISTORY_WITH_EVENT[event_columns] = (
            insert(events)
            .from_select(list(event_columns), rows)
            .add_cte(appended, nest_here=True)
            # Wakes the event publisher, on commit, only when an event row was staged.
            .returning(literal_column(queue_wakeup.notify_sql(queue_wakeup.CHANNELS[EventOutbox])))
        )
    return stmt


_HISTORY_COLUMNS = (
    "prescription_id",
    "from_status",
    "to_status",
    "occurred_at",
    "received_at",
    "source",
    "event_id",
    "detail",
    "actor",
)
