"""The audit trail: one append-only row per access to a prescription, sealed in a Merkle tree.

Request and worker paths append with :func:`record` / :func:`record_by` (one row)
or :func:`append_many` (a batch, one multi-row INSERT): a plain INSERT in the
caller's transaction, so the row commits or rolls back with the work it records,
and appenders never wait on a lock or read another row. Tamper evidence comes
afterwards from the sealer (app/mechanisms/audit_sealer.py): it adds committed rows, in
order, as leaves of one log-wide RFC 9162 Merkle tree and signs a checkpoint of
it; :func:`leaf_data` is the exact byte string each row contributes.

Rows written before the sealer existed also carry a hash chain (``prev_hash``,
``hash``: SHA-256 over the canonical JSON of the row plus ``prev_hash``,
:func:`row_hash`); :func:`verify_chain` still checks it, and the sealer's first
seal adds those rows to the tree too. Triggers (migration 0006) refuse UPDATE
and DELETE (and TRUNCATE on PostgreSQL) outright.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Insert, bindparam, func, insert, or_, select
from sqlalchemy.orm import Session

from app.foundation.db import Database
from app.foundation.models import AuditEvent

GENESIS_HASH = "0" * 64
# The first element of every leaf: names the encoding, so a leaf of another format cannot collide.
LEAF_FORMAT = "erx-audit-leaf/1"
# The leaf of a row that names several prescriptions (a list): format 1 plus the list.
LIST_LEAF_FORMAT = "erx-audit-leaf/2"
# What an audit row can say was done; a typo should fail loudly, not start a new action.
# API reads: read (one prescription), list (/me/prescriptions, one row naming every
# prescription listed), fhir-read / fhir-search / fhir-history; changes: send, void, webhook-applied,
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


def iso_utc(value: datetime | None) -> str | None:
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
        "occurred_at": iso_utc(occurred_at),
        "request_id": request_id,
        "client_addr": client_addr,
        "prev_hash": prev_hash,
    }


def row_hash(content: Mapping[str, Any]) -> str:
    """SHA-256 hex of ``content`` as canonical JSON (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sql_literal(value: str | None) -> str:
    """``value`` as PostgreSQL's ``quote_nullable()`` writes it: ``NULL``, or single-quoted
    with ``'`` doubled and, when it holds a backslash, ``E`` before it and ``\\`` doubled."""
    if value is None:
        return "NULL"
    quoted = value.replace("'", "''")
    if "\\" in value:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


def sql_timestamp(value: datetime | str) -> str:
    """UTC time as PostgreSQL writes a ``timestamp`` with DateStyle ISO:
    ``YYYY-MM-DD HH:MM:SS[.ffffff]``, trailing zeros of the fraction dropped.
    ``value``: an aware datetime or its :func:`iso_utc` text."""
    text = value if isinstance(value, str) else iso_utc(value)
    if text is None:
        raise ValueError("a leaf needs a time")
    stamp = text.rstrip("Z").replace("T", " ")
    if "." in stamp:
        stamp = stamp.rstrip("0").rstrip(".")
    return stamp


def id_list_literal(prescription_ids: Sequence[int]) -> str:
    """A list of ids as PostgreSQL quotes a ``bigint[]`` as text: ``'{1,2,3}'`` (``'{}'`` empty)."""
    return "'{" + ",".join(str(int(i)) for i in prescription_ids) + "}'"


def leaf_data(
    *,
    event_id: int,
    actor: str,
    role: str,
    action: str,
    prescription_id: int | None,
    occurred_at: datetime | str,
    request_id: str | None,
    client_addr: str | None,
    prescription_ids: Sequence[int] | None = None,
) -> bytes:
    """The bytes one audit row contributes to the Merkle tree (hashed as an RFC 9162 leaf).

    UTF-8 of ``LEAF_FORMAT,id,actor,role,action,prescription_id,occurred_at,
    request_id,client_addr``: text fields as :func:`sql_literal` quotes them,
    the time as :func:`sql_timestamp` writes it, a missing prescription as
    ``NULL``. A row naming several prescriptions (``prescription_ids`` not
    None: a list) starts with ``LIST_LEAF_FORMAT`` instead and ends with
    ``,'{id,id,...}'`` (:func:`id_list_literal`). This is exactly PostgreSQL's
    ``concat_ws(',', ...)`` of ``quote_nullable`` columns, so the database
    recomputes it cheaply (app/mechanisms/audit_sealer.py, ``LEAF_SQL``), and an
    auditor rebuilds it from an export (docs/audit_verify_export.py). Quoting
    keeps it unambiguous. ``occurred_at``: an aware datetime or its
    :func:`iso_utc` text.
    """
    listed = prescription_ids is not None
    fields = [
        LIST_LEAF_FORMAT if listed else LEAF_FORMAT,
        str(event_id),
        sql_literal(actor),
        sql_literal(role),
        sql_literal(action),
        "NULL" if prescription_id is None else str(prescription_id),
        sql_timestamp(occurred_at),
        sql_literal(request_id),
        sql_literal(client_addr),
    ]
    if prescription_ids is not None:
        fields.append(id_list_literal(prescription_ids))
    return ",".join(fields).encode("utf-8")


# The columns an access is recorded with: both the leaf and the pre-sealer chain cover them.
_RECORDED = (
    "actor",
    "role",
    "action",
    "prescription_id",
    "occurred_at",
    "request_id",
    "client_addr",
)


def _recorded(event: Any) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _RECORDED}


