"""Region A: the prescription rendered as a PDF (fpdf2), for the email to the pharmacy.

What it carries follows the Human Medicines Regulations 2012, regulation 217
(a private prescription): the prescriber's name, address and the particulars
of the kind of practitioner (register and number: GMC, GPhC or NMC); the date;
the patient's name, address and age (with the date of birth); and, for the
pharmacist, the clinic's address and telephone and each medicine with its
strength, form, quantity in its dm+d unit of measure and directions. It is not
signed in ink: a signature statement says that the service issues it
electronically on behalf of the named prescriber, with the audit reference
that finds the prescriber's authorisation in the service's records.

The renderer takes a plain frozen :class:`PrescriptionSnapshot` (no ORM rows),
so it is testable on its own; :func:`prescription_snapshot` takes that
snapshot from the ORM rows inside the worker's claim transaction.

Fonts: PDF core fonts (Helvetica) cover Latin-1 only. Names such as "Zoë
O'Brien" or "José Núñez" are Latin-1 and render with Helvetica; text outside
Latin-1 ("Łukasz", "Nguyễn") needs an embedded Unicode TrueType font:
``PDF_FONT_PATH`` (a .ttf file), by default DejaVu Sans where Debian's
``fonts-dejavu-core`` installs it. Without one, such characters are
transliterated (accents dropped, anything else "?") and the result says so,
so the caller can log it (by reference, never the text itself).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from sqlalchemy import select
from sqlalchemy.orm import object_session

from app.foundation.models import Medicine, Prescription, PrescriptionMedicine

# Debian/Ubuntu (fonts-dejavu-core) and Fedora/Alpine locations of DejaVu Sans.
DEFAULT_UNICODE_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)


@dataclass(frozen=True)
class MedicineItem:
    """One prescribed item: dm+d VMP id and description, quantity and directions.

    ``strength``, ``form`` and ``unit`` (the dm+d unit of measure of ``quantity``,
    e.g. "tablet", "ml") come from the VMP catalogue; empty when unknown.
    """

    vpid: str
    description: str
    quantity: int
    directions: str
    strength: str = ""
    form: str = ""
    unit: str = ""

    def quantity_text(self) -> str:
        """The quantity with its unit of measure, e.g. "28 tablets", "100 ml", "1 inhaler"."""
        if not self.unit:
            return str(self.quantity)
        if self.unit == "ml" or self.quantity == 1:
            return f"{self.quantity} {self.unit}"
        return f"{self.quantity} {self.unit}s"


@dataclass(frozen=True)
class PrescriptionSnapshot:
    """Everything the PDF shows, as plain values. ``prescribed_on`` is the UTC date written."""

    reference: str
    prescribed_on: date
    clinic_name: str
    prescriber_name: str
    patient_name: str
    patient_date_of_birth: date
    patient_address: str
    pharmacy_name: str
    pharmacy_address: str
    medicines: tuple[MedicineItem, ...]
    clinic_address: str = ""
    clinic_phone: str = ""
    prescriber_registration_body: str = ""
    prescriber_registration_number: str = ""
    prescriber_address: str = ""
    audit_reference: str = ""

    def texts(self) -> Iterable[str]:
        """Every string the PDF prints (used to pick a font that covers them)."""
        yield from (
            self.reference,
            self.clinic_name,
            self.clinic_address,
            self.clinic_phone,
            self.prescriber_name,
            self.prescriber_registration_body,
            self.prescriber_registration_number,
            self.prescriber_address,
            self.audit_reference,
            self.patient_name,
            self.patient_address,
            self.pharmacy_name,
            self.pharmacy_address,
        )
        for item in self.medicines:
            yield from (
                item.vpid,
                item.description,
                item.directions,
                item.strength,
                item.form,
                item.unit,
            )


@dataclass(frozen=True)
class RenderedPdf:
    """The PDF bytes; ``transliterated`` is true when text outside Latin-1 had no font."""

    content: bytes
    font: str
    transliterated: bool


def _one_line(*parts: str | None) -> str:
    return ", ".join(p.strip() for p in parts if p and p.strip())


def audit_reference(prescription: Prescription) -> str:
    """The reference that finds this prescription's records (history, audit rows) in the service."""
    return f"{prescription.reference}/{prescription.id}"


