"""Pre-send checks: each a 422 whose field error says what to fix, nothing written.

rx-000001 belongs to pt-0001 (Region B, the platform), rx-000017 to pt-0017
(Region A, the PDF by email). The seed's catalogue has Schedule 2 (morphine
322503009, oxycodone 322773001) and Schedule 3 (temazepam 321217004) drugs.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.foundation.db import Database
from app.foundation.models import (
    DispatchOutbox,
    IdempotencyKey,
    Medicine,
    Patient,
    Pharmacy,
    Prescription,
    Region,
    StatusHistory,
)
from app.services.prescriptions import presend_errors
from tests.conftest import bearer

MORPHINE, TEMAZEPAM = "322503009", "321217004"


def rx_id(db: Database, reference: str) -> int:
    with db.session() as session:
        value = session.scalar(select(Prescription.id).where(Prescription.reference == reference))
    assert value is not None
    return value


def pharmacy_for(db: Database, reference: str) -> int:
    """A pharmacy the prescription could go to (its patient's region; Region B: with a branch id)."""
    with db.session() as session:
        rx = session.scalars(select(Prescription).where(Prescription.reference == reference)).one()
        query = (
            select(Pharmacy.id)
            .where(Pharmacy.region_code == rx.patient.region_code)
            .order_by(Pharmacy.id)
        )
        if rx.patient.region_code == "B":
            query = query.where(Pharmacy.branch_id.is_not(None))
        value = session.scalar(query)
    assert value is not None
    return value


def written(db: Database) -> tuple[int, int, int]:
    with db.session() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (DispatchOutbox, StatusHistory, IdempotencyKey)
        )


def prescribe(db: Database, reference: str, vpid: str) -> None:
    """Make the first line of ``reference`` the dm+d product ``vpid``."""
    with db.session() as session:
        rx = session.scalars(select(Prescription).where(Prescription.reference == reference)).one()
        medicine = session.get(Medicine, vpid)
        assert medicine is not None
        line = rx.medicines[0]
        line.vpid, line.description = medicine.vpid, medicine.description


def send(app, client, db: Database, reference: str):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/v1/prescriptions/{rx_id(db, reference)}/send",
        json={"pharmacy_id": pharmacy_for(db, reference)},
        headers={**bearer(app, role="service", subject="svc"), "Idempotency-Key": f"k-{reference}"},
    )


def refused(resp, field: str) -> str:  # type: ignore[no-untyped-def]
    assert resp.status_code == 422, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["code"] == "validation_error"
    assert field in body["errors"], body["errors"]
    return " ".join(body["errors"][field])


@pytest.mark.parametrize(
    ("reference", "vpid", "schedule"),
    [("rx-000001", MORPHINE, "2"), ("rx-000001", TEMAZEPAM, "3"), ("rx-000017", MORPHINE, "2")],
    ids=["region-b-schedule-2", "region-b-schedule-3", "region-a-schedule-2"],
)
def test_schedule_2_or_3_controlled_drug_asks_for_a_paper_fp10pcd(  # type: ignore[no-untyped-def]
    app, client, seeded: Database, with_credentials, reference: str, vpid: str, schedule: str
) -> None:
    prescribe(seeded, reference, vpid)
    before = written(seeded)

    message = refused(send(app, client, seeded, reference), "medicines")

    assert "FP10PCD" in message
    assert f"Schedule {schedule}" in message and vpid in message
    assert written(seeded) == before
    with seeded.session() as session:
        rx = session.get(Prescription, rx_id(seeded, reference))
        assert rx is not None and (rx.status, rx.pharmacy_id) == ("draft", None)


def test_schedule_4_controlled_drug_may_be_sent(
    app, client, seeded: Database, with_credentials
) -> None:  # type: ignore[no-untyped-def]
    with seeded.session() as session:
        vpid = session.scalar(
            select(Medicine.vpid).where(Medicine.controlled_schedule.in_(["4", "5"]))
        )
    if vpid is None:
        pytest.skip("the seed has no Schedule 4/5 medicine")
    prescribe(seeded, "rx-000001", vpid)
    assert send(app, client, seeded, "rx-000001").status_code == 202


