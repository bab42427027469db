"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "clinics",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("display_id", sa.String(length=32), nullable=False),
        sa.Column("platform_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "display_id <> CAST(platform_id AS VARCHAR(32))", name=op.f("ck_clinics_ids_differ")
        ),
        sa.CheckConstraint("platform_id > 0", name=op.f("ck_clinics_platform_id_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinics")),
        sa.UniqueConstraint("display_id", name=op.f("uq_clinics_display_id")),
        sa.UniqueConstraint("platform_id", name=op.f("uq_clinics_platform_id")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("scope", "key", name="uq_idempotency_keys_scope_key"),
    )
    op.create_table(
        "medicines",
        sa.Column("vpid", sa.String(length=20), nullable=False),
        sa.Column("seq_no", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=300), nullable=False),
        sa.Column("form", sa.String(length=100), nullable=False),
        sa.Column("strength", sa.String(length=100), nullable=False),
        sa.Column("controlled_schedule", sa.String(length=4), nullable=True),
        sa.Column("default_qty", sa.Integer(), nullable=False),
        sa.Column("default_directions", sa.String(length=300), nullable=False),
        sa.PrimaryKeyConstraint("vpid", name=op.f("pk_medicines")),
        sa.UniqueConstraint("seq_no", name=op.f("uq_medicines_seq_no")),
    )
    op.create_table(
        "regions",
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("flow", sa.String(length=16), nullable=False),
        sa.CheckConstraint("flow IN ('email', 'erx')", name=op.f("ck_regions_flow")),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_regions")),
    )
    op.create_table(
        "webhook_inbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=True),
        sa.Column("prescription_token", sa.String(length=64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_by", sa.String(length=100), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'processed', 'ignored', 'dead')",
            name=op.f("ck_webhook_inbox_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_inbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_webhook_inbox_event_id")),
    )
    with op.batch_alter_table("webhook_inbox", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_inbox_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_webhook_inbox_prescription_token"), ["prescription_token"], unique=False
        )

    op.create_table(
        "patients",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("external_ref", sa.String(length=64), nullable=False),
        sa.Column("region_code", sa.String(length=8), nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=False),
        sa.Column("last_name", sa.String(length=100), nullable=False),
        sa.Column("gender", sa.String(length=16), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("address_line1", sa.String(length=200), nullable=False),
        sa.Column("address_line2", sa.String(length=200), nullable=True),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("post_code", sa.String(length=16), nullable=False),
        sa.Column("country", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["region_code"], ["regions.code"], name=op.f("fk_patients_region_code_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint("external_ref", name=op.f("uq_patients_external_ref")),
    )
    op.create_table(
        "pharmacies",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("region_code", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("branch_id", sa.Integer(), nullable=True),
        sa.Column("group_name", sa.String(length=100), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("address_line1", sa.String(length=200), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("post_code", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["region_code"], ["regions.code"], name=op.f("fk_pharmacies_region_code_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pharmacies")),
        sa.UniqueConstraint("branch_id", name=op.f("uq_pharmacies_branch_id")),
    )
    op.create_table(
        "prescribers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("platform_prescriber_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column(
            "clinic_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("password_enc", sa.Text(), nullable=True),
        sa.Column("pin_enc", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinics.id"], name=op.f("fk_prescribers_clinic_id_clinics")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prescribers")),
        sa.UniqueConstraint("email", name=op.f("uq_prescribers_email")),
        sa.UniqueConstraint(
            "platform_prescriber_id", name=op.f("uq_prescribers_platform_prescriber_id")
        ),
    )
    op.create_table(
        "prescriptions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column(
            "patient_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "prescriber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "clinic_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "pharmacy_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("platform_token", sa.String(length=64), nullable=True),
        sa.Column("rejection_message", sa.Text(), nullable=True),
        sa.Column("rejection_errors", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinics.id"], name=op.f("fk_prescriptions_clinic_id_clinics")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_prescriptions_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["pharmacy_id"], ["pharmacies.id"], name=op.f("fk_prescriptions_pharmacy_id_pharmacies")
        ),
        sa.ForeignKeyConstraint(
            ["prescriber_id"],
            ["prescribers.id"],
            name=op.f("fk_prescriptions_prescriber_id_prescribers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prescriptions")),
        sa.UniqueConstraint("platform_token", name=op.f("uq_prescriptions_platform_token")),
        sa.UniqueConstraint("reference", name=op.f("uq_prescriptions_reference")),
    )
    with op.batch_alter_table("prescriptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_prescriptions_status_last_event", ["status", "last_event_at"], unique=False
        )

    op.create_table(
        "dispatch_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "prescription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("flow", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_by", sa.String(length=100), nullable=True),
        sa.Column("outcome_unknown", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'done', 'dead')", name=op.f("ck_dispatch_outbox_state")
        ),
        sa.ForeignKeyConstraint(
            ["prescription_id"],
            ["prescriptions.id"],
            name=op.f("fk_dispatch_outbox_prescription_id_prescriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_outbox")),
        sa.UniqueConstraint("prescription_id", name=op.f("uq_dispatch_outbox_prescription_id")),
    )
    with op.batch_alter_table("dispatch_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_dispatch_outbox_due", ["state", "next_attempt_at"], unique=False)

    op.create_table(
        "prescription_medicines",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "prescription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("vpid", sa.String(length=20), nullable=True),
        sa.Column("description", sa.String(length=300), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("directions", sa.String(length=300), nullable=False),
        sa.CheckConstraint(
            "quantity > 0", name=op.f("ck_prescription_medicines_quantity_positive")
        ),
        sa.ForeignKeyConstraint(
            ["prescription_id"],
            ["prescriptions.id"],
            name=op.f("fk_prescription_medicines_prescription_id_prescriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prescription_medicines")),
        sa.UniqueConstraint("prescription_id", "position", name="uq_prescription_medicines_line"),
    )
    op.create_table(
        "prescription_status_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "prescription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("lifecycle_step", sa.String(length=16), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "source IN ('service', 'api', 'webhook', 'reconcile', 'operator')",
            name=op.f("ck_prescription_status_history_source"),
        ),
        sa.ForeignKeyConstraint(
            ["prescription_id"],
            ["prescriptions.id"],
            name=op.f("fk_prescription_status_history_prescription_id_prescriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prescription_status_history")),
        sa.UniqueConstraint("event_id", name=op.f("uq_prescription_status_history_event_id")),
        sa.UniqueConstraint("prescription_id", "lifecycle_step", name="uq_history_step"),
    )
    with op.batch_alter_table("prescription_status_history", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prescription_status_history_prescription_id"),
            ["prescription_id"],
            unique=False,
        )


def downgrade() -> None:

    with op.batch_alter_table("prescription_status_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prescription_status_history_prescription_id"))

    op.drop_table("prescription_status_history")
    op.drop_table("prescription_medicines")
    with op.batch_alter_table("dispatch_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_dispatch_outbox_due")

    op.drop_table("dispatch_outbox")
    with op.batch_alter_table("prescriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_prescriptions_status_last_event")

    op.drop_table("prescriptions")
    op.drop_table("prescribers")
    op.drop_table("pharmacies")
    op.drop_table("patients")
    with op.batch_alter_table("webhook_inbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_inbox_prescription_token"))
        batch_op.drop_index("ix_webhook_inbox_due")

    op.drop_table("webhook_inbox")
    op.drop_table("regions")
    op.drop_table("medicines")
    op.drop_table("idempotency_keys")
    op.drop_table("clinics")
