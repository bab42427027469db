"""Region A: the prescription rendered as a PDF (fpdf2), for the email to the pharmacy.

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

from app.models import Prescription

# Debian/Ubuntu (fonts-dejavu-core) and Fedora/Alpine locations of DejaVu Sans.
DEFAULT_UNICODE_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)


@dataclass(frozen=True)
class MedicineItem:
    """One prescribed item: dm+d VMP id and description, quantity (units) and directions."""

    vpid: str
    description: str
    quantity: int
    directions: str


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

    def texts(self) -> Iterable[str]:
        """Every string the PDF prints (used to pick a font that covers them)."""
        yield from (
            self.reference,
            self.clinic_name,
            self.prescriber_name,
            self.patient_name,
            self.patient_address,
            self.pharmacy_name,
            self.pharmacy_address,
        )
        for item in self.medicines:
            yield from (item.vpid, item.description, item.directions)


@dataclass(frozen=True)
class RenderedPdf:
    """The PDF bytes; ``transliterated`` is true when text outside Latin-1 had no font."""

    content: bytes
    font: str
    transliterated: bool


def _one_line(*parts: str | None) -> str:
    return ", ".join(p.strip() for p in parts if p and p.strip())


def prescription_snapshot(prescription: Prescription) -> PrescriptionSnapshot:
    """Take the PDF's snapshot from ORM rows (patient, prescriber, clinic, pharmacy, medicines loaded).

    Raises ``ValueError`` when the prescription has no pharmacy (it cannot be emailed).
    """
    patient = prescription.patient
    pharmacy = prescription.pharmacy
    if pharmacy is None:
        raise ValueError("prescription has no pharmacy")
    return PrescriptionSnapshot(
        reference=prescription.reference,
        prescribed_on=prescription.created_at.date(),
        clinic_name=prescription.clinic.name,
        prescriber_name=prescription.prescriber.name,
        patient_name=f"{patient.first_name} {patient.last_name}",
        patient_date_of_birth=patient.date_of_birth,
        patient_address=_one_line(
            patient.address_line1, patient.address_line2, patient.city, patient.post_code
        ),
        pharmacy_name=pharmacy.name,
        pharmacy_address=_one_line(pharmacy.address_line1, pharmacy.city, pharmacy.post_code),
        medicines=tuple(
            MedicineItem(vpid=m.vpid or "", description=m.description, quantity=m.quantity, directions=m.directions)
            for m in prescription.medicines
        ),
    )


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
_NO_DECOMPOSITION = {"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h", "ı": "i", "Œ": "OE", "œ": "oe"}


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
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
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

    heading("Private prescription", 16)
    line("Reference", snapshot.reference)
    line("Date", snapshot.prescribed_on.strftime("%d %B %Y"))
    pdf.ln(3)
    heading("Prescriber")
    line("Clinic", snapshot.clinic_name)
    line("Prescriber", snapshot.prescriber_name)
    pdf.ln(3)
    heading("Patient")
    line("Name", snapshot.patient_name)
    line("Date of birth", snapshot.patient_date_of_birth.strftime("%d %B %Y"))
    line("Address", snapshot.patient_address)
    pdf.ln(3)
    heading("Dispensing pharmacy")
    line("Pharmacy", snapshot.pharmacy_name)
    line("Address", snapshot.pharmacy_address)
    pdf.ln(3)
    heading("Medicines")
    pdf.set_font(family, "", 10)
    with pdf.table(col_widths=(10, 52, 14, 44), text_align=("RIGHT", "LEFT", "RIGHT", "LEFT")) as table:
        header = table.row()
        for title in ("#", "Medicine (dm+d)", "Quantity", "Directions"):
            header.cell(title)
        for number, item in enumerate(snapshot.medicines, start=1):
            row = table.row()
            row.cell(str(number))
            row.cell(fix(f"{item.description}\nVMP {item.vpid}" if item.vpid else item.description))
            row.cell(str(item.quantity))
            row.cell(fix(item.directions))
    pdf.ln(4)
    pdf.set_font(family, "", 8)
    pdf.multi_cell(
        width,
        4,
        fix(f"Sent by erx-connector for {snapshot.clinic_name}. Our reference: {snapshot.reference}."),
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    return RenderedPdf(content=bytes(pdf.output()), font=family, transliterated=transliterated)