@pytest.mark.parametrize("field", ["address_line1", "city", "post_code"])
def test_patient_record_missing_an_address_field_is_refused(  # type: ignore[no-untyped-def]
    app, client, seeded: Database, with_credentials, field: str
) -> None:
    with seeded.session() as session:
        patient = session.scalars(select(Patient).where(Patient.external_ref == "pt-0001")).one()
        setattr(patient, field, "  ")
    before = written(seeded)

    message = refused(send(app, client, seeded, "rx-000001"), f"patient.{field}")

    assert "add it before sending" in message
    assert written(seeded) == before


def test_patient_record_without_date_of_birth_is_refused(seeded: Database) -> None:
    # The column is NOT NULL today; the check still guards records loaded from elsewhere.
    with seeded.session() as session, session.no_autoflush:
        rx = session.scalars(
            select(Prescription).where(Prescription.reference == "rx-000001")
        ).one()
        rx.patient.date_of_birth = None  # type: ignore[assignment]
        pharmacy = session.scalars(select(Pharmacy).where(Pharmacy.branch_id == 17)).one()
        errors = presend_errors(session, rx, pharmacy, session.get(Region, "B"))
        session.rollback()

    assert "date of birth" in " ".join(errors["patient.date_of_birth"])


def test_pharmacy_of_another_region_names_the_patients_region(
    app, client, seeded: Database, with_credentials
) -> None:  # type: ignore[no-untyped-def]
    with seeded.session() as session:
        region_a = session.scalar(select(Pharmacy.id).where(Pharmacy.region_code == "A"))
    before = written(seeded)

    resp = client.post(
        f"/api/v1/prescriptions/{rx_id(seeded, 'rx-000001')}/send",
        json={"pharmacy_id": region_a},
        headers=bearer(app, role="patient", subject="pt-0001"),
    )

    assert "region B" in refused(resp, "pharmacy_id")
    assert written(seeded) == before


def test_region_b_pharmacy_without_branch_id_is_refused(
    app, client, seeded: Database, with_credentials
) -> None:  # type: ignore[no-untyped-def]
    with seeded.session() as session:
        pharmacy = session.scalars(select(Pharmacy).where(Pharmacy.branch_id == 17)).one()
        pharmacy.branch_id = None
        pharmacy_id = pharmacy.id
    before = written(seeded)

    resp = client.post(
        f"/api/v1/prescriptions/{rx_id(seeded, 'rx-000001')}/send",
        json={"pharmacy_id": pharmacy_id},
        headers=bearer(app, role="service", subject="svc"),
    )

    assert "branch id" in refused(resp, "pharmacy_id")
    assert written(seeded) == before


def test_region_b_prescriber_without_credentials_is_told_how_to_store_them(
    app, client, seeded: Database
) -> None:  # type: ignore[no-untyped-def]
    before = written(seeded)

    message = refused(send(app, client, seeded, "rx-000001"), "prescriber")

    assert "set-credentials" in message
    # Named by login, as `prescribers list` shows it, never by an internal id.
    assert "dr.patel@example.test" in message and "Prescriber 2 " not in message
    assert written(seeded) == before


def test_region_a_needs_no_platform_credentials(app, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    assert send(app, client, seeded, "rx-000017").status_code == 202


def test_every_failed_check_is_reported_at_once(app, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    prescribe(seeded, "rx-000001", MORPHINE)
    with seeded.session() as session:
        patient = session.scalars(select(Patient).where(Patient.external_ref == "pt-0001")).one()
        patient.post_code = ""

    resp = send(app, client, seeded, "rx-000001")

    assert resp.status_code == 422
    assert {"medicines", "patient.post_code", "prescriber"} <= set(resp.get_json()["errors"])
