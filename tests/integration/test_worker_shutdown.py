"""A worker stops cleanly on SIGTERM: the current job finishes, unstarted claims go back."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import requests
from sqlalchemy import select

from app.foundation.models import DispatchOutbox, Patient, Pharmacy, Prescription
from app.services.prescriptions import queue_send
from scripts.stack import Stack, base_env, free_port
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("threads", [1, 3])
def test_sigterm_finishes_current_job_and_releases_the_rest(
    live, seeded, sandbox, db_url, tmp_path, threads
):
    with seeded.session() as s:
        ids = list(
            s.scalars(
                select(Prescription.id)
                .join(Patient, Patient.id == Prescription.patient_id)
                .where(Patient.region_code == "B")
                .order_by(Prescription.id)
                .limit(10)
            )
        )
        pharmacy_id = s.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 17)).one()
    for pid in ids:
        queue_send(seeded, pid, pharmacy_id=pharmacy_id)
    # Every send hangs for 1 s and then fails before commit: a slow, unhelpful platform.
    sandbox.control(timeout_before_commit_rate=1.0, fault_sleep_s=1.0)

    stack = Stack(
        env=base_env(
            DATABASE_URL=db_url,
            ERX_BASE_URL=sandbox.url,
            ERX_ENV="test",
            WORKER_BATCH="10",
            ERX_READ_TIMEOUT_S="5",
            WORKER_POLL_S="0.05",
            LEASE_S="120",
            WORKER_SEND_THREADS=str(threads),
        ),
        log_dir=tmp_path / "logs",
    )
    worker = stack.start_worker("worker")
    try:

        def claimed() -> bool:
            with seeded.session() as s:
                return (
                    s.scalars(
                        select(DispatchOutbox.locked_by).where(
                            DispatchOutbox.locked_by.is_not(None)
                        )
                    ).first()
                    is not None
                )

        wait_until(claimed, timeout_s=30, interval_s=0.05)
        time.sleep(0.2)  # let the first send start
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
    finally:
        stack.stop()

    with seeded.session() as s:
        rows = list(s.scalars(select(DispatchOutbox)))
    assert len(rows) == 10
    assert all(
        row.locked_by is None and row.locked_until is None for row in rows
    )  # nothing left leased
    assert all(row.state == "pending" for row in rows)
    attempted = [row for row in rows if row.attempts]
    # The jobs in hand (one per send thread; one more wave if the signal came late) finished
    # as retries; the rest went back untouched.
    assert 1 <= len(attempted) <= 2 * threads


@pytest.mark.parametrize("threads", [1, 3])
def test_sigterm_mid_send_completes_it_once_and_the_next_worker_sends_the_rest(
    live, seeded, sandbox, db_url, tmp_path, threads
):
    """A slow but healthy platform: the sends in hand when SIGTERM arrives (one per send
    thread) are issued (once), the process exits 0 within the grace period, and its other
    claims go to the next worker."""
    with seeded.session() as s:
        rows = list(
            s.execute(
                select(Prescription.id, Prescription.reference)
                .join(Patient, Patient.id == Prescription.patient_id)
                .where(Patient.region_code == "B")
                .order_by(Prescription.id)
                .limit(5)
            )
        )
        pharmacy_id = s.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 17)).one()
    for pid, _ in rows:
        queue_send(seeded, pid, pharmacy_id=pharmacy_id)
    sandbox.control(issue_delay_s=3.0)
    grace_s = 15.0

    stack = Stack(
        env=base_env(
            DATABASE_URL=db_url,
            ERX_BASE_URL=sandbox.url,
            ERX_ENV="test",
            WORKER_BATCH="5",
            ERX_READ_TIMEOUT_S="10",
            WORKER_POLL_S="0.05",
            LEASE_S="120",
            WORKER_SEND_THREADS=str(threads),
        ),
        log_dir=tmp_path / "logs",
    )
    try:
        first = stack.start_worker("worker-1")
        wait_until(lambda: sandbox.stats()["issue_attempts"] >= 1, timeout_s=30, interval_s=0.05)
        first.send_signal(signal.SIGTERM)  # the platform holds this send for 3 s
        started = time.monotonic()
        assert first.wait(grace_s) == 0
        assert time.monotonic() - started < grace_s

        stats = sandbox.stats()
        in_hand = stats["issue_attempts"]
        assert 1 <= in_hand <= threads and stats["prescriptions_issued"] == in_hand
        with seeded.session() as s:
            outbox = list(s.scalars(select(DispatchOutbox).order_by(DispatchOutbox.id)))
            statuses = dict(s.execute(select(Prescription.id, Prescription.status)).all())
        assert [row.state for row in outbox].count("done") == in_hand
        assert all(row.locked_by is None for row in outbox)  # the other claims were released
        assert sorted(statuses[pid] for pid, _ in rows) == ["issued"] * in_hand + ["queued"] * (
            5 - in_hand
        )

        sandbox.control(issue_delay_s=0.0)
        stack.start_worker("worker-2")

        def all_issued() -> bool:
            with seeded.session() as s:
                found = s.scalars(
                    select(Prescription.status).where(Prescription.id.in_([p for p, _ in rows]))
                )
                return set(found) <= {"issued", "signed", "printed", "dispensed"}

        wait_until(all_issued, timeout_s=60, interval_s=0.1)
    finally:
        stack.stop()
    # Exactly once at the platform for every prescription, the interrupted one included.
    assert sandbox.stats()["issued_by_client_ref"] == {ref: 1 for _, ref in rows}


def test_sigterm_to_gunicorn_finishes_the_slow_request_in_hand(
    live, seeded, sandbox, db_url, tmp_path
):
    """gunicorn's graceful_timeout: a void held 3 s by the platform still gets its 200."""
    with seeded.session() as s:
        pid = s.scalars(
            select(Prescription.id)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(Patient.region_code == "B")
            .order_by(Prescription.id)
            .limit(1)
        ).one()
        pharmacy_id = s.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 17)).one()
    queue_send(seeded, pid, pharmacy_id=pharmacy_id)
    stack = Stack(
        env=base_env(
            DATABASE_URL=db_url,
            ERX_BASE_URL=sandbox.url,
            ERX_ENV="test",
            WORKER_POLL_S="0.05",
            ERX_READ_TIMEOUT_S="10",
            GUNICORN_GRACEFUL_TIMEOUT="15",
        ),
        log_dir=tmp_path / "logs",
    )
    answers: list[requests.Response] = []
    try:
        stack.start_worker("worker")

        def issued() -> bool:
            with seeded.session() as s:
                return s.get(Prescription, pid).status == "issued"

        wait_until(issued, timeout_s=30, interval_s=0.1)
        url = stack.start_service(port=free_port(), workers=1)
        support = stack.bearer(role="support", subject="agent-1")
        sandbox.control(void_delay_s=3.0)
        caller = threading.Thread(
            target=lambda: answers.append(
                requests.post(
                    f"{url}/api/v1/prescriptions/{pid}/void",
                    json={"reason": "duplicate"},
                    headers=support,
                    timeout=30,
                )
            )
        )
        caller.start()
        time.sleep(1.0)  # the void is now waiting on the platform (held 3 s)
        service = stack.procs["service"]
        service.send_signal(signal.SIGTERM)
        caller.join(30)
        assert service.wait(20) == 0
    finally:
        stack.stop()
    assert [a.status_code for a in answers] == [200]
    assert answers[0].json()["status"] == "voided"
