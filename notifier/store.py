"""The notifier's own table and the patient directory it reads, with their own SQLAlchemy metadata.

``notifier_inbox`` is the dedupe table: one row per AMQP ``message_id``
handled, inserted in the same transaction as the notice is sent, so a
redelivered or re-published message finds its row and does nothing. The
notifier creates it itself at start (:func:`create_schema`,
``metadata.create_all``: the table has no migrations of its own to run).

The patient directory is where a notification service finds whom to tell.
In production that is the notification service's own patient directory;
this reference consumer reads the patients' email addresses from the
service's ``patients`` and ``prescriptions`` tables (two columns each,
described here in their own metadata, never created or written).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

metadata = MetaData()

inbox = Table(
    "notifier_inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(100), nullable=False),
    Column("prescription_id", Integer, nullable=False, index=True),
    Column("to_status", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),  # emailed | no_email
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("message_id", name="uq_notifier_inbox_message_id"),
)

# The service's tables, read only: never part of create_all.
directory = MetaData()
patients = Table(
    "patients", directory, Column("id", Integer, primary_key=True), Column("email", String)
)
prescriptions = Table(
    "prescriptions",
    directory,
    Column("id", Integer, primary_key=True),
    Column("patient_id", Integer),
)


def open_engine(url: str) -> Engine:
    """An engine for ``url`` (``postgresql+psycopg2://...`` or ``sqlite:///...``)."""
    if url.startswith("postgres://"):
        url = url.replace("postgres://", "postgresql+psycopg2://", 1)
    options = {"pool_pre_ping": True} if not url.startswith("sqlite") else {}
    return create_engine(url, **options)


def unavailable(engine: Engine, exc: BaseException) -> str:
    """``database unavailable at <host>:<port> (<error class>)`` for a failed call on ``engine``.

    Names the server from the engine's parsed URL (SQLAlchemy's ``URL``; the
    driver's default port 5432 when none is given), or the file of a SQLite
    database; never the user name, password or query string.
    """
    url = engine.url
    if url.get_backend_name() == "sqlite":
        where = f"sqlite file {url.database or ':memory:'}"
    else:
        where = f"{url.host or 'localhost'}:{url.port or 5432}"
    return f"database unavailable at {where} ({type(exc).__name__})"


def create_schema(engine: Engine) -> None:
    """Create ``notifier_inbox`` (and its index) if missing; existing tables are left alone."""
    metadata.create_all(engine, checkfirst=True)


def patient_email(conn: Connection, prescription_id: int) -> str | None:
    """The email of the patient of ``prescription_id``, or None (no such prescription, no email)."""
    row = conn.execute(
        select(patients.c.email)
        .join(prescriptions, prescriptions.c.patient_id == patients.c.id)
        .where(prescriptions.c.id == prescription_id)
    ).first()
    return row[0] if row and row[0] else None


def record_once(conn: Connection, values: dict[str, object]) -> bool:
    """Insert one ``notifier_inbox`` row unless its ``message_id`` is there; True if inserted.

    ``INSERT ... ON CONFLICT (message_id) DO NOTHING`` (PostgreSQL and SQLite).
    """
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(inbox).values(**values).on_conflict_do_nothing(index_elements=["message_id"])
    )
    return conn.execute(statement).rowcount == 1


@dataclass(frozen=True)
class Received:
    """One handled message: event id, prescription id, new status, outcome, when handled (UTC)."""

    message_id: str
    prescription_id: int
    to_status: str
    outcome: str
    processed_at: datetime


def received(engine: Engine, *, prescription_id: int | None = None) -> list[Received]:
    """The handled messages in the order handled, all or one prescription's; [] before the first."""
    statement = select(
        inbox.c.message_id,
        inbox.c.prescription_id,
        inbox.c.to_status,
        inbox.c.outcome,
        inbox.c.processed_at,
    ).order_by(inbox.c.id)
    if prescription_id is not None:
        statement = statement.where(inbox.c.prescription_id == prescription_id)
    create_schema(engine)
    with engine.connect() as conn:
        return [Received(*row) for row in conn.execute(statement)]
