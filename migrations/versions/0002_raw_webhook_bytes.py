"""Raw webhook bytes + signature, typed "awaiting prescription", history step as a partial index.

- ``webhook_inbox.body``: text -> bytes (``bytea`` / BLOB), converting every
  stored row (UTF-8); new column ``signature`` (the ``X-Signature`` header the
  body came with; NULL for rows stored before this revision).
- ``webhook_inbox.awaiting_prescription``: true for rows waiting for a token
  we did not know yet (was the string ``last_error = 'unknown_prescription'``).
- ``webhook_inbox.prescription_token`` -> ``platform_token``: one name for
  the platform's prescription token, as ``prescriptions.platform_token``.
- ``prescription_status_history.lifecycle_step`` (a copy of ``to_status``)
  goes; a partial unique index on ``(prescription_id, to_status)`` over the
  lifecycle statuses keeps "each lifecycle status at most once".

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# connector.statuses.LIFECYCLE when this revision was written; a migration must not follow later code.
LIFECYCLE_PREDICATE = (
    "to_status IN ('issued', 'signed', 'printed', 'dispensed', 'expired', 'voided')"
)


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    with op.batch_alter_table("webhook_inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_inbox_prescription_token")
        batch_op.alter_column("prescription_token", new_column_name="platform_token")
    with op.batch_alter_table("webhook_inbox", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_inbox_platform_token", ["platform_token"], unique=False)
        batch_op.add_column(sa.Column("signature", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "awaiting_prescription", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        if postgres:
            batch_op.alter_column(
                "body",
                existing_type=sa.Text(),
                type_=sa.LargeBinary(),
                postgresql_using="convert_to(body, 'UTF8')",
            )
        else:
            batch_op.alter_column("body", existing_type=sa.Text(), type_=sa.LargeBinary())
    if not postgres:
        # SQLite copies the text values as they are; store them as the UTF-8 bytes they were.
        op.execute("UPDATE webhook_inbox SET body = CAST(body AS BLOB) WHERE typeof(body) = 'text'")
    op.execute(
        "UPDATE webhook_inbox SET awaiting_prescription = "
        + ("true" if postgres else "1")
        + " WHERE last_error = 'unknown_prescription'"
    )

    with op.batch_alter_table("prescription_status_history", schema=None) as batch_op:
        batch_op.drop_constraint("uq_history_step", type_="unique")
        batch_op.drop_column("lifecycle_step")
    op.create_index(
        "uq_history_lifecycle_step",
        "prescription_status_history",
        ["prescription_id", "to_status"],
        unique=True,
        postgresql_where=sa.text(LIFECYCLE_PREDICATE),
        sqlite_where=sa.text(LIFECYCLE_PREDICATE),
    )


def downgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.drop_index("uq_history_lifecycle_step", table_name="prescription_status_history")
    with op.batch_alter_table("prescription_status_history", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lifecycle_step", sa.String(length=16), nullable=True))
    op.execute(
        f"UPDATE prescription_status_history SET lifecycle_step = to_status WHERE {LIFECYCLE_PREDICATE}"
    )
    with op.batch_alter_table("prescription_status_history", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_history_step", ["prescription_id", "lifecycle_step"])

    with op.batch_alter_table("webhook_inbox", schema=None) as batch_op:
        if postgres:
            batch_op.alter_column(
                "body",
                existing_type=sa.LargeBinary(),
                type_=sa.Text(),
                # Fails on a body that is not UTF-8: such an event cannot go back to a text column.
                postgresql_using="convert_from(body, 'UTF8')",
            )
        else:
            batch_op.alter_column("body", existing_type=sa.LargeBinary(), type_=sa.Text())
        batch_op.drop_column("awaiting_prescription")
        batch_op.drop_column("signature")
        batch_op.drop_index("ix_webhook_inbox_platform_token")
        batch_op.alter_column("platform_token", new_column_name="prescription_token")
    with op.batch_alter_table("webhook_inbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_inbox_prescription_token", ["prescription_token"], unique=False
        )
    if not postgres:
        op.execute("UPDATE webhook_inbox SET body = CAST(body AS TEXT) WHERE typeof(body) = 'blob'")