def event_leaf_data(event: Any) -> bytes:
    """:func:`leaf_data` of an ``audit_events`` row (an ORM object, or a row with its columns)."""
    return leaf_data(event_id=event.id, prescription_ids=event.prescription_ids, **_recorded(event))


def _content_of(event: AuditEvent) -> dict[str, Any]:
    return row_content(prev_hash=event.prev_hash, **_recorded(event))


def _check(
    *,
    actor: str,
    role: str,
    action: str,
    request_id: str | None,
    client_addr: str | None,
    now: datetime,
) -> None:
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


def _values(
    *,
    actor: str,
    role: str,
    action: str,
    prescription_id: int | None,
    request_id: str | None,
    client_addr: str | None,
    now: datetime,
) -> dict[str, Any]:
    _check(
        actor=actor,
        role=role,
        action=action,
        request_id=request_id,
        client_addr=client_addr,
        now=now,
    )
    return {
        "actor": actor,
        "role": role,
        "action": action,
        "prescription_id": prescription_id,
        "occurred_at": now.astimezone(UTC),
        "request_id": request_id,
        "client_addr": client_addr,
    }


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
) -> int:
    """Append one audit row in the caller's transaction; return its ``id``.

    One INSERT (with RETURNING): no lock and no read of any other row, so
    appenders never wait on one another; the sealer (app/mechanisms/audit_sealer.py) adds the
    row to the signed Merkle tree after the caller commits. ``actor``: who (API
    token subject, operator login; <= 200 chars, no PHI); ``role``: as what
    (patient, support, service, operator; <= 32); ``action``: one of
    :data:`ACTIONS`; ``now``: aware UTC datetime. The row commits or rolls back
    with the caller's work. Raises ValueError for an unknown action, a naive
    ``now`` or an over-long field.
    """
    values = _values(
        actor=actor,
        role=role,
        action=action,
        prescription_id=prescription_id,
        request_id=request_id,
        client_addr=client_addr,
        now=now,
    )
    return _insert_one(session, values)


_APPEND = insert(AuditEvent.__table__)
_APPEND_RETURNING_ID = insert(AuditEvent.__table__).returning(AuditEvent.__table__.c.id)


def _insert_one(session: Session, values: dict[str, Any]) -> int:
    # Prebuilt: building the statement per read cost more CPU than running it.
    return int(session.execute(_APPEND_RETURNING_ID, values).scalar_one())


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
) -> int:
    """:func:`record` with the who of ``accessor``; same transaction rules and errors.

    Returns the new row's id.
    """
    return _insert_one(
        session, _row(accessor, action=action, prescription_id=prescription_id, now=now)
    )


def _row(
    accessor: Accessor, *, action: str, prescription_id: int | None, now: datetime
) -> dict[str, Any]:
    return _values(
        actor=accessor.actor,
        role=accessor.role,
        action=action,
        prescription_id=prescription_id,
        request_id=accessor.request_id,
        client_addr=accessor.client_addr,
        now=now,
    )


def append_many(
    session: Session,
    accessor: Accessor,
    *,
    action: str,
    prescription_ids: Iterable[int | None],
    now: datetime,
) -> int:
    """Append one ``action`` row per prescription id, for ``accessor``, in one multi-row INSERT.

    The set-based form of :func:`record_by` for batches of separate accesses
    (applied webhook events, reconcile; a list read is ONE access:
    :func:`record_list`): in the caller's transaction, no lock, no read.
    Returns the number of rows written (0 writes nothing). Raises ValueError as
    :func:`record` does.
    """
    rows = [
        _row(accessor, action=action, prescription_id=prescription_id, now=now)
        for prescription_id in prescription_ids
    ]
    if rows:
        # A Core executemany on the session's connection: SQLAlchemy's "insertmanyvalues" sends
        # it as one INSERT ... VALUES (...), (...) statement, and the prebuilt statement skips
        # the ORM's per-call statement building (most of a read's CPU before).
        session.connection().execute(_APPEND, rows)
    return len(rows)


