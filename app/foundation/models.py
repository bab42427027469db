"""SQLAlchemy 2 models: reference data, prescriptions, history, outbox and inbox.

Times are stored as UTC. SQLite has no time zone type, so :class:`UTCDateTime`
normalises on the way in and out and callers always see aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    FetchedValue,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import JSON

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A DateTime that always returns aware UTC values, on PostgreSQL and SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


PK = BigInteger().with_variant(Integer(), "sqlite")


class Region(Base):
    """A region and how its prescriptions reach a pharmacy (``email`` or ``erx``)."""

    __tablename__ = "regions"
    code: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    flow: Mapped[str] = mapped_column(String(16))
    __table_args__ = (CheckConstraint("flow IN ('email', 'erx')", name="flow"),)


class Clinic(Base):
    """A clinic: the dashboard's display id and the platform's internal id (contract §3)."""

    __tablename__ = "clinics"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    display_id: Mapped[str] = mapped_column(String(32), unique=True)
    # None: the clinic has no API clinic id mapped yet; nothing can be sent for it until
    # `flask clinics verify` maps it from the platform's GET /clinics.
    platform_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # Printed on the Region A prescription (Human Medicines Regulations 2012, reg. 217).
    address: Mapped[str | None] = mapped_column(String(300))
    phone: Mapped[str | None] = mapped_column(String(32))
    # Set by `flask clinics verify` once the platform confirmed the mapping.
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    __table_args__ = (
        CheckConstraint("platform_id > 0", name="platform_id_positive"),
        # The display id is never a valid internal id for the same clinic: catching the
        # 201334-for-994 mistake in data, not in code.
        CheckConstraint("display_id <> CAST(platform_id AS VARCHAR(32))", name="ids_differ"),
    )


class Prescriber(Base):
    """A prescriber: platform id, login email, and encrypted password and secure PIN."""

    __tablename__ = "prescribers"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    platform_prescriber_id: Mapped[int] = mapped_column(Integer, unique=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"))
    password_enc: Mapped[str | None] = mapped_column(Text)
    pin_enc: Mapped[str | None] = mapped_column(Text)
    # When the stored credentials last changed (``set-credentials``), and when the
    # platform last refused them (login_failed): while refused_at is set no login
    # is attempted for this prescriber and their sends wait in blocked_credentials.
    credentials_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    credentials_refused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The professional register (GMC, GPhC or NMC), its number and the practice address the
    # Region A prescription carries (Human Medicines Regulations 2012, reg. 217).
    registration_body: Mapped[str | None] = mapped_column(String(8))
    registration_number: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(300))
    clinic: Mapped[Clinic] = relationship()
    __table_args__ = (
        CheckConstraint(
            "registration_body IS NULL OR registration_body IN ('GMC', 'GPhC', 'NMC')",
            name="registration_body_known",
        ),
    )

    def __repr__(self) -> str:
        return f"<Prescriber id={self.id}>"


class Patient(Base):
    """A patient (PHI: never logged; ids only)."""

    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    external_ref: Mapped[str] = mapped_column(String(64), unique=True)
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    gender: Mapped[str] = mapped_column(String(16))
    date_of_birth: Mapped[date] = mapped_column(Date)
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))
    address_line1: Mapped[str] = mapped_column(String(200))
    address_line2: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100))
    post_code: Mapped[str] = mapped_column(String(16))
    country: Mapped[str] = mapped_column(String(64), default="United Kingdom")

    def __repr__(self) -> str:
        return f"<Patient id={self.id}>"


class Pharmacy(Base):
    """A pharmacy; in the e-prescription region it is a platform contact with a branch id."""

    __tablename__ = "pharmacies"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    name: Mapped[str] = mapped_column(String(200))
    branch_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    group_name: Mapped[str | None] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254))
    address_line1: Mapped[str] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100))
    post_code: Mapped[str] = mapped_column(String(16))


class Medicine(Base):
    """A dm+d VMP (virtual medicinal product) in our catalogue."""

    __tablename__ = "medicines"
    vpid: Mapped[str] = mapped_column(String(20), primary_key=True)
    seq_no: Mapped[int] = mapped_column(Integer, unique=True)
    description: Mapped[str] = mapped_column(String(300))
    form: Mapped[str] = mapped_column(String(100))
    strength: Mapped[str] = mapped_column(String(100))
    controlled_schedule: Mapped[str | None] = mapped_column(String(4))
    default_qty: Mapped[int] = mapped_column(Integer)
    default_directions: Mapped[str] = mapped_column(String(300))
    # dm+d unit of measure of a quantity of this VMP ("tablet", "ml", ...): "28" alone is ambiguous.
    unit_of_measure: Mapped[str | None] = mapped_column(String(60))


class Prescription(Base):
    """Our prescription. ``reference`` is the stable ``client_ref_id`` sent to the platform."""

    __tablename__ = "prescriptions"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    prescriber_id: Mapped[int] = mapped_column(ForeignKey("prescribers.id"))
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"))
    pharmacy_id: Mapped[int | None] = mapped_column(ForeignKey("pharmacies.id"))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    platform_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    rejection_message: Mapped[str | None] = mapped_column(Text)
    rejection_errors: Mapped[str | None] = mapped_column(Text)  # JSON object
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When we last learned anything about this prescription from the platform.
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When reconciliation last compared this prescription with the platform.
    reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    patient: Mapped[Patient] = relationship()
    prescriber: Mapped[Prescriber] = relationship()
    clinic: Mapped[Clinic] = relationship()
    pharmacy: Mapped[Pharmacy | None] = relationship()
    medicines: Mapped[list[PrescriptionMedicine]] = relationship(
        order_by="PrescriptionMedicine.position", back_populates="prescription"
    )
    __table_args__ = (
        Index("ix_prescriptions_status_last_event", "status", "last_event_at"),
        # A patient's list, newest first (GET /api/v1/me/prescriptions, FHIR search by patient).
        Index("ix_prescriptions_patient_created", "patient_id", "created_at", "id"),
    )


class PrescriptionMedicine(Base):
    """One line of a prescription: dm+d ``vpid``, description, quantity and directions."""

    __tablename__ = "prescription_medicines"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    prescription_id: Mapped[int] = mapped_column(ForeignKey("prescriptions.id"))
    position: Mapped[int] = mapped_column(Integer)
    vpid: Mapped[str | None] = mapped_column(String(20))
    description: Mapped[str] = mapped_column(String(300))
    quantity: Mapped[int] = mapped_column(Integer)
    directions: Mapped[str] = mapped_column(String(300))
    prescription: Mapped[Prescription] = relationship(back_populates="medicines")
    __table_args__ = (
        UniqueConstraint("prescription_id", "position", name="uq_prescription_medicines_line"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
    )


# connector.statuses.LIFECYCLE as SQL, for the partial unique index (migration 0002 has the same text).
LIFECYCLE_PREDICATE = (
    "to_status IN ('issued', 'signed', 'printed', 'dispensed', 'expired', 'voided')"
)


class StatusHistory(Base):
    """One status transition. Rows are only ever appended, never updated.

    A prescription reaches each platform lifecycle status (contract §6) at
    most once: a partial unique index on ``(prescription_id, to_status)``
    over the lifecycle statuses makes a transition learned twice (webhook
    redelivery, a webhook after reconciliation) a no-op. Local statuses
    (queued, rejected, ...) fall outside it and may repeat.
    """

    __tablename__ = "prescription_status_history"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    prescription_id: Mapped[int] = mapped_column(ForeignKey("prescriptions.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    detail: Mapped[str | None] = mapped_column(Text)
    # Who did an operator step such as a void ("support:<subject>"); None for everything else.
    actor: Mapped[str | None] = mapped_column(String(240))
    __table_args__ = (
        Index(
            "uq_history_lifecycle_step",
            "prescription_id",
            "to_status",
            unique=True,
            postgresql_where=sql_text(LIFECYCLE_PREDICATE),
            sqlite_where=sql_text(LIFECYCLE_PREDICATE),
        ),
        CheckConstraint(
            "source IN ('service', 'api', 'webhook', 'reconcile', 'operator')", name="source"
        ),
    )


class DispatchOutbox(Base):
    """A send to fulfil: one row per prescription, claimed by workers under a lease.

    ``outcome_unknown`` is set before every send and cleared by a definite answer,
    so whoever picks the row up next looks the ``client_ref_id`` up first.
    """

    __tablename__ = "dispatch_outbox"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    prescription_id: Mapped[int] = mapped_column(ForeignKey("prescriptions.id"), unique=True)
    flow: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(32), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locked_by: Mapped[str | None] = mapped_column(String(100))
    outcome_unknown: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The X-Request-ID of the API call that queued the send; the worker logs under it.
    request_id: Mapped[str | None] = mapped_column(String(100))
    prescription: Mapped[Prescription] = relationship()
    __table_args__ = (
        # blocked_credentials: the platform refused the prescriber's login; waits for set-credentials.
        CheckConstraint(
            "state IN ('pending', 'done', 'dead', 'blocked_credentials')", name="state"
        ),
        Index("ix_dispatch_outbox_due", "state", "next_attempt_at"),
    )


class WebhookInbox(Base):
    """A verified webhook event, stored before it is acknowledged (contract §7).

    ``body`` holds the raw bytes exactly as signed and ``signature`` the
    ``X-Signature`` header they came with, so any stored event can be
    re-verified later against the secrets of its day. ``awaiting_prescription``
    is true while the event's token matches no prescription yet (the send's
    commit may be in flight); dispatch reopens such rows when it stores the token.
    """

    __tablename__ = "webhook_inbox"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(100), unique=True)
    event_type: Mapped[str | None] = mapped_column(String(100))
    platform_token: Mapped[str | None] = mapped_column(String(64), index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locked_by: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    awaiting_prescription: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'processed', 'ignored', 'dead')", name="state"),
        Index("ix_webhook_inbox_due", "state", "next_attempt_at"),
        # The receiver needs only the row count, not the new id (no RETURNING on the hot path).
        {"implicit_returning": False},
    )


class IdempotencyKey(Base):
    """The first response to a request sent with an ``Idempotency-Key`` header."""

    __tablename__ = "idempotency_keys"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_keys_scope_key"),)


class EmailIntent(Base):
    """Region A: the intent to email one prescription, written before any SMTP transaction.

    ``stage`` (see ``app.services.mail`` for the policy): ``prepared`` (nothing
    on the wire yet, or the server definitely refused: safe to send),
    ``data`` (committed right before DATA: until a reply is stored the server
    may have accepted), ``accepted`` (the server answered 250 to the DATA
    terminator, or an operator confirmed), ``in_doubt`` (parked for an
    operator). ``attempt_id`` fences concurrent attempts: only the attempt that
    wrote it may move the stage to ``data``.
    """

    __tablename__ = "email_intents"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    prescription_id: Mapped[int] = mapped_column(ForeignKey("prescriptions.id"), unique=True)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    recipient: Mapped[str] = mapped_column(String(254))
    stage: Mapped[str] = mapped_column(String(16), default="prepared")
    attempt_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    data_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    __table_args__ = (
        CheckConstraint("stage IN ('prepared', 'data', 'accepted', 'in_doubt')", name="stage"),
    )


class AuditEvent(Base):
    """One access to or change of a prescription: who, as what, did what, when, from where.

    Append-only (triggers refuse UPDATE, DELETE and TRUNCATE) and tamper-evident:
    ``hash`` is SHA-256 over the row's content and ``prev_hash``, the previous
    row's ``hash`` (app/mechanisms/audit.py). ``prev_hash`` is unique, so the chain cannot fork.
    No foreign key: the audit trail outlives anything it mentions. An access that
    showed one prescription names it in ``prescription_id``; one that showed several
    (a list, a FHIR search) is still one row, naming them all in ``prescription_ids``.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        # Which audit rows name a prescription in their list (the auditor's export).
        # Partial: the rows without a list (nearly all) add nothing to it.
        Index(
            "ix_audit_events_prescription_ids",
            "prescription_ids",
            postgresql_using="gin",
            postgresql_where=sql_text("prescription_ids IS NOT NULL"),
        ).ddl_if(dialect="postgresql"),
    )
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    prescription_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    # One access that showed several prescriptions (a list, a FHIR search): their ids, in
    # the order shown, in this one row (prescription_id is then NULL); NULL otherwise.
    prescription_ids: Mapped[list[int] | None] = mapped_column(
        ARRAY(BigInteger).with_variant(JSON(), "sqlite")
    )
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    request_id: Mapped[str | None] = mapped_column(String(100))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    # The hash chain of rows written before the Merkle sealer (migration 0008); NULL since.
    prev_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # PostgreSQL: the writing transaction's id (default pg_current_xact_id()), the sealer's
    # commit horizon; NULL on SQLite (one writer at a time) and on rows older than 0008.
    txid: Mapped[int | None] = mapped_column(BigInteger, server_default=FetchedValue())


