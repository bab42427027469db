"""event outbox and the reference consumer's dedupe table

Revision ID: 0005
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("prescription_id", PK, nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("routing_key", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_by", sa.String(length=100), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'published', 'dead')", name=op.f("ck_event_outbox_state")
        ),
        sa.ForeignKeyConstraint(
            ["prescription_id"],
            ["prescriptions.id"],
            name=op.f("fk_event_outbox_prescription_id_prescriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_event_outbox_event_id")),
    )
    with op.batch_alter_table("event_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_event_outbox_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_event_outbox_prescription_id"), ["prescription_id"], unique=False
        )

    op.create_table(
        "notify_inbox",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=100), nullable=False),
        sa.Column("prescription_id", sa.Integer(), nullable=False),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('emailed', 'no_email')", name=op.f("ck_notify_inbox_outcome")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notify_inbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_notify_inbox_message_id")),
    )
    with op.batch_alter_table("notify_inbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notify_inbox_prescription_id"), ["prescription_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("notify_inbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notify_inbox_prescription_id"))
    op.drop_table("notify_inbox")
    with op.batch_alter_table("event_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_outbox_prescription_id"))
        batch_op.drop_index("ix_event_outbox_due")
    op.drop_table("event_outbox")
