"""prescriptions: index for a patient's list; status history: who did an operator step

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

``GET /api/v1/me/prescriptions`` and the FHIR search by patient filter
``prescriptions`` on ``patient_id`` and order by ``created_at``, ``id``: with no
index that was a parallel sequential scan over every prescription (89 ms at
1 M rows for a patient with three). ``ix_prescriptions_patient_created`` serves
the filter and the order. The other per-prescription reads of the view are
already indexed: history (``ix_prescription_status_history_prescription_id``),
the dispatch outbox (its unique ``prescription_id``), medicine lines (the
unique ``(prescription_id, position)``) and audit rows (``ix_audit_events_prescription_id``).
On PostgreSQL the index is built ``CONCURRENTLY`` so a large table keeps taking writes.

``prescription_status_history.actor`` (nullable): who did an operator step such
as a void, ``"<role>:<subject>"``; the support timeline shows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_prescriptions_patient_created"
_COLUMNS = ["patient_id", "created_at", "id"]


def upgrade() -> None:
    with op.batch_alter_table("prescription_status_history", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor", sa.String(length=240), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(_INDEX, "prescriptions", _COLUMNS, postgresql_concurrently=True)
    else:
        op.create_index(_INDEX, "prescriptions", _COLUMNS)


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="prescriptions")
    with op.batch_alter_table("prescription_status_history", schema=None) as batch_op:
        batch_op.drop_column("actor")