class AuditLeaf(Base):
    """One sealed audit row: its position ``seq`` (0-based) in the log's Merkle tree and its
    RFC 9162 leaf hash. Written only by the sealer (app/mechanisms/audit_sealer.py)."""

    __tablename__ = "audit_leaves"
    seq: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=False)
    event_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditTreeNode(Base):
    """A stored perfect subtree of the audit tree: ``2**level`` leaves from ``idx * 2**level``.

    Only levels that are multiples of 8 are kept (1/255 of the leaf count), so any
    subtree hash a proof needs is folded from at most 128 stored hashes.
    """

    __tablename__ = "audit_tree_nodes"
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditCheckpoint(Base):
    """A signed checkpoint of the audit tree (C2SP tlog-checkpoint as a signed note).

    ``note`` is the whole signed text; the other columns repeat what it says for queries.
    """

    __tablename__ = "audit_checkpoints"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(String(8))
    note: Mapped[str] = mapped_column(Text)


class AuditSealState(Base):
    """The sealer's one row (``id`` 1): its lease, how far it sealed, and verify's mark.

    PostgreSQL (app/mechanisms/audit_sealer.py explains): ``horizon``, the snapshot xmin of the
    last completed seal (every row with a lower ``txid`` is sealed); ``upto``, that
    snapshot's xmax; ``pending_xids``, transactions in flight then (comma-separated);
    ``drain`` / ``drain_after``: the snapshot being sealed over several batches (JSON)
    and the last row id taken from it. SQLite: ``last_event_id``, the highest sealed id.
    ``frontier``: the tree's perfect-subtree roots at ``tree_size``;
    ``verified_checkpoint_id``: the last checkpoint ``audit verify`` found sound.
    """

    __tablename__ = "audit_seal_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    horizon: Mapped[int] = mapped_column(BigInteger, default=0)
    last_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    upto: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_xids: Mapped[str] = mapped_column(Text, default="")
    drain: Mapped[str | None] = mapped_column(Text)
    drain_after: Mapped[int] = mapped_column(BigInteger, default=0)
    tree_size: Mapped[int] = mapped_column(BigInteger, default=0)
    frontier: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    sealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    verified_checkpoint_id: Mapped[int | None] = mapped_column(BigInteger)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class EventOutbox(Base):
    """A status event to publish: staged in the transaction of its history row.

    ``payload`` is the v1 message as JSON text, built when the row is staged so
    that what is published is exactly what was committed. The publisher claims
    rows with :mod:`app.mechanisms.queue`, sends them with confirms, and only then sets
    ``state`` to ``published``; a prescription's rows go out in ``id`` order.
    """

    __tablename__ = "event_outbox"
    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    prescription_id: Mapped[int] = mapped_column(ForeignKey("prescriptions.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    routing_key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locked_by: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'published', 'dead')", name="state"),
        Index("ix_event_outbox_due", "state", "next_attempt_at"),
    )
