"""Support voids a prescription on the real sandbox process, over real HTTP and a real database.

Contract §5: ``POST /prescriptions/{id}/void``; the platform's own record must
say ``voided`` afterwards, a second void is 409, and the platform's
``voided`` webhook adds nothing to the history we already recorded.
"""

from __future__ import annotations

import requests
from sqlalchemy import select

from app.foundation.models import Patient, Pharmacy, Prescription, WebhookInbox
from app.services.connector_factory import make_client
from app.services.credentials import credential_cipher, prescriber_credentials
from tests.integration.conftest import wait_until, worker_threads


def region_b_draft(db) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        rx = s.scalars(
            select(Prescription)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(Patient.region_code == "B", Prescription.status == "draft")
            .order_by(Prescription.id)
        ).first()
        pharmacy = s.scalars(select(Pharmacy).where(Pharmacy.branch_id == 17)).one()
        return rx.id, pharmacy.id


def view(live, pid: int, role: str = "support") -> dict:  # type: ignore[no-untyped-def]
    resp = requests.get(
        f"{live.url}/api/v1/prescriptions/{pid}",
        headers=live.auth(role=role, subject="s-1"),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def inbox_settled(db) -> bool:  # type: ignore[no-untyped-def]
    with db.session() as s:
        rows = s.scalars(select(WebhookInbox.state)).all()
    return bool(rows) and all(state != "pending" for state in rows)


def platform_status(live_settings, db, pid: int) -> str:  # type: ignore[no-untyped-def]
    with db.session() as s:
        rx = s.get(Prescription, pid)
        credentials = prescriber_credentials(
            rx.prescriber, credential_cipher(live_settings.encryption_keys)
        )
        token = rx.platform_token
    with make_client(live_settings) as client:
        return client.get_prescription(credentials, token).status


def test_support_voids_an_issued_prescription_at_the_sandbox(live, live_settings, seeded, sandbox):  # type: ignore[no-untyped-def]
    pid, pharmacy_id = region_b_draft(seeded)
    sent = requests.post(
        f"{live.url}/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": pharmacy_id},
        headers=live.auth(),
        timeout=10,
    )
    assert sent.status_code == 202
    with worker_threads(live_settings, seeded):
        wait_until(lambda: view(live, pid)["status"] == "issued", timeout_s=30)

        resp = requests.post(
            f"{live.url}/api/v1/prescriptions/{pid}/void",
            json={"reason": "issued to the wrong pharmacy"},
            headers=live.auth(role="support", subject="s-1"),
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "voided"
        assert platform_status(live_settings, seeded, pid) == "voided"
        # The sandbox's own "voided" webhook arrives and is applied: nothing is added.
        wait_until(
            lambda: sandbox.stats()["webhooks"]["pending"] == 0 and inbox_settled(seeded),
            timeout_s=15,
        )

    body = view(live, pid)
    assert [(h["to"], h["source"]) for h in body["history"]].count(("voided", "operator")) == 1
    assert [h["to"] for h in body["history"]].count("voided") == 1

    again = requests.post(
        f"{live.url}/api/v1/prescriptions/{pid}/void",
        json={"reason": "again"},
        headers=live.auth(role="support", subject="s-1"),
        timeout=10,
    )
    assert again.status_code == 409
    assert again.json()["code"] == "already_final"


def test_platform_says_invalid_transition_once_dispensed_there(
    live, live_settings, seeded, sandbox
):  # type: ignore[no-untyped-def]
    # Our record still says "issued" (webhooks held back) while the sandbox has dispensed it.
    sandbox.control(webhook_hold=True, auto=True, auto_delay_s=0.1)
    pid, pharmacy_id = region_b_draft(seeded)
    requests.post(
        f"{live.url}/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": pharmacy_id},
        headers=live.auth(),
        timeout=10,
    ).raise_for_status()
    with worker_threads(live_settings, seeded):
        wait_until(lambda: view(live, pid)["status"] == "issued", timeout_s=30)
    wait_until(lambda: platform_status(live_settings, seeded, pid) == "dispensed", timeout_s=30)
    before = view(live, pid)["history"]

    resp = requests.post(
        f"{live.url}/api/v1/prescriptions/{pid}/void",
        json={"reason": "too late"},
        headers=live.auth(role="support", subject="s-1"),
        timeout=10,
    )

    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "already_final"
    assert view(live, pid)["history"] == before
