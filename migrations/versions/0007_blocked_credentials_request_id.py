"""dispatch_outbox: state blocked_credentials and request_id; prescribers: credentials change/refusal times

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

A send whose prescriber's login the platform refused (login_failed) waits in
state ``blocked_credentials`` (19 characters: ``state`` widens to 32) until
``prescribers set-credentials`` stores new credentials and reopens it; while
``prescribers.credentials_refused_at`` is set no login is attempted for that
prescriber. ``dispatch_outbox.request_id`` carries the
queuing request's X-Request-ID into the worker's log lines.
Batch mode so that SQLite (which cannot alter a CHECK constraint) rebuilds the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATES = "state IN ('pending', 'done', 'dead')"
_NEW_STATES = "state IN ('pending', 'done', 'dead', 'blocked_credentials')"


def upgrade() -> None:
    with op.batch_alter_table("dispatch_outbox", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_dispatch_outbox_state"), type_="check")
        batch_op.alter_column(
            "state", existing_type=sa.String(length=16), type_=sa.String(length=32)
        )
        batch_op.create_check_constraint(op.f("ck_dispatch_outbox_state"), _NEW_STATES)
        batch_op.add_column(sa.Column("request_id", sa.String(length=100), nullable=True))
    with op.batch_alter_table("prescribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("credentials_changed_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("credentials_refused_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    # Blocked sends go back to pending: the old schema has no such state, and the
    # next attempt will meet the platform's answer again.
    op.execute("UPDATE dispatch_outbox SET state = 'pending' WHERE state = 'blocked_credentials'")
    # Plain DROP COLUMN (SQLite >= 3.35, PostgreSQL): a batch rebuild of prescribers
    # would DROP a table that prescriptions reference, which SQLite refuses with foreign keys on.
    op.execute("ALTER TABLE prescribers DROP COLUMN credentials_refused_at")
    op.execute("ALTER TABLE prescribers DROP COLUMN credentials_changed_at")
    with op.batch_alter_table("dispatch_outbox", schema=None) as batch_op:
        batch_op.drop_column("request_id")
        batch_op.drop_constraint(op.f("ck_dispatch_outbox_state"), type_="check")
        batch_op.alter_column(
            "state", existing_type=sa.String(length=32), type_=sa.String(length=16)
        )
        batch_op.create_check_constraint(op.f("ck_dispatch_outbox_state"), _OLD_STATES)
