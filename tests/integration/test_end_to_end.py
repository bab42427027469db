"""A seeded prescription travels to the sandbox and back, over real HTTP and a real database."""

from __future__ import annotations

import requests
from sqlalchemy import func, select

from app.foundation.models import Patient, Pharmacy, Prescription, StatusHistory, WebhookInbox
from tests.integration.conftest import wait_until, worker_threads
from webhooks.signature import sign


def region_b_draft(db) -> tuple[int, str, int]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        rx = s.scalars(
            select(Prescription)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(Patient.region_code == "B", Prescription.status == "draft")
            .order_by(Prescription.id)
        ).first()
        pharmacy = s.scalars(select(Pharmacy).where(Pharmacy.branch_id == 17)).one()
        return rx.id, rx.reference, pharmacy.id


def view(live, prescription_id: int) -> dict:  # type: ignore[no-untyped-def]
    resp = requests.get(
        f"{live.url}/api/v1/prescriptions/{prescription_id}", headers=live.auth(), timeout=10
    )
    assert resp.status_code == 200
    return resp.json()


def test_send_is_signed_dispensed_and_every_transition_recorded(
    live, live_settings, seeded, sandbox
):
    sandbox.control(auto=True, auto_delay_s=0.2, auto_skip_printed_rate=0.0)
    pid, reference, pharmacy_id = region_b_draft(seeded)

    resp = requests.post(
        f"{live.url}/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": pharmacy_id},
        headers=live.auth(),
        timeout=10,
    )
    assert resp.status_code == 202
    assert resp.json()["status"] == "queued"

    with worker_threads(live_settings, seeded):
        wait_until(lambda: view(live, pid)["status"] == "dispensed", timeout_s=30)

    body = view(live, pid)
    steps = [(h["from"], h["to"], h["source"]) for h in body["history"]]
    assert steps == [
        ("draft", "queued", "service"),
        ("queued", "issued", "api"),
        ("issued", "signed", "webhook"),
        ("signed", "printed", "webhook"),
        ("printed", "dispensed", "webhook"),
    ]
    assert body["platform_token"].startswith("SRX")
    stats = sandbox.stats()
    assert stats["issued_by_client_ref"] == {reference: 1}
    # One access token and one login served the whole journey.
    assert stats["token_requests"] == 1
    assert stats["logins"] == 1


def test_replayed_event_changes_nothing_and_tampered_body_is_refused(
    live, live_settings, seeded, sandbox
):
    sandbox.control(auto=True, auto_delay_s=0.1, auto_skip_printed_rate=1.0)
    pid, _, pharmacy_id = region_b_draft(seeded)
    requests.post(
        f"{live.url}/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": pharmacy_id},
        headers=live.auth(),
        timeout=10,
    ).raise_for_status()
    with worker_threads(live_settings, seeded):
        wait_until(lambda: view(live, pid)["status"] == "dispensed", timeout_s=30)
    before = view(live, pid)["history"]

    with seeded.session() as s:
        event = s.scalars(
            select(WebhookInbox).where(WebhookInbox.state == "processed").order_by(WebhookInbox.id)
        ).first()
        raw = event.body
        inbox_count = s.scalar(select(func.count()).select_from(WebhookInbox))
        history_count = s.scalar(select(func.count()).select_from(StatusHistory))

    import time

    url = f"{live.url}/webhooks/platform"
    replay = requests.post(
        url,
        data=raw,
        headers={
            "X-Signature": sign(raw, live_settings.webhook_secrets, timestamp=int(time.time()))
        },
        timeout=10,
    )
    assert replay.status_code == 200
    assert replay.json()["duplicate"] is True

    tampered = raw.replace(b'"signed"', b'"voided"')
    assert tampered != raw
    header = sign(raw, live_settings.webhook_secrets, timestamp=int(time.time()))
    refused = requests.post(url, data=tampered, headers={"X-Signature": header}, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["reason"] == "no_match"

    with worker_threads(live_settings, seeded):
        pass
    with seeded.session() as s:
        assert s.scalar(select(func.count()).select_from(WebhookInbox)) == inbox_count
        assert s.scalar(select(func.count()).select_from(StatusHistory)) == history_count
    assert view(live, pid)["history"] == before
    assert view(live, pid)["status"] == "dispensed"
