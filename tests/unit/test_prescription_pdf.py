"""The Region A prescription PDF (app/services/prescription_pdf.py), read back with pypdf."""

from __future__ import annotations

from datetime import UTC, date, datetime
from io import BytesIO

import pytest
from pypdf import PdfReader

from app.services.prescription_pdf import (
    MedicineItem,
    PrescriptionSnapshot,
    find_unicode_font,
    render_prescription_pdf,
)

AMOXICILLIN = MedicineItem(
    "39732311000001104", "Amoxicillin 500mg capsules", 21, "One capsule three times a day"
)
SALBUTAMOL = MedicineItem(
    "39113611000001102",
    "Salbutamol 100micrograms/dose inhaler CFC free",
    1,
    "Two puffs when required for breathlessness",
)


def snapshot(**changes: object) -> PrescriptionSnapshot:
    values: dict[str, object] = {
        "reference": "rx-000017",
        "prescribed_on": date(2026, 12, 2),
        "clinic_name": "Harley Street Clinic",
        "prescriber_name": "Dr Alice Jones",
        "patient_name": "Zoë Ó'Brien",
        "patient_date_of_birth": date(1984, 3, 9),
        "patient_address": "12 Ormeau Road, Belfast BT7 1EB",
        "pharmacy_name": "Ards Pharmacy",
        "pharmacy_address": "4 Frances Street, Newtownards BT23 7DN",
        "medicines": (AMOXICILLIN, SALBUTAMOL),
    }
    values.update(changes)
    return PrescriptionSnapshot(**values)  # type: ignore[arg-type]


def text_of(content: bytes) -> str:
    return " ".join(
        " ".join(page.extract_text() for page in PdfReader(BytesIO(content)).pages).split()
    )


def test_the_pdf_shows_everything_the_pharmacy_needs() -> None:
    rendered = render_prescription_pdf(snapshot())

    text = text_of(rendered.content)
    for expected in (
        "rx-000017",
        "02 December 2026",
        "Harley Street Clinic",
        "Dr Alice Jones",
        "Zoë Ó'Brien",
        "09 March 1984",
        "12 Ormeau Road, Belfast BT7 1EB",
        "Ards Pharmacy",
        "4 Frances Street, Newtownards BT23 7DN",
        "Amoxicillin 500mg capsules",
        "VMP 39732311000001104",
        "21",
        "One capsule three times a day",
        "Two puffs when required for breathlessness",
    ):
        assert expected in text, expected
    assert rendered.content.startswith(b"%PDF-")
    assert PdfReader(BytesIO(rendered.content)).metadata.title == "Prescription rx-000017"  # type: ignore[union-attr]


def test_latin1_accents_use_a_core_font_unchanged() -> None:
    rendered = render_prescription_pdf(
        snapshot(patient_name="José Núñez-Çelik"), unicode_font_path=None
    )

    assert (rendered.font, rendered.transliterated) == ("helvetica", False)
    assert "José Núñez-Çelik" in text_of(rendered.content)


def test_text_outside_latin1_embeds_a_unicode_font() -> None:
    font = find_unicode_font()
    if font is None:
        pytest.skip("no Unicode TrueType font installed (fonts-dejavu-core)")
    rendered = render_prescription_pdf(
        snapshot(patient_name="Łukasz Nguyễn"), unicode_font_path=font
    )

    assert (rendered.font, rendered.transliterated) == ("Unicode", False)
    assert "Łukasz Nguyễn" in text_of(rendered.content)


def test_without_a_unicode_font_text_is_transliterated_and_flagged() -> None:
    rendered = render_prescription_pdf(
        snapshot(patient_name="Łukasz Nguyễn 王"), unicode_font_path=None
    )

    assert rendered.transliterated is True
    assert "Lukasz Nguyen ?" in text_of(rendered.content)


