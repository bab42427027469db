"""The prescription status resource, read in ONE query: the row, its joins and its timeline.

The patient page polls ``GET /api/v1/prescriptions/<id>``; support and FHIR
clients read timelines. Each read is one SELECT: the prescription joined to
its patient, prescriber, pharmacy and dispatch outbox row, with the medicine
lines and the status history aggregated into JSON by correlated subqueries
(PostgreSQL ``json_agg(json_build_object(...))``, SQLite
``json_group_array(json_object(...))``, the same shape on both). The caller's
identity is part of the WHERE clause (a patient caller's subject is matched on
``patients.external_ref``), so resolving who may see the row costs nothing
extra. No ORM objects are loaded, so nothing can lazy-load.

The same statement serves a page of a patient's prescriptions, with the
page's total as a window count (``count(*) OVER ()``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    RowMapping,
    Select,
    bindparam,
    case,
    func,
    literal_column,
    over,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session, aliased

from app.foundation.db import execute_prepared
from app.foundation.models import (
    DispatchOutbox,
    Patient,
    Pharmacy,
    Prescriber,
    Prescription,
    PrescriptionMedicine,
    StatusHistory,
)
from app.mechanisms.audit import Access, insert_selected
from app.services.pharmacies import one_line_address
from connector.statuses import rank

# Column names of the medicine lines and history entries inside the JSON aggregates.
_MEDICINE_KEYS = ("position", "vpid", "description", "quantity", "directions")
_HISTORY_KEYS = (
    "id",
    "from_status",
    "to_status",
    "occurred_at",
    "received_at",
    "source",
    "event_id",
    "detail",
    "actor",
)


@dataclass(frozen=True)
class Viewer:
    """Who is reading, as far as the view cares.

    ``patient_ref``: a patient caller's subject (``Patient.external_ref``);
    only that patient's prescriptions exist for them. None for support and
    service callers, who see every prescription. ``privileged``: support or
    service; they see ``platform_token`` and the ``patient`` block (PHI: the
    display name), a patient never does.
    """

    patient_ref: str | None
    privileged: bool


def _json_rows(dialect: str, columns: Sequence[tuple[str, Any]]) -> Any:
    """An aggregate of one JSON object per row, ``[{key: value}, ...]`` (NULL on PostgreSQL
    when there is no row)."""
    pairs: list[Any] = []
    for key, column in columns:
        # The key as SQL text, not a bound parameter: a prepared statement cannot type a
        # parameter passed to json_build_object's "any" arguments. Keys are code's constants.
        pairs += [literal_column(f"'{key}'"), column]
    if dialect == "postgresql":
        return func.json_agg(func.json_build_object(*pairs))
    return func.json_group_array(func.json_object(*pairs))


def view_select(dialect: str) -> Select[Any]:
    """The view statement for ``dialect`` (``postgresql`` or ``sqlite``), with no WHERE clause yet.

    One row per prescription; columns named as :func:`view_from_row` reads them.
    """
    medicines = (
        select(
            _json_rows(
                dialect,
                [(k, getattr(PrescriptionMedicine, k)) for k in _MEDICINE_KEYS],
            )
        )
        .where(PrescriptionMedicine.prescription_id == Prescription.id)
        .correlate(Prescription)
        .scalar_subquery()
        .label("medicines")
    )
    history = (
        select(_json_rows(dialect, [(k, getattr(StatusHistory, k)) for k in _HISTORY_KEYS]))
        .where(StatusHistory.prescription_id == Prescription.id)
        .correlate(Prescription)
        .scalar_subquery()
        .label("history")
    )
    pharmacy = aliased(Pharmacy)
    return (
        select(
            Prescription.id,
            Prescription.reference,
            Prescription.status,
            Prescription.created_at,
            Prescription.updated_at,
            Prescription.pharmacy_id,
            Prescription.platform_token,
            Prescription.rejection_message,
            Prescription.rejection_errors,
            Patient.external_ref.label("patient_ref"),
            Patient.region_code.label("region"),
            Patient.first_name.label("patient_first_name"),
            Patient.last_name.label("patient_last_name"),
            Prescriber.id.label("prescriber_id"),
            Prescriber.name.label("prescriber_name"),
            Prescription.clinic_id,
            pharmacy.name.label("pharmacy_name"),
            pharmacy.address_line1.label("pharmacy_address_line1"),
            pharmacy.city.label("pharmacy_city"),
            pharmacy.post_code.label("pharmacy_post_code"),
            DispatchOutbox.state.label("dispatch_state"),
            DispatchOutbox.attempts.label("dispatch_attempts"),
            DispatchOutbox.next_attempt_at.label("dispatch_next_attempt_at"),
            DispatchOutbox.last_error.label("dispatch_last_error"),
            medicines,
            history,
        )
        .select_from(Prescription)
        .join(Patient, Patient.id == Prescription.patient_id)
        .join(Prescriber, Prescriber.id == Prescription.prescriber_id)
        .outerjoin(pharmacy, pharmacy.id == Prescription.pharmacy_id)
        .outerjoin(DispatchOutbox, DispatchOutbox.prescription_id == Prescription.id)
    )


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


_KEY_COLUMNS = {
    "prescription_id": Prescription.id,
    "reference": Prescription.reference,
    "platform_token": Prescription.platform_token,
}


@cache
def _one_statement(dialect: str, key: str, patient_scoped: bool) -> Select[Any]:
    """The :func:`view_select` of one prescription by ``key`` (a :data:`_KEY_COLUMNS` name),
    limited to one patient when ``patient_scoped``; bound parameters ``key`` and ``patient_ref``.

    Built once per process and shape: building the statement costs more CPU than
    running it (a read is a poll the patient page repeats). Run by
    :func:`app.foundation.db.execute_prepared`: prepared once per connection on
    PostgreSQL, since parsing and planning it cost the server more than running it.
    """
    stmt = view_select(dialect).where(_KEY_COLUMNS[key] == bindparam("key"))
    if patient_scoped:
        stmt = stmt.where(Patient.external_ref == bindparam("patient_ref"))
    return stmt


@cache
def _recorded_statement(key: str, patient_scoped: bool) -> Select[Any]:
    """PostgreSQL: :func:`_one_statement` with the audit row of what it shows written in the
    same statement (a data-modifying CTE, :func:`app.mechanisms.audit.insert_selected`): one
    round trip for the view and its record. Extra bound parameters: :meth:`Access.params`."""
    shown = _one_statement("postgresql", key, patient_scoped).cte("shown")
    recorded = insert_selected(prescription_id=shown.c.id).cte("recorded")
    return select(shown).add_cte(recorded)


def find_row(
    session: Session,
    *,
    viewer: Viewer,
    recorded: Access | None = None,
    prescription_id: int | None = None,
    reference: str | None = None,
    platform_token: str | None = None,
) -> RowMapping | None:
    """Return the :func:`view_select` row of the prescription with this id, reference or token.

    Give one key (the first given wins; ValueError when none is). Returns None
    when no prescription matches or ``viewer`` may not see it: one query
    either way. ``recorded``: the access to audit when a row is shown (one row
    naming it; nothing when none is): on PostgreSQL in the same statement
    (:func:`_recorded_statement`), elsewhere an INSERT after it; in ``session``'s
    transaction either way. ValueError for an invalid ``recorded`` (before any
    statement is sent); database errors propagate.
    """
    given = {
        "prescription_id": prescription_id,
        "reference": reference,
        "platform_token": platform_token,
    }
    name = next((k for k, v in given.items() if v is not None), None)
    if name is None:
        raise ValueError("give prescription_id, reference or platform_token")
    params = {"key": given[name], "patient_ref": viewer.patient_ref}
    patient_scoped = viewer.patient_ref is not None
    dialect = _dialect(session)
    if recorded is not None and dialect == "postgresql":
        stmt = _recorded_statement(name, patient_scoped)
        row = execute_prepared(session.connection(), stmt, params | recorded.params()).first()
        return row._mapping if row is not None else None
    if recorded is not None:
        recorded.params()  # validates before the read, as the one-statement form does
    stmt = _one_statement(dialect, name, patient_scoped)
    row = execute_prepared(session.connection(), stmt, params).first()
    if row is None:
        return None
    if recorded is not None:
        recorded.record(session, [row.id])
    return row._mapping


def find_view(
    session: Session, *, viewer: Viewer, recorded: Access | None = None, **key: Any
) -> dict[str, Any] | None:
    """:func:`find_row` (same keys and ``recorded``) built into :func:`view_from_row`'s dict,
    or None."""
    row = find_row(session, viewer=viewer, recorded=recorded, **key)
    return view_from_row(row, viewer=viewer) if row is not None else None


@dataclass(frozen=True)
class RowPage:
    """A page of :func:`view_select` rows (``rows``, mappings by column name), ``total``
    matches, and ``patient_found`` (False when the subject has no patient record)."""

    rows: tuple[RowMapping, ...]
    total: int
    patient_found: bool


@cache
def _page_statement(dialect: str, patient_scoped: bool) -> Select[Any]:
    """The :func:`view_select` page of one patient's prescriptions with the window total;
    bound parameters ``subject``, ``limit``, ``offset`` (and ``patient_ref`` when
    ``patient_scoped``). Built once per process and shape, as :func:`_one_statement`."""
    stmt = (
        view_select(dialect)
        .add_columns(over(func.count()).label("total"))
        .where(Patient.external_ref == bindparam("subject"))
        .order_by(Prescription.created_at.desc(), Prescription.id.desc())
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )
    if patient_scoped:
        stmt = stmt.where(Patient.external_ref == bindparam("patient_ref"))
    return stmt


@cache
def _recorded_page_statement(patient_scoped: bool) -> Select[Any]:
    """PostgreSQL: :func:`_page_statement` with ONE audit row naming the prescriptions on the
    page (the one, or the list in page order: :meth:`Access.record`), written in the same
    statement (a data-modifying CTE, :func:`app.mechanisms.audit.insert_selected`); an empty page writes none here (the
    caller records it once it knows the patient exists). Extra bound parameters:
    :meth:`Access.params`."""
    shown = _page_statement("postgresql", patient_scoped).cte("shown")
    newest_first = (shown.c.created_at.desc(), shown.c.id.desc())
    # As Access.record: one prescription shown, a row naming it; several, one row listing them.
    one = func.count() == 1
    recorded = insert_selected(
        prescription_id=case((one, func.min(shown.c.id))),
        prescription_ids=case(
            (func.count() > 1, func.array_agg(aggregate_order_by(shown.c.id, *newest_first)))
        ),
        having=func.count() > 0,
    )
    return select(shown).add_cte(recorded.cte("recorded")).order_by(*newest_first)


def patient_page(
    session: Session,
    *,
    viewer: Viewer,
    subject: str,
    limit: int,
    offset: int,
    recorded: Access | None = None,
) -> RowPage:
    """Return one page of ``subject``'s prescriptions, newest first (``created_at``, then ``id``).

    One query carries the page and the total (a window count). Only a page
    past the end (no row to carry the count) costs a second, small query,
    which also tells an unknown subject (``patient_found`` False) from an
    empty page. ``recorded``: the access to audit, one row naming the page's
    prescriptions in order (an empty page too; an unknown subject none): on
    PostgreSQL written by the page query itself (:func:`_recorded_page_statement`),
    elsewhere an INSERT after it; in ``session``'s transaction either way.
    ValueError for an invalid ``recorded`` (before any statement); database
    errors propagate.
    """
    params = {
        "subject": subject,
        "patient_ref": viewer.patient_ref,
        "limit": limit,
        "offset": offset,
    }
    patient_scoped = viewer.patient_ref is not None
    dialect = _dialect(session)
    in_statement = recorded is not None and dialect == "postgresql"
    if in_statement:
        stmt = _recorded_page_statement(patient_scoped)
        params |= recorded.params()
    else:
        if recorded is not None:
            recorded.params()  # validates before the read, as the one-statement form does
        stmt = _page_statement(dialect, patient_scoped)
    rows = execute_prepared(session.connection(), stmt, params).all()
    if rows:
        if recorded is not None and not in_statement:
            recorded.record(session, [int(r.id) for r in rows])
        return RowPage(
            rows=tuple(r._mapping for r in rows), total=int(rows[0].total), patient_found=True
        )
    counted = session.execute(
        select(Patient.id, func.count(Prescription.id))
        .select_from(Patient)
        .outerjoin(Prescription, Prescription.patient_id == Patient.id)
        .where(Patient.external_ref == subject)
        .group_by(Patient.id)
    ).first()
    if counted is None:
        return RowPage(rows=(), total=0, patient_found=False)
    if recorded is not None:
        recorded.record(session, [])
    return RowPage(rows=(), total=int(counted[1]), patient_found=True)


def as_utc(value: datetime | str) -> datetime:
    """Return ``value`` as an aware UTC datetime.

    Accepts an aware datetime, or the text a JSON aggregate carries: PostgreSQL
    renders ``timestamptz`` with its offset, SQLite stores naive UTC text.
    """
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    if parsed.tzinfo is UTC:
        return parsed
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _zulu(moment: datetime) -> str:
    # An aware UTC datetime's isoformat() ends in "+00:00"; the API writes "Z".
    return moment.isoformat()[:-6] + "Z"


def iso(value: datetime | str | None) -> str | None:
    """Return ``value`` (as :func:`as_utc` takes it) as ISO 8601 UTC with ``Z``
    (``2026-11-20T10:15:08Z``; microseconds only when not zero), or None.

    PostgreSQL's JSON text of a ``timestamptz`` in a UTC session
    (``2026-11-20T10:15:08.12+00:00``: fractional digits without trailing zeros, none
    at all for a whole second) is rewritten as text, without a parse: a page of 50
    views writes some 500 of them. Any other form is parsed (:func:`as_utc`).
    """
    if value is None:
        return None
    if isinstance(value, str) and value.endswith("+00:00") and value[10:11] == "T":
        fraction = value[19:-6]
        if not fraction:
            return value[:19] + "Z"
        if fraction[0] == "." and 2 <= len(fraction) <= 7:
            return value[:19] + fraction.ljust(7, "0") + "Z"
    return _zulu(as_utc(value))


def aggregated(value: Any) -> list[dict[str, Any]]:
    """The rows of a JSON aggregate column (``medicines``, ``history``) as a list of dicts."""
    # psycopg2 decodes json to lists; SQLite hands back the text; an empty json_agg is NULL.
    if value is None:
        return []
    return json.loads(value) if isinstance(value, str) else list(value)


def history_entries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API timeline from history rows (as aggregated), in lifecycle order.

    The service's own steps (queued, retries, rejected) by time, then issued,
    signed, printed and the final status (contract §6): the platform stamps
    events to the second, so rank, not the clock, orders ``issued`` (our clock)
    before ``signed`` (theirs). ``reason`` is the stored detail of a void
    (support's text), else None; ``actor`` who did an operator step (e.g.
    ``"support:<subject>"``), else None.
    """
    # Each time is written once; its Z text orders as the instant when split at the seconds
    # (a whole second, no fraction, sorts before any fraction of it).
    keyed = []
    for h in rows:
        occurred = iso(h["occurred_at"])
        keyed.append((rank(h["to_status"]), occurred[:19], occurred[19:-1], h["id"], occurred, h))
    keyed.sort(key=lambda k: k[:4])
    return [
        {
            "from": h["from_status"],
            "to": h["to_status"],
            "occurred_at": occurred,
            "received_at": iso(h["received_at"]),
            "source": h["source"],
            "event_id": h["event_id"],
            "reason": h["detail"] if h["to_status"] == "voided" else None,
            "actor": h.get("actor") or None,
        }
        for *_, occurred, h in keyed
    ]