@dataclass(frozen=True)
class Access:
    """One access to record: ``accessor`` did ``action`` (one of :data:`ACTIONS`) at ``now``
    (an aware UTC datetime). :meth:`params` validates it as :func:`record` does."""

    accessor: Accessor
    action: str
    now: datetime

    def record(self, session: Session, prescription_ids: Sequence[int | None]) -> int:
        """Append this access's one row in ``session``; return its id.

        The prescriptions the caller was shown, in order: exactly one gives a row naming
        it (:func:`record_by`; ``[None]`` for a lookup that found nothing), any other
        number one row holding the list, empty included (:func:`record_list`). Raises
        ValueError as those do.
        """
        ids = list(prescription_ids)
        if len(ids) == 1:
            return record_by(
                session, self.accessor, action=self.action, prescription_id=ids[0], now=self.now
            )
        return record_list(
            session, self.accessor, action=self.action, prescription_ids=ids, now=self.now
        )

    def params(self) -> dict[str, Any]:
        """The bound parameters of :func:`insert_selected` (``audit_<column>``) for this access.

        Raises ValueError as :func:`record` does (unknown action, naive ``now``, over-long field).
        """
        values = _row(self.accessor, action=self.action, prescription_id=None, now=self.now)
        return {f"audit_{name}": values[name] for name in _WHO_WHAT_WHEN}


# The columns every row states itself, bound as ``audit_<column>`` by insert_selected.
_WHO_WHAT_WHEN = ("actor", "role", "action", "occurred_at", "request_id", "client_addr")


def insert_selected(
    *,
    prescription_id: ColumnElement[Any] | None = None,
    prescription_ids: ColumnElement[Any] | None = None,
    having: ColumnElement[bool] | None = None,
) -> Insert:
    """The INSERT of one audit row per row selected from the columns given.

    ``prescription_id``: a column of a SELECT or CTE (its FROM comes with it) or an
    aggregate over one, giving the prescription the row names; ``prescription_ids``:
    an aggregate giving the list it names (one row per access, as :func:`record_list`);
    ``having``: a condition on the aggregates (no row when False). So the prescriptions
    a read showed are recorded in the statement that reads them: as a data-modifying
    CTE beside the view (PostgreSQL), one round trip where :func:`record_by` after the
    view is two. Who, what and when are bound parameters (:meth:`Access.params`); no
    row selected writes no row. Same table and rules as :func:`record` (no lock, no
    read of another row). ValueError when neither column is given.
    """
    named = {
        name: value
        for name, value in (
            ("prescription_id", prescription_id),
            ("prescription_ids", prescription_ids),
        )
        if value is not None
    }
    if not named:
        raise ValueError("give prescription_id, prescription_ids or both")
    table = AuditEvent.__table__
    stated = [bindparam(f"audit_{name}", type_=table.c[name].type) for name in _WHO_WHAT_WHEN]
    chosen = select(*stated, *named.values())
    if having is not None:
        chosen = chosen.having(having)
    return insert(table).from_select([*_WHO_WHAT_WHEN, *named], chosen)


def record_list(
    session: Session,
    accessor: Accessor,
    *,
    action: str,
    prescription_ids: Sequence[int],
    now: datetime,
) -> int:
    """Append ONE ``action`` row naming every prescription in ``prescription_ids``; return its id.

    For one access that showed several prescriptions (a list, a FHIR search):
    the row's ``prescription_ids`` holds them in the order shown (an empty list
    is still an access, and still a row), ``prescription_id`` is NULL. Same
    transaction rules and errors as :func:`record`; a non-integer id raises
    ValueError.
    """
    ids = list(prescription_ids)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError("prescription_ids must be whole numbers")
    values = _row(accessor, action=action, prescription_id=None, now=now)
    values["prescription_ids"] = ids
    return _insert_one(session, values)


def naming(session: Session, prescription_id: int) -> Any:
    """The condition "this audit row names ``prescription_id``": alone, or in its list.

    PostgreSQL: ``prescription_ids @> ARRAY[id]`` (the GIN index of migration
    0014); SQLite: a look into the JSON list (``json_each``).
    """
    if session.get_bind().dialect.name == "postgresql":
        listed = AuditEvent.prescription_ids.contains([prescription_id])
    else:
        item = func.json_each(AuditEvent.prescription_ids).table_valued("value")
        listed = select(item.c.value).where(item.c.value == prescription_id).exists()
    return or_(AuditEvent.prescription_id == prescription_id, listed)


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


def verify_chain(db: Database, *, batch: int = 1000) -> VerifyResult:
    """Walk the hash-chained rows (those written before the sealer) in id order; check each link.

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
                select(AuditEvent)
                # Chained rows predate the sealer, so their txid is NULL: an index range on
                # PostgreSQL instead of a scan of every row.
                .where(
                    AuditEvent.id > last_id, AuditEvent.txid.is_(None), AuditEvent.hash.is_not(None)
                )
                .order_by(AuditEvent.id)
                .limit(batch)
            ).all()
            if not rows:
                return VerifyResult(ok=True, count=count)
            for event in rows:
                count += 1
                if event.prev_hash != expected_prev:
                    return VerifyResult(
                        False, count, event.id, "prev_hash does not match the previous row's hash"
                    )
                if row_hash(_content_of(event)) != event.hash:
                    return VerifyResult(
                        False, count, event.id, "hash does not match the row's content"
                    )
                expected_prev = event.hash
            last_id = rows[-1].id
            session.expunge_all()
