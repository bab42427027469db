"""The whole flow through the real process stack leaves no PHI and no secret in
any process's log.

Sandbox, gunicorn service and worker run as separate processes (scripts/stack.py),
each logging to its own file. The flow: a Region B send walked to ``dispensed``,
a Region A send ``emailed``, a send the platform rejects (a Schedule 2 drug put on
the line after queueing, as tests/integration/test_chaos.py does), a prescriber
whose stored password the platform refuses (``blocked_credentials``), and a
webhook with a bad signature. Then every line of every log is scanned for every
seeded patient's names, date of birth, address, phone and email, and for every
token, password, PIN and secret the run used.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, update

from app.foundation.config import _DEV_DEFAULTS
from app.foundation.models import (
    DispatchOutbox,
    Patient,
    Pharmacy,
    Prescriber,
    Prescription,
    PrescriptionMedicine,
)
from scripts.stack import PRESCRIBERS, WEBHOOK_SECRET, Stack, base_env, free_port
from tests.integration.conftest import wait_until
from tests.support import PhiValue, scan_log_files, seeded_phi
from webhooks.signature import sign

pytestmark = pytest.mark.integration  # about 45 s

MORPHINE = "322503009"
REGION_A_PHARMACY = "ards@pharmacy-a.example.test"
GOOD, BAD = "dr.jones@example.test", "dr.patel@example.test"
WRONG_PASSWORD = "wrong-password-9f3c7a"
WRONG_PIN = "908172"
FINAL = {"dispensed", "emailed", "rejected", "voided", "expired"}


def draft(
    db, *, region: str, prescriber_email: str | None = None, skip: tuple[int, ...] = ()
) -> int:  # type: ignore[no-untyped-def]
    with db.session() as s:
        query = (
            select(Prescription.id)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(
                Patient.region_code == region,
                Prescription.status == "draft",
                Prescription.id.not_in(skip or (0,)),
            )
            .order_by(Prescription.id)
        )
        if prescriber_email:
            query = query.join(Prescriber, Prescriber.id == Prescription.prescriber_id).where(
                Prescriber.email == prescriber_email
            )
        found = s.scalars(query).first()
    assert found is not None
    return found


def status(db, pid: int) -> str:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return s.get(Prescription, pid).status


def outbox_state(db, pid: int) -> str | None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return s.scalars(
            select(DispatchOutbox.state).where(DispatchOutbox.prescription_id == pid)
        ).first()


def test_no_phi_or_secret_in_any_process_log(seeded, db_url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    log_dir = tmp_path / "logs"
    port = free_port()
    stack = Stack(
        env=base_env(
            DATABASE_URL=db_url,
            ERX_ENV="test",
            MAIL_BACKEND="file",
            MAIL_DIR=str(tmp_path / "mail"),
            WORKER_POLL_S="0.05",
            LOG_LEVEL="DEBUG",
        ),
        log_dir=log_dir,
    )
    secrets: dict[str, str] = {
        "webhook_secret": WEBHOOK_SECRET,
        "client_secret": _DEV_DEFAULTS["ERX_CLIENT_SECRET"],
        "encryption_key": _DEV_DEFAULTS["ERX_ENCRYPTION_KEYS"],
        "jwt_secret": stack.env["JWT_SECRET"],
        "wrong_password": WRONG_PASSWORD,
        "wrong_pin": WRONG_PIN,
    }
    for email, (password, pin) in PRESCRIBERS.items():
        secrets[f"password:{email}"], secrets[f"pin:{email}"] = password, pin
    try:
        stack.start_sandbox(webhook_port=port, extra=["--auto", "--auto-delay", "0.2"])
        for email, (password, pin) in PRESCRIBERS.items():
            stored = (WRONG_PASSWORD, WRONG_PIN) if email == BAD else (password, pin)
            stack.flask(
                "prescribers",
                "set-credentials",
                email,
                env={"ERX_PRESCRIBER_PASSWORD": stored[0], "ERX_PRESCRIBER_PIN": stored[1]},
            )
        url = stack.start_service(port=port, workers=2)
        service = stack.bearer(role="service", subject="svc-logs")
        secrets["jwt"] = service["Authorization"].split(" ", 1)[1]

        with seeded.session() as s:
            pharmacy_b = s.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 17)).one()
            pharmacy_a = s.scalars(
                select(Pharmacy.id).where(Pharmacy.email == REGION_A_PHARMACY)
            ).one()
        region_b = draft(seeded, region="B", prescriber_email=GOOD)
        rejected = draft(seeded, region="B", prescriber_email=GOOD, skip=(region_b,))
        blocked = draft(seeded, region="B", prescriber_email=BAD)
        region_a = draft(seeded, region="A")
        sends = [
            (region_b, pharmacy_b),
            (rejected, pharmacy_b),
            (blocked, pharmacy_b),
            (region_a, pharmacy_a),
        ]
        for pid, pharmacy in sends:
            resp = requests.post(
                f"{url}/api/v1/prescriptions/{pid}/send",
                json={"pharmacy_id": pharmacy},
                headers=service,
                timeout=10,
            )
            assert resp.status_code == 202, resp.text
        # After queueing (the pre-send check would refuse it up front): the platform's refusal path.
        with seeded.session() as s:
            s.execute(
                update(PrescriptionMedicine)
                .where(
                    PrescriptionMedicine.prescription_id == rejected,
                    PrescriptionMedicine.position == 1,
                )
                .values(vpid=MORPHINE, description="Morphine sulfate 10mg/5ml oral solution")
            )

        body = b'{"event_id":"evt_forged","type":"prescription.status_updated"}'
        forged = requests.post(
            f"{url}/webhooks/platform",
            data=body,
            timeout=10,
            headers={
                "Content-Type": "application/json",
                "X-Signature": sign(body, ["not-the-secret"], timestamp=int(time.time())),
            },
        )
        assert forged.status_code in (400, 401, 403)

        stack.start_worker("worker")
        wait_until(lambda: status(seeded, region_b) == "dispensed", timeout_s=60, interval_s=0.2)
        wait_until(lambda: status(seeded, region_a) == "emailed", timeout_s=60, interval_s=0.2)
        wait_until(lambda: status(seeded, rejected) == "rejected", timeout_s=60, interval_s=0.2)
        wait_until(
            lambda: outbox_state(seeded, blocked) == "blocked_credentials",
            timeout_s=60,
            interval_s=0.2,
        )
        # Read it back as a patient would (the response carries PHI; the logs must not).
        assert (
            requests.get(
                f"{url}/api/v1/prescriptions/{region_b}", headers=service, timeout=10
            ).status_code
            == 200
        )
    finally:
        stack.stop()

    with seeded.session() as s:
        tokens = [t for t in s.scalars(select(Prescription.platform_token)) if t]
    assert tokens  # the Region B send was issued: its platform token is one of the secrets
    values = seeded_phi(seeded)
    values += [PhiValue("secret", name, value) for name, value in secrets.items()]
    values += [PhiValue("secret", "platform_token", token) for token in tokens]
    logs = sorted(log_dir.glob("*.log"))
    assert {p.stem for p in logs} >= {"sandbox", "service", "worker"}
    assert all(p.stat().st_size > 0 for p in logs)
    findings = scan_log_files(logs, values)
    assert findings == [], "\n".join(str(f) for f in findings[:50])
