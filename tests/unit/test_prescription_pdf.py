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

AMOXICILLIN = MedicineItem("39732311000001104", "Amoxicillin 500mg capsules", 21, "One capsule three times a day")
SALBUTAMOL = MedicineItem("39113611000001102", "Salbutamol 100micrograms/dose inhaler CFC free", 1,
                          "Two puffs when required for breathlessness")


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
    return " ".join(" ".join(page.extract_text() for page in PdfReader(BytesIO(content)).pages).split())


def test_the_pdf_shows_everything_the_pharmacy_needs() -> None:
    rendered = render_prescription_pdf(snapshot())

    text = text_of(rendered.content)
    for expected in (
        "rx-000017", "02 December 2026", "Harley Street Clinic", "Dr Alice Jones", "Zoë Ó'Brien", "09 March 1984",
        "12 Ormeau Road, Belfast BT7 1EB", "Ards Pharmacy", "4 Frances Street, Newtownards BT23 7DN",
        "Amoxicillin 500mg capsules", "VMP 39732311000001104", "21", "One capsule three times a day",
        "Two puffs when required for breathlessness",
    ):
        assert expected in text, expected
    assert rendered.content.startswith(b"%PDF-")
    assert PdfReader(BytesIO(rendered.content)).metadata.title == "Prescription rx-000017"  # type: ignore[union-attr]


def test_latin1_accents_use_a_core_font_unchanged() -> None:
    rendered = render_prescription_pdf(snapshot(patient_name="José Núñez-Çelik"), unicode_font_path=None)

    assert (rendered.font, rendered.transliterated) == ("helvetica", False)
    assert "José Núñez-Çelik" in text_of(rendered.content)


def test_text_outside_latin1_embeds_a_unicode_font() -> None:
    font = find_unicode_font()
    if font is None:
        pytest.skip("no Unicode TrueType font installed (fonts-dejavu-core)")
    rendered = render_prescription_pdf(snapshot(patient_name="Łukasz Nguyễn"), unicode_font_path=font)

    assert (rendered.font, rendered.transliterated) == ("Unicode", False)
    assert "Łukasz Nguyễn" in text_of(rendered.content)


def test_without_a_unicode_font_text_is_transliterated_and_flagged() -> None:
    rendered = render_prescription_pdf(snapshot(patient_name="Łukasz Nguyễn 王"), unicode_font_path=None)

    assert rendered.transliterated is True
    assert "Lukasz Nguyen ?" in text_of(rendered.content)


def test_a_configured_font_path_that_does_not_exist_falls_back_to_the_defaults(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert find_unicode_font(str(tmp_path / "missing.ttf")) == find_unicode_font()


def test_a_long_prescription_runs_onto_more_pages_and_keeps_every_line() -> None:
    many = tuple(
        MedicineItem(f"{i:017d}", f"Medicine number {i}", i, f"Directions for medicine {i}") for i in range(1, 41)
    )
    rendered = render_prescription_pdf(snapshot(medicines=many))

    assert len(PdfReader(BytesIO(rendered.content)).pages) > 1
    text = text_of(rendered.content)
    assert all(f"Medicine number {i}" in text and f"Directions for medicine {i}" in text for i in range(1, 41))


def test_the_same_snapshot_and_date_give_the_same_bytes() -> None:
    at = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    assert render_prescription_pdf(snapshot(), created_at=at).content == render_prescription_pdf(
        snapshot(), created_at=at
    ).content
