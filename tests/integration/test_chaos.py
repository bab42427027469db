"""Chaos: 300 prescriptions through two worker processes while the platform misbehaves.

The sandbox injects 15% 5xx, 10% commit-then-drop (the prescription is created,
the response is lost), 5% 429 with Retry-After, a 2 s access token and a 3 s
session. One worker is killed with SIGKILL mid-run. Afterwards the platform
holds exactly one prescription per client_ref_id, every prescription is
``issued`` (or ``rejected``, where it was made invalid on purpose), and none
is lost or left queued.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, update

from app.foundation.models import (
    DispatchOutbox,
    Patient,
    Pharmacy,
    Prescription,
    PrescriptionMedicine,
)
from app.services.seeding import bulk_prescriptions_sql, execute_sql_script
from scripts.stack import Stack, base_env
from tests.conftest import seed_database
from tests.integration.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 300
INVALID = 12  # given a Schedule 2 drug: the platform must reject them (contract §2)
MORPHINE = "322503009"


def seed_many(db, total_region_b: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Generate enough prescriptions with the bulk seed script (its count changed in its one place)."""
    execute_sql_script(db.engine, bulk_prescriptions_sql(total_region_b * 2))
    with db.session() as s:
        ids = list(
            s.scalars(
                select(Prescription.id)
                .join(Patient, Patient.id == Prescription.patient_id)
                .where(Patient.region_code == "B")
                .order_by(Prescription.id)
                .limit(total_region_b)
            )
        )
    assert len(ids) == total_region_b
    return ids


def test_chaos_exactly_one_prescription_each(
    live, live_settings, seeded, sandbox, db_url, tmp_path: Path
):
    seed_database(seeded)  # idempotent: proves a second seed adds nothing before the bulk run
    ids = seed_many(seeded, TOTAL)
    invalid = set(ids[:: TOTAL // INVALID][:INVALID])
    with seeded.session() as s:
        pharmacy_id = s.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 101)).one()

    for pid in ids:
        resp = requests.post(
            f"{live.url}/api/v1/prescriptions/{pid}/send",
            json={"pharmacy_id": pharmacy_id},
            headers=live.auth(),
            timeout=10,
        )
        assert resp.status_code == 202, resp.text
    # Only after queueing: the pre-send check refuses a Schedule 2 drug up front (422), so
    # the line changes between queue and dispatch (as a dm+d reschedule would) and the
    # platform's own refusal path still runs.
    with seeded.session() as s:
        s.execute(
            update(PrescriptionMedicine)
            .where(
                PrescriptionMedicine.prescription_id.in_(invalid),
                PrescriptionMedicine.position == 1,
            )
            .values(vpid=MORPHINE, description="Morphine sulfate 10mg/5ml oral solution")
        )

    sandbox.control(
        fail_500_rate=0.10,
        fail_503_rate=0.05,
        commit_then_drop_rate=0.10,
        rate_limit_rate=0.05,
        retry_after_s=1,
        token_ttl_s=2,
        session_ttl_s=3,
    )
    stack = Stack(
        env=base_env(
            DATABASE_URL=db_url,
            ERX_BASE_URL=sandbox.url,
            ERX_ENV="test",
            ERX_CONNECT_TIMEOUT_S="0.5",
            ERX_READ_TIMEOUT_S="1.5",
            DISPATCH_MAX_ATTEMPTS="25",
            DISPATCH_BACKOFF_BASE_S="0.05",
            DISPATCH_BACKOFF_CAP_S="1",
            BREAKER_RESET_S="0.5",
            LEASE_S="13",  # just above 6 x (connect + read): the killed worker's rows return soon
            WORKER_POLL_S="0.05",
            WORKER_BATCH="5",
        ),
        log_dir=tmp_path / "logs",
    )
    victim = stack.start_worker("worker-1")
    stack.start_worker("worker-2")
    try:

        def done_count() -> int:
            with seeded.session() as s:
                return s.scalar(
                    select(func.count())
                    .select_from(DispatchOutbox)
                    .where(DispatchOutbox.state != "pending")
                )

        wait_until(lambda: done_count() >= TOTAL // 3, timeout_s=120)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        started = time.monotonic()
        wait_until(lambda: done_count() == TOTAL, timeout_s=300, interval_s=0.5)
        elapsed = time.monotonic() - started
    finally:
        stack.stop()

    stats = sandbox.stats()
    with seeded.session() as s:
        rows = s.execute(
            select(
                Prescription.id,
                Prescription.reference,
                Prescription.status,
                Prescription.platform_token,
            ).where(Prescription.id.in_(ids))
        ).all()
        outbox_states = dict(
            s.execute(
                select(DispatchOutbox.state, func.count()).group_by(DispatchOutbox.state)
            ).all()
        )
    by_status: dict[str, int] = {}
    for _, _, status, _ in rows:
        by_status[status] = by_status.get(status, 0) + 1

    # Faults really happened.
    faults = stats["faults_injected"]
    assert faults.get("commit_then_drop", 0) > 0 and faults.get("fail_500", 0) > 0
    assert stats["token_requests"] > 1  # the 2 s tokens expired and were renewed

    # Exactly one platform prescription per client_ref_id, and only for valid ones.
    issued_refs = stats["issued_by_client_ref"]
    assert all(count == 1 for count in issued_refs.values()), {
        k: v for k, v in issued_refs.items() if v != 1
    }
    assert outbox_states == {"done": TOTAL}
    assert by_status == {"issued": TOTAL - INVALID, "rejected": INVALID}, (by_status, elapsed)
    for pid, reference, status, token in rows:
        if pid in invalid:
            assert status == "rejected" and token is None and reference not in issued_refs
        else:
            assert status == "issued" and token is not None and issued_refs.get(reference) == 1
    assert len(issued_refs) == TOTAL - INVALID
