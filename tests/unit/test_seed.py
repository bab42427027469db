"""The SQL seed scripts (scripts/seed/*.sql): reference data, 50 test prescriptions, idempotence."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from app.foundation.db import Database
from app.foundation.models import (
    Base,
    Clinic,
    Medicine,
    Patient,
    Pharmacy,
    Prescriber,
    Prescription,
    PrescriptionMedicine,
    Region,
)

REGION_B_BRANCHES = {17, *range(101, 140)}


def table_counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return {
            table.name: session.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def test_seeding_twice_changes_no_counts(app, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    before = table_counts(seeded)
    runner = app.test_cli_runner()

    first = runner.invoke(args=["seed"])
    after_first = table_counts(seeded)
    second = runner.invoke(args=["seed"])

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "seeded 001_reference.sql" in first.output
    assert "seeded 002_test_prescriptions.sql" in first.output
    assert after_first == before
    assert table_counts(seeded) == before
    assert before["prescriptions"] == 50


def test_reseeding_leaves_existing_prescriptions_alone(app, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    with seeded.session() as session:
        session.execute(
            update(Prescription)
            .where(Prescription.reference == "rx-000001")
            .values(status="issued")
        )

    result = app.test_cli_runner().invoke(args=["seed"])

    assert result.exit_code == 0, result.output
    with seeded.session() as session:
        status = session.scalar(
            select(Prescription.status).where(Prescription.reference == "rx-000001")
        )
    assert status == "issued"


def test_reference_only_seed_on_an_empty_database_loads_no_prescriptions(
    app, seeded: Database
) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import empty_database

    empty_database(seeded)
    result = app.test_cli_runner().invoke(args=["seed", "--reference-only"])

    assert result.exit_code == 0, result.output
    counts = table_counts(seeded)
    assert counts["prescriptions"] == 0
    assert counts["pharmacies"] >= 30
    assert counts["clinics"] == 1


def test_regions_choose_the_flow(seeded: Database) -> None:
    with seeded.session() as session:
        flows = {r.code: r.flow for r in session.scalars(select(Region))}
    assert flows == {"A": "email", "B": "erx"}


def test_pharmacies_groups_and_branch_ids(seeded: Database) -> None:
    with seeded.session() as session:
        pharmacies = list(session.scalars(select(Pharmacy)))
    assert len(pharmacies) >= 30

    region_b = [p for p in pharmacies if p.region_code == "B"]
    region_a = [p for p in pharmacies if p.region_code == "A"]
    assert {p.branch_id for p in region_b} == REGION_B_BRANCHES
    assert len(region_b) == len(REGION_B_BRANCHES)
    assert region_a, "Region A has pharmacies for the email flow"
    assert all(p.branch_id is None for p in region_a)

    groups = Counter(p.group_name for p in region_b)
    assert set(groups) == {"All Other Pharmacies", "Boots"}
    assert groups["All Other Pharmacies"] > len(region_b) / 2
    assert groups["Boots"] >= 1
    assert all(p.email and "@" in p.email for p in pharmacies)
    assert len({p.email for p in pharmacies}) == len(pharmacies)


def test_clinic_display_id_maps_to_internal_platform_id(seeded: Database) -> None:
    with seeded.session() as session:
        clinic = session.scalars(select(Clinic).where(Clinic.display_id == "201334")).one()
        prescribers = list(session.scalars(select(Prescriber)))
    assert clinic.platform_id == 994
    assert {p.platform_prescriber_id for p in prescribers} == {5531, 5532}
    assert all(p.clinic_id == clinic.id for p in prescribers)
    # Secrets are never in SQL: they are set with `prescribers set-credentials`.
    assert all(p.password_enc is None and p.pin_enc is None for p in prescribers)


def test_fifty_draft_prescriptions_with_one_to_three_catalogue_medicines(seeded: Database) -> None:
    with seeded.session() as session:
        catalogue = {m.vpid: m for m in session.scalars(select(Medicine))}
        prescriptions = list(session.scalars(select(Prescription).order_by(Prescription.reference)))
        lines = {
            rx.reference: [
                (m.position, m.vpid, m.quantity, m.description, m.directions) for m in rx.medicines
            ]
            for rx in prescriptions
        }

    assert len(prescriptions) == 50
    assert [rx.reference for rx in prescriptions] == [f"rx-{n:06d}" for n in range(1, 51)]
    assert {rx.status for rx in prescriptions} == {"draft"}
    assert all(rx.platform_token is None and rx.pharmacy_id is None for rx in prescriptions)
    sizes = Counter(len(v) for v in lines.values())
    assert set(sizes) == {1, 2, 3}
    for reference, items in lines.items():
        assert [p for p, *_ in items] == list(range(1, len(items) + 1)), reference
        vpids = [v for _, v, *_ in items]
        assert len(set(vpids)) == len(vpids), f"{reference} repeats a medicine"
        for _, vpid, qty, description, directions in items:
            assert vpid in catalogue, reference
            medicine = catalogue[vpid]
            assert medicine.controlled_schedule is None, f"{reference} has a controlled drug"
            assert qty > 0 and description == medicine.description and directions


def test_catalogue_has_controlled_drugs_that_no_test_prescription_uses(seeded: Database) -> None:
    with seeded.session() as session:
        controlled = set(
            session.scalars(select(Medicine.vpid).where(Medicine.controlled_schedule.is_not(None)))
        )
        used = set(session.scalars(select(PrescriptionMedicine.vpid)))
    assert controlled
    assert not controlled & used


def test_patients_and_prescriptions_in_both_regions(seeded: Database) -> None:
    with seeded.session() as session:
        patients = Counter(session.scalars(select(Patient.region_code)))
        rx_regions = Counter(
            session.scalars(
                select(Patient.region_code).join(
                    Prescription, Prescription.patient_id == Patient.id
                )
            )
        )
    assert patients["A"] > 0 and patients["B"] > 0
    assert rx_regions["A"] > 0 and rx_regions["B"] > 0
    assert rx_regions["A"] + rx_regions["B"] == 50


def test_both_prescribers_have_prescriptions(seeded: Database) -> None:
    with seeded.session() as session:
        per_prescriber = Counter(session.scalars(select(Prescription.prescriber_id)))
    assert len(per_prescriber) == 2
    assert sum(per_prescriber.values()) == 50


def test_clinic_whose_display_id_equals_its_platform_id_is_refused(seeded: Database) -> None:
    with pytest.raises(IntegrityError), seeded.session() as session:
        session.add(Clinic(display_id="777", platform_id=777, name="Mistyped Clinic"))
        session.flush()
    with seeded.session() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Clinic).where(Clinic.platform_id == 777)
            )
            == 0
        )


def test_raw_sql_insert_with_display_id_as_platform_id_is_refused(seeded: Database) -> None:
    with pytest.raises(IntegrityError), seeded.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO clinics (display_id, platform_id, name) VALUES ('201335', 201335, 'Oops')"
            )
        )


def test_clinic_with_distinct_ids_is_accepted(seeded: Database) -> None:
    with seeded.session() as session:
        session.add(Clinic(display_id="201400", platform_id=995, name="Second Clinic"))
    with seeded.session() as session:
        assert (
            session.scalar(select(Clinic.platform_id).where(Clinic.display_id == "201400")) == 995
        )


def test_seeded_ids_follow_the_reference_order(seeded: Database) -> None:
    # Demos, docs and tests say "prescription 1" and mean rx-000001, on
    # PostgreSQL as on SQLite; the medicine lines follow their prescription.
    with seeded.session() as session:
        rows = session.execute(
            select(Prescription.id, Prescription.reference).order_by(Prescription.id)
        ).all()
        lines = session.execute(
            select(PrescriptionMedicine.prescription_id, PrescriptionMedicine.position).order_by(
                PrescriptionMedicine.id
            )
        ).all()

    assert [(id_, ref) for id_, ref in rows[:3]] == [
        (1, "rx-000001"),
        (2, "rx-000002"),
        (3, "rx-000003"),
    ]
    assert [ref for _, ref in rows] == [f"rx-{n:06d}" for n in range(1, 51)]
    assert [id_ for id_, _ in rows] == list(range(1, 51))
    assert [(rx, position) for rx, position in lines] == sorted(lines)
