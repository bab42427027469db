"""clinic mapping optional: a clinic can be known by its display id before its internal id

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

A clinic's platform (internal) id is what every issue call needs (contract §3);
the dashboard shows only the display id. ``clinics.platform_id`` may now be NULL:
the clinic is known but has no API clinic id mapped yet. Dispatch sends nothing
for such a clinic (the send is a dead letter saying so) and ``flask clinics
verify`` maps it from the platform's ``GET /clinics``. The CHECK constraints hold
for a NULL (they are not false), and the unique constraint allows several NULLs.
The downgrade refuses while a clinic has no mapping (NOT NULL would fail on it).
Batch mode so that SQLite rebuilds the table with its CHECK constraints.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clinics", schema=None) as batch_op:
        batch_op.alter_column("platform_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("clinics", schema=None) as batch_op:
        batch_op.alter_column("platform_id", existing_type=sa.Integer(), nullable=False)