def view_from_row(row: Any, *, viewer: Viewer) -> dict[str, Any]:
    """Build the status resource from one row of :func:`view_select` (a mapping by column name).

    Keys: ``id``, ``reference``, ``status``, ``region``, ``created_at`` (ISO
    8601 UTC, ``Z``), ``prescriber`` (``{"id", "name"}``), ``pharmacy_id``,
    ``pharmacy`` (``{"id", "name", "address"}`` or None), ``medicines`` (in
    line order), ``rejection``, ``dispatch``, ``history``
    (:func:`history_entries`); for a privileged viewer also
    ``platform_token`` and ``patient`` (``{"ref", "name"}``).
    """
    medicines = sorted(aggregated(row["medicines"]), key=lambda m: m["position"])
    outbox_state = row["dispatch_state"]
    view: dict[str, Any] = {
        "id": row["id"],
        "reference": row["reference"],
        "status": row["status"],
        "region": row["region"],
        "created_at": iso(row["created_at"]),
        "prescriber": {"id": row["prescriber_id"], "name": row["prescriber_name"]},
        "pharmacy_id": row["pharmacy_id"],
        "pharmacy": (
            {
                "id": row["pharmacy_id"],
                "name": row["pharmacy_name"],
                "address": one_line_address(
                    row["pharmacy_address_line1"], row["pharmacy_city"], row["pharmacy_post_code"]
                ),
            }
            if row["pharmacy_id"] is not None
            else None
        ),
        "medicines": [
            {k: m[k] for k in ("vpid", "description", "quantity", "directions")} for m in medicines
        ],
        "rejection": (
            {
                "message": row["rejection_message"],
                "errors": json.loads(row["rejection_errors"] or "{}"),
            }
            if row["status"] == "rejected"
            else None
        ),
        "dispatch": (
            {
                "state": outbox_state,
                "attempts": row["dispatch_attempts"],
                "next_attempt_at": (
                    iso(row["dispatch_next_attempt_at"]) if outbox_state == "pending" else None
                ),
                "last_error": row["dispatch_last_error"],
            }
            if outbox_state is not None
            else None
        ),
        "history": history_entries(aggregated(row["history"])),
    }
    if viewer.privileged:
        view["platform_token"] = row["platform_token"]
        view["patient"] = {
            "ref": row["patient_ref"],
            "name": f"{row['patient_first_name']} {row['patient_last_name']}",
        }
    return view