def test_a_configured_font_path_that_does_not_exist_falls_back_to_the_defaults(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert find_unicode_font(str(tmp_path / "missing.ttf")) == find_unicode_font()


def test_a_long_prescription_runs_onto_more_pages_and_keeps_every_line() -> None:
    many = tuple(
        MedicineItem(f"{i:017d}", f"Medicine number {i}", i, f"Directions for medicine {i}")
        for i in range(1, 41)
    )
    rendered = render_prescription_pdf(snapshot(medicines=many))

    assert len(PdfReader(BytesIO(rendered.content)).pages) > 1
    text = text_of(rendered.content)
    assert all(
        f"Medicine number {i}" in text and f"Directions for medicine {i}" in text
        for i in range(1, 41)
    )


def test_the_same_snapshot_and_date_give_the_same_bytes() -> None:
    at = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    assert (
        render_prescription_pdf(snapshot(), created_at=at).content
        == render_prescription_pdf(snapshot(), created_at=at).content
    )


def test_the_pdf_carries_what_regulation_217_and_a_pharmacist_need() -> None:
    """Human Medicines Regulations 2012, reg. 217, plus what a UK pharmacist checks."""
    full = snapshot(
        prescribed_on=date(2026, 12, 2),
        patient_date_of_birth=date(2016, 12, 3),  # 9 the day before their 10th birthday
        clinic_address="10 Harley Street, London W1G 9PF",
        clinic_phone="020 7946 0123",
        prescriber_registration_body="GMC",
        prescriber_registration_number="7012345",
        prescriber_address="10 Harley Street, London W1G 9PF",
        audit_reference="rx-000017/17",
        medicines=(
            MedicineItem(
                "323509004",
                "Amoxicillin 500mg capsules",
                21,
                "One capsule three times a day",
                strength="500mg",
                form="capsule",
                unit="capsule",
            ),
            MedicineItem(
                "322503009",
                "Morphine sulfate 10mg/5ml oral solution",
                100,
                "5ml every four hours",
                strength="10mg/5ml",
                form="oral solution",
                unit="ml",
            ),
            MedicineItem(
                "320176004",
                "Salbutamol 100micrograms/dose inhaler CFC free",
                1,
                "Two puffs",
                strength="100micrograms/dose",
                form="pressurised inhalation",
                unit="inhaler",
            ),
        ),
    )
    text = text_of(render_prescription_pdf(full).content)
    for label, expected in {
        "prescriber's name": "Dr Alice Jones",
        "registration body and number": "GMC 7012345",
        "prescriber's address": "Address 10 Harley Street, London W1G 9PF",
        "clinic": "Harley Street Clinic",
        "clinic's address": "Clinic address 10 Harley Street, London W1G 9PF",
        "clinic's telephone": "020 7946 0123",
        "date": "Date 02 December 2026",
        "patient's name": "Zoë Ó'Brien",
        "patient's address": "12 Ormeau Road, Belfast BT7 1EB",
        "date of birth and age": "03 December 2016 (age 9)",
        "strength, form": "500mg, capsule",
        "quantity with unit": "21 capsules",
        "liquid in ml": "100 ml",
        "single unit": "1 inhaler",
        "directions": "One capsule three times a day",
        "signature statement": "Issued electronically by erx-connector on behalf of Dr Alice Jones (GMC 7012345)",
        "no wet signature": "It carries no handwritten signature",
        "audit reference": "Audit reference: rx-000017/17",
    }.items():
        assert expected in text, label


def test_snapshot_from_the_seeded_database_fills_every_field(seeded) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from app.foundation.models import Pharmacy, Prescription
    from app.services.prescription_pdf import prescription_snapshot

    with seeded.session() as s:
        rx = s.scalars(select(Prescription).where(Prescription.reference == "rx-000002")).one()
        rx.pharmacy = s.scalars(select(Pharmacy).where(Pharmacy.region_code == "A")).first()
        snap = prescription_snapshot(rx)
        s.rollback()
    assert snap.prescriber_registration_body in ("GMC", "GPhC", "NMC")
    assert snap.prescriber_registration_number.isdigit()
    assert snap.prescriber_address and snap.clinic_address and snap.clinic_phone
    assert snap.audit_reference.startswith("rx-000002/")
    assert snap.medicines and all(m.unit and m.strength and m.form for m in snap.medicines)
    text = text_of(render_prescription_pdf(snap).content)
    assert "not recorded" not in text
    assert snap.medicines[0].quantity_text() in text
