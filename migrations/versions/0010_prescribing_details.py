"""prescribing details: clinic address and phone, prescriber register, number and address, unit of measure

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

The Region A PDF carries what a private prescription must (Human Medicines
Regulations 2012, regulation 217: the prescriber's address and the particulars
of the kind of practitioner) and what a pharmacist expects (the clinic's
telephone, quantities with their dm+d unit of measure). Every column is
nullable, so existing rows stay valid; ``flask seed`` fills the seed rows
(scripts/seed/001_reference.sql). Batch mode so that SQLite adds the CHECK.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KNOWN_BODIES = "registration_body IS NULL OR registration_body IN ('GMC', 'GPhC', 'NMC')"


def upgrade() -> None:
    with op.batch_alter_table("clinics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("phone", sa.String(length=32), nullable=True))
    with op.batch_alter_table("prescribers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("registration_body", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("registration_number", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("address", sa.String(length=300), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_prescribers_registration_body_known"), _KNOWN_BODIES
        )
    with op.batch_alter_table("medicines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unit_of_measure", sa.String(length=60), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("medicines", schema=None) as batch_op:
        batch_op.drop_column("unit_of_measure")
    with op.batch_alter_table("prescribers", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_prescribers_registration_body_known"), type_="check")
        batch_op.drop_column("address")
        batch_op.drop_column("registration_number")
        batch_op.drop_column("registration_body")
    with op.batch_alter_table("clinics", schema=None) as batch_op:
        batch_op.drop_column("phone")
        batch_op.drop_column("address")
