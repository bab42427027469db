"""Webhook storm: ~2,000 deliveries for 200 prescriptions, duplicated, shuffled, some dropped.

The sandbox walks 200 prescriptions through random lifecycles while holding
their webhooks, adds events of another type (stored and ignored), then
releases everything with 20% duplicates, shuffled order and 5% dropped.
Workers apply what arrives; reconciliation recovers what was dropped.
Afterwards every prescription's current status equals the sandbox's, and the
history holds each real transition exactly once.
"""

from __future__ import annotations

from collections import Counter

import pytest
import requests
from sqlalchemy import func, select

from app.foundation.crypto import CredentialCipher
from app.foundation.db import utcnow
from app.foundation.models import (
    Clinic,
    Patient,
    Prescriber,
    Prescription,
    StatusHistory,
    WebhookInbox,
)
from app.mechanisms.history import Change, local, record
from app.services.connector_factory import make_client
from app.services.reconcile import reconcile
from connector.statuses import LIFECYCLE
from tests.integration.conftest import wait_until, worker_threads

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNT = 200
NOISE_PER_PRESCRIPTION = 7


def adopt_storm(db, storm: list[dict]) -> None:  # type: ignore[no-untyped-def]
    """Record the storm's prescriptions as ours, already issued (as dispatch would have)."""
    now = utcnow()
    with db.session() as s:
        patient = s.scalars(select(Patient).where(Patient.region_code == "B")).first()
        prescriber = s.scalars(
            select(Prescriber).where(Prescriber.platform_prescriber_id == 5531)
        ).one()
        clinic = s.scalars(select(Clinic)).one()
        for item in storm:
            rx = Prescription(
                reference=item["client_ref_id"],
                patient_id=patient.id,
                prescriber_id=prescriber.id,
                clinic_id=clinic.id,
                status="queued",
                platform_token=item["id"],
                created_at=now,
            )
            s.add(rx)
            s.flush()
            record(s, [Change(rx, local(rx, "issued", source="api", now=now))])


def test_storm_converges_to_the_platform_state(live, live_settings, seeded, sandbox):
    sandbox.control(webhook_hold=True)
    resp = requests.post(
        f"{sandbox.url}/sandbox/storm",
        json={"count": COUNT, "noise_events": NOISE_PER_PRESCRIPTION},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    storm = resp.json()["prescriptions"]
    assert len(storm) == COUNT
    adopt_storm(seeded, storm)

    sandbox.control(webhook_duplicate_rate=0.2, webhook_drop_rate=0.05, webhook_shuffle=True)
    with worker_threads(live_settings, seeded, count=2):
        released = requests.post(f"{sandbox.url}/sandbox/webhooks/release", timeout=30).json()[
            "released"
        ]
        assert released >= COUNT * (1 + NOISE_PER_PRESCRIPTION)

        def settled() -> bool:
            hooks = sandbox.stats()["webhooks"]
            if hooks["pending"]:
                return False
            with seeded.session() as s:
                return not s.scalar(
                    select(func.count())
                    .select_from(WebhookInbox)
                    .where(WebhookInbox.state == "pending")
                )

        wait_until(settled, timeout_s=240, interval_s=0.5)

    hooks = sandbox.stats()["webhooks"]
    assert hooks["dropped"] > 0 and hooks["duplicated"] > 0
    deliveries = hooks["delivered"]
    assert deliveries >= 1800, hooks  # about 2,000 deliveries reached the receiver

    report = reconcile(
        seeded,
        make_client(live_settings),
        CredentialCipher(live_settings.encryption_keys),
        quiet_s=0,
        limit=1000,
    )
    assert report.errors == 0
    assert report.recorded > 0  # the dropped events' transitions came back this way

    truth = {item["id"]: item for item in storm}
    with seeded.session() as s:
        ours = dict(
            s.execute(
                select(Prescription.platform_token, Prescription.status).where(
                    Prescription.platform_token.in_(truth)
                )
            ).all()
        )
        steps = s.execute(
            select(Prescription.platform_token, StatusHistory.to_status, StatusHistory.source)
            .join(StatusHistory, StatusHistory.prescription_id == Prescription.id)
            .where(Prescription.platform_token.in_(truth), StatusHistory.to_status.in_(LIFECYCLE))
        ).all()
        ignored = s.scalar(
            select(func.count()).select_from(WebhookInbox).where(WebhookInbox.state == "ignored")
        )
        dead = s.scalar(
            select(func.count()).select_from(WebhookInbox).where(WebhookInbox.state == "dead")
        )
    assert dead == 0
    assert ignored > 0  # other event types were stored, not refused
    assert ours == {token: item["status"] for token, item in truth.items()}
    recorded = Counter((token, status) for token, status, _ in steps)
    expected = Counter(
        (token, h["status"]) for token, item in truth.items() for h in item["history"]
    )
    assert recorded == expected  # each real transition exactly once
    assert {source for _, _, source in steps} >= {"api", "webhook", "reconcile"}
