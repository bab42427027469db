"""audit rows: one row per list access, naming every prescription it showed

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

A list read (``/me/prescriptions``, a FHIR search) wrote one audit row per
prescription returned: 50 INSERTed rows, 50 leaves for the sealer, for one
access. It now writes ONE row whose ``prescription_ids`` holds the ids shown,
in order (PostgreSQL ``bigint[]``, SQLite JSON). The row's leaf says so: format
``erx-audit-leaf/2`` adds the list (app/mechanisms/audit.py ``leaf_data``);
rows without a list keep format 1, so every sealed leaf still verifies.

On PostgreSQL a partial GIN index (rows with a list only) answers "which rows
name prescription X" for the auditor's export (``prescription_ids @> ARRAY[X]``). Adding a NULL column
rewrites nothing; the immutability triggers are untouched (no row is updated).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    kind = postgresql.ARRAY(sa.BigInteger()) if postgres else sa.JSON()
    op.add_column("audit_events", sa.Column("prescription_ids", kind, nullable=True))
    if postgres:
        op.create_index(
            "ix_audit_events_prescription_ids",
            "audit_events",
            ["prescription_ids"],
            postgresql_using="gin",
            # Partial: the rows without a list (every other access) add nothing to it.
            postgresql_where=sa.text("prescription_ids IS NOT NULL"),
        )


def downgrade() -> None:
    # Rows holding a list would lose what they record: refuse rather than drop them.
    listed = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM audit_events WHERE prescription_ids IS NOT NULL")
    )
    if listed:
        raise RuntimeError(
            f"{listed} audit rows name their prescriptions in a list; "
            "downgrading would drop what they record"
        )
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_audit_events_prescription_ids", table_name="audit_events")
    # A plain DROP COLUMN (SQLite 3.35+ too): a batch rebuild would drop the table's triggers.
    op.drop_column("audit_events", "prescription_ids")
