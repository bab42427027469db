"""audit trail sealed in a Merkle tree: lock-free appends, leaves, tree nodes, checkpoints

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Appends no longer chain (no lock, no read of the previous row): ``prev_hash`` and
``hash`` become nullable and stay set only on the rows written before this
revision, which ``flask --app app audit verify`` still checks as a chain. On
PostgreSQL each new row records its transaction id (``txid``, default
``pg_current_xact_id()``) so that the sealer never seals past a transaction that
is still in flight. The sealer (app/audit_sealer.py) writes ``audit_leaves``,
``audit_tree_nodes``, ``audit_checkpoints`` and its one ``audit_seal_state`` row;
its first seal takes the pre-existing rows, in id order, as the first leaves.

The append-only triggers of 0006 stay. SQLite rebuilds the table to drop the NOT
NULLs (batch mode), which drops its triggers; they are recreated here as 0006
wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_TRIGGERS = (
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END",
    "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END",
)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.alter_column("audit_events", "prev_hash", existing_type=sa.String(64), nullable=True)
        op.alter_column("audit_events", "hash", existing_type=sa.String(64), nullable=True)
        # Added without a default, then given one: existing rows keep NULL (no table rewrite),
        # new rows get the id of the transaction that wrote them.
        op.add_column("audit_events", sa.Column("txid", sa.BigInteger(), nullable=True))
        op.execute(
            "ALTER TABLE audit_events ALTER COLUMN txid "
            "SET DEFAULT (pg_current_xact_id()::text)::bigint"
        )
        op.create_index("ix_audit_events_txid", "audit_events", ["txid"])
    else:
        for name in ("audit_events_no_update", "audit_events_no_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        with op.batch_alter_table("audit_events") as batch_op:
            batch_op.alter_column("prev_hash", existing_type=sa.String(64), nullable=True)
            batch_op.alter_column("hash", existing_type=sa.String(64), nullable=True)
            batch_op.add_column(sa.Column("txid", sa.BigInteger(), nullable=True))
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)

    op.create_table(
        "audit_leaves",
        sa.Column("seq", _ID, autoincrement=False, nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_leaves")),
        sa.UniqueConstraint("event_id", name=op.f("uq_audit_leaves_event_id")),
    )
    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", _ID, autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_audit_tree_nodes")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=8), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    op.create_index(op.f("ix_audit_checkpoints_tree_size"), "audit_checkpoints", ["tree_size"])
    op.create_table(
        "audit_seal_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("horizon", sa.BigInteger(), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("upto", sa.BigInteger(), nullable=False),
        sa.Column("pending_xids", sa.Text(), nullable=False),
        sa.Column("drain", sa.Text(), nullable=True),
        sa.Column("drain_after", sa.BigInteger(), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_checkpoint_id", sa.BigInteger(), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_seal_state")),
    )


def downgrade() -> None:
    # Rows appended since have no chain hashes, so the NOT NULLs cannot come back.
    op.drop_table("audit_seal_state")
    op.drop_index(op.f("ix_audit_checkpoints_tree_size"), table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_tree_nodes")
    op.drop_table("audit_leaves")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_audit_events_txid", table_name="audit_events")
        op.drop_column("audit_events", "txid")
