"""The worker reuses one kept-alive connection to the platform for every send."""

from __future__ import annotations

import requests
from sqlalchemy import select

from app.foundation.models import Patient, Pharmacy, Prescription
from tests.integration.conftest import wait_until, worker_threads

SENDS = 5


def test_one_worker_sends_every_prescription_over_one_connection(
    live, live_settings, seeded, sandbox
):  # type: ignore[no-untyped-def]
    with seeded.session() as s:
        ids = list(
            s.scalars(
                select(Prescription.id)
                .join(Patient, Patient.id == Prescription.patient_id)
                .where(Patient.region_code == "B", Prescription.status == "draft")
                .order_by(Prescription.id)
                .limit(SENDS)
            )
        )
        pharmacy_id = s.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 17)).one()
    for pid in ids:
        requests.post(
            f"{live.url}/api/v1/prescriptions/{pid}/send",
            json={"pharmacy_id": pharmacy_id},
            headers=live.auth(),
            timeout=10,
        ).raise_for_status()
    with requests.Session() as http:  # one connection of our own for every stats call

        def stats() -> dict:
            return http.get(f"{sandbox.url}/sandbox/stats", timeout=10).json()

        before = stats()
        with worker_threads(live_settings, seeded):
            wait_until(lambda: stats()["prescriptions_issued"] == SENDS, timeout_s=30)
        after = stats()

    assert after["token_requests"] == 1
    # The worker's token, login and five issue calls shared one connection.
    assert after["connections_accepted"] - before["connections_accepted"] == 1
