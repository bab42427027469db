"""notify_inbox leaves the service: the reference consumer keeps its own table

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-07

The reference notification consumer is now the separate ``notifier`` package,
which creates and owns its dedupe table ``notifier_inbox`` itself (in the
database named by ``NOTIFIER_DATABASE_URL``, else ``DATABASE_URL``). The
service's copy is no longer read or written by anything. Its rows only
deduplicated notices already sent; dropping them can at worst let a message
still being redelivered at upgrade time notify once more. The downgrade
recreates the empty table as revision 0005 made it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("notify_inbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notify_inbox_prescription_id"))
    op.drop_table("notify_inbox")


def downgrade() -> None:
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
