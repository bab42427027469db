"""Region A PDF rendering cost: ``python -m bench.region_a_pdf [--runs N]``.

Renders a two-item prescription with the core font (Latin-1 names) and with
the embedded Unicode font (a name outside Latin-1), and prints p50/p95 render
time in milliseconds and the PDF size in bytes for each. The worker renders
one PDF per Region A send, outside any transaction.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date

from app.services.prescription_pdf import (
    MedicineItem,
    PrescriptionSnapshot,
    find_unicode_font,
    render_prescription_pdf,
)


def _snapshot(patient_name: str) -> PrescriptionSnapshot:
    return PrescriptionSnapshot(
        reference="rx-000017",
        prescribed_on=date(2026, 12, 2),
        clinic_name="Harley Street Clinic",
        prescriber_name="Dr Alice Jones",
        patient_name=patient_name,
        patient_date_of_birth=date(1984, 3, 9),
        patient_address="12 Ormeau Road, Belfast BT7 1EB",
        pharmacy_name="Ards Pharmacy",
        pharmacy_address="4 Frances Street, Newtownards BT23 7DN",
        medicines=(
            MedicineItem(
                "39732311000001104",
                "Amoxicillin 500mg capsules",
                21,
                "One capsule three times a day",
            ),
            MedicineItem(
                "39113611000001102",
                "Salbutamol 100micrograms/dose inhaler",
                1,
                "Two puffs when required",
            ),
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    font = find_unicode_font()
    cases = [("core font (Latin-1)", _snapshot("Zoë O'Brien"), None)]
    if font:
        cases.append(("embedded Unicode font", _snapshot("Łukasz Nguyễn"), font))
    for label, snapshot, path in cases:
        render_prescription_pdf(
            snapshot, unicode_font_path=path
        )  # warm-up: imports, font parsing caches
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            size = len(render_prescription_pdf(snapshot, unicode_font_path=path).content)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        p95 = times[int(0.95 * (len(times) - 1))]
        print(
            f"{label}: runs={args.runs} p50={statistics.median(times):.1f} ms p95={p95:.1f} ms size={size} bytes"
        )


if __name__ == "__main__":
    main()