def _catalogue(prescription: Prescription) -> dict[str, Medicine]:
    vpids = {line.vpid for line in prescription.medicines if line.vpid}
    session = object_session(prescription)
    if not vpids or session is None:
        return {}
    return {m.vpid: m for m in session.scalars(select(Medicine).where(Medicine.vpid.in_(vpids)))}


def prescription_snapshot(prescription: Prescription) -> PrescriptionSnapshot:
    """Take the PDF's snapshot from ORM rows (patient, prescriber, clinic, pharmacy, medicines loaded).

    The lines' strength, form and unit of measure come from the dm+d catalogue
    (``medicines``), read in the prescription's own session. Raises
    ``ValueError`` when the prescription has no pharmacy (it cannot be emailed).
    """
    patient = prescription.patient
    pharmacy = prescription.pharmacy
    if pharmacy is None:
        raise ValueError("prescription has no pharmacy")
    prescriber = prescription.prescriber
    clinic = prescription.clinic
    catalogue = _catalogue(prescription)

    def item(line: PrescriptionMedicine) -> MedicineItem:
        vmp = catalogue.get(line.vpid or "")
        return MedicineItem(
            vpid=line.vpid or "",
            description=line.description,
            quantity=line.quantity,
            directions=line.directions,
            strength=vmp.strength if vmp else "",
            form=vmp.form if vmp else "",
            unit=(vmp.unit_of_measure or "") if vmp else "",
        )

    return PrescriptionSnapshot(
        reference=prescription.reference,
        prescribed_on=prescription.created_at.date(),
        clinic_name=clinic.name,
        clinic_address=clinic.address or "",
        clinic_phone=clinic.phone or "",
        prescriber_name=prescriber.name,
        prescriber_registration_body=prescriber.registration_body or "",
        prescriber_registration_number=prescriber.registration_number or "",
        prescriber_address=prescriber.address or clinic.address or "",
        audit_reference=audit_reference(prescription),
        patient_name=f"{patient.first_name} {patient.last_name}",
        patient_date_of_birth=patient.date_of_birth,
        patient_address=_one_line(
            patient.address_line1, patient.address_line2, patient.city, patient.post_code
        ),
        pharmacy_name=pharmacy.name,
        pharmacy_address=_one_line(pharmacy.address_line1, pharmacy.city, pharmacy.post_code),
        medicines=tuple(item(line) for line in prescription.medicines),
    )


def registration_text(snapshot: PrescriptionSnapshot) -> str:
    """The prescriber's register and number, e.g. "GMC 7012345"; empty when unknown."""
    return " ".join(
        p
        for p in (snapshot.prescriber_registration_body, snapshot.prescriber_registration_number)
        if p
    )


def age_on(born: date, on: date) -> int:
    """Whole years from ``born`` to ``on`` (the prescription's date, not today's)."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def signature_statement(snapshot: PrescriptionSnapshot) -> str:
    """How this prescription is signed: electronically issued, never a copied wet signature."""
    registration = registration_text(snapshot)
    who = (
        f"{snapshot.prescriber_name} ({registration})" if registration else snapshot.prescriber_name
    )
    audit = snapshot.audit_reference or snapshot.reference
    return (
        f"Issued electronically by erx-connector on behalf of {who}, {snapshot.clinic_name}, who "
        "authorised this prescription in the clinic's prescribing system. It carries no handwritten "
        f"signature. Audit reference: {audit}. To confirm it, telephone the clinic"
        + (f" on {snapshot.clinic_phone}" if snapshot.clinic_phone else "")
        + f" quoting {snapshot.reference}."
    )


def _medicine_text(item: MedicineItem) -> str:
    details = ", ".join(p for p in (item.strength, item.form) if p)
    lines = [item.description]
    if details:
        lines.append(details)
    if item.vpid:
        lines.append(f"VMP {item.vpid}")
    return "\n".join(lines)


def find_unicode_font(configured: str = "") -> str | None:
    """Return the Unicode .ttf to embed: ``configured`` if it exists, else the first default found."""
    for candidate in (configured, *DEFAULT_UNICODE_FONTS):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


# Letters with no Unicode decomposition to a Latin base letter.
_NO_DECOMPOSITION = {
    "Ł": "L",
    "ł": "l",
    "Đ": "D",
    "đ": "d",
    "Ħ": "H",
    "ħ": "h",
    "ı": "i",
    "Œ": "OE",
    "œ": "oe",
}


def _transliterate(text: str) -> str:
    """Latin-1 text for a core font: keep Latin-1 characters, drop accents from others, else "?"."""
    out = []
    for char in text:
        if _latin1(char):
            out.append(char)
            continue
        if char in _NO_DECOMPOSITION:
            out.append(_NO_DECOMPOSITION[char])
            continue
        base = "".join(
            c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
        )
        out.append(base if base and _latin1(base) else "?")
    return "".join(out)


def render_prescription_pdf(
    snapshot: PrescriptionSnapshot,
    *,
    unicode_font_path: str | None = None,
    created_at: datetime | None = None,
) -> RenderedPdf:
    """Render ``snapshot`` as a one-or-more page A4 PDF.

    ``unicode_font_path``: a .ttf embedded when some text is outside Latin-1
    (see the module docs); ``created_at`` (aware UTC) fixes the PDF's creation
    date so the same input gives the same bytes. Returns :class:`RenderedPdf`.
    """
    needs_unicode = not all(_latin1(t) for t in snapshot.texts())
    pdf = FPDF(format="A4")
    pdf.set_title(f"Prescription {snapshot.reference}")
    pdf.set_creator("erx-connector")
    if created_at is not None:
        pdf.set_creation_date(created_at)
    transliterated = False
    if needs_unicode and unicode_font_path:
        pdf.add_font("Unicode", "", unicode_font_path)
        pdf.add_font("Unicode", "B", unicode_font_path)  # one face: bold is shown by size
        family = "Unicode"
        fix = str
    else:
        family = "helvetica"
        transliterated = needs_unicode
        fix = _transliterate

    pdf.add_page()
    width = pdf.epw

    def heading(text: str, size: int = 11) -> None:
        pdf.set_font(family, "B", size)
        pdf.cell(width, 7, fix(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def line(label: str, value: str) -> None:
        pdf.set_font(family, "B", 10)
        pdf.cell(38, 6, fix(label))
        pdf.set_font(family, "", 10)
        pdf.multi_cell(width - 38, 6, fix(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    unknown = "not recorded"
    heading("Private prescription", 16)
    line("Reference", snapshot.reference)
    line("Date", snapshot.prescribed_on.strftime("%d %B %Y"))
    pdf.ln(3)
    heading("Prescriber")
    line("Prescriber", snapshot.prescriber_name)
    line("Registration", registration_text(snapshot) or unknown)
    line("Address", snapshot.prescriber_address or unknown)
    line("Clinic", snapshot.clinic_name)
    line("Clinic address", snapshot.clinic_address or unknown)
    line("Telephone", snapshot.clinic_phone or unknown)
    pdf.ln(3)
    heading("Patient")
    line("Name", snapshot.patient_name)
    line(
        "Date of birth",
        f"{snapshot.patient_date_of_birth.strftime('%d %B %Y')} "
        f"(age {age_on(snapshot.patient_date_of_birth, snapshot.prescribed_on)})",
    )
    line("Address", snapshot.patient_address)
    pdf.ln(3)
    heading("Dispensing pharmacy")
    line("Pharmacy", snapshot.pharmacy_name)
    line("Address", snapshot.pharmacy_address)
    pdf.ln(3)
    heading("Medicines")
    pdf.set_font(family, "", 10)
    with pdf.table(
        col_widths=(8, 54, 18, 40), text_align=("RIGHT", "LEFT", "RIGHT", "LEFT")
    ) as table:
        header = table.row()
        for title in ("#", "Medicine (dm+d), strength, form", "Quantity", "Directions"):
            header.cell(title)
        for number, item in enumerate(snapshot.medicines, start=1):
            row = table.row()
            row.cell(str(number))
            row.cell(fix(_medicine_text(item)))
            row.cell(fix(item.quantity_text()))
            row.cell(fix(item.directions))
    pdf.ln(4)
    heading("Signature")
    pdf.set_font(family, "", 9)
    pdf.multi_cell(
        width, 5, fix(signature_statement(snapshot)), new_x=XPos.LMARGIN, new_y=YPos.NEXT
    )
    return RenderedPdf(content=bytes(pdf.output()), font=family, transliterated=transliterated)
