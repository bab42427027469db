"""Credentials that can't lock an account, against the real sandbox process.

A wrong password stored for one prescriber costs exactly one refused login: the
platform's ``login_failed`` parks that prescriber's sends in
``blocked_credentials`` and no further login is tried for them, while another
prescriber's sends go through. ``set-credentials --verify`` refuses to store
credentials the platform refuses; storing good ones resumes the parked sends
by themselves.
"""

from __future__ import annotations

import json

import requests
from sqlalchemy import select

from app.foundation.models import DispatchOutbox, Patient, Pharmacy, Prescriber, Prescription
from tests.conftest import PRESCRIBER_SECRETS
from tests.integration.conftest import wait_until, worker_threads

JONES, PATEL = "dr.jones@example.test", "dr.patel@example.test"


def region_b_drafts(db, email: str, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return list(
            s.scalars(
                select(Prescription.id)
                .join(Patient, Patient.id == Prescription.patient_id)
                .join(Prescriber, Prescriber.id == Prescription.prescriber_id)
                .where(
                    Patient.region_code == "B",
                    Prescription.status == "draft",
                    Prescriber.email == email,
                )
                .order_by(Prescription.id)
                .limit(count)
            )
        )


def send(live, db, prescription_id: int) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        pharmacy_id = s.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 17)).one()
    resp = requests.post(
        f"{live.url}/api/v1/prescriptions/{prescription_id}/send",
        json={"pharmacy_id": pharmacy_id},
        headers=live.auth(),
        timeout=10,
    )
    assert resp.status_code == 202, resp.text


def outbox_states(db, ids: list[int]) -> list[str]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        by_id = dict(
            s.execute(
                select(DispatchOutbox.prescription_id, DispatchOutbox.state).where(
                    DispatchOutbox.prescription_id.in_(ids)
                )
            ).all()
        )
    return [by_id.get(i, "missing") for i in ids]


def set_credentials(live, email: str, password: str, *, verify: bool = False):  # type: ignore[no-untyped-def]
    args = ["prescribers", "set-credentials", email] + (["--verify"] if verify else [])
    return live.app.test_cli_runner().invoke(
        args=args,
        env={
            "ERX_PRESCRIBER_PASSWORD": password,
            "ERX_PRESCRIBER_PIN": PRESCRIBER_SECRETS[email][1],
        },
    )


def test_verify_refuses_to_store_credentials_the_platform_refuses(live, seeded, sandbox):
    with seeded.session() as s:
        before = s.scalars(select(Prescriber.password_enc).where(Prescriber.email == JONES)).one()

    result = set_credentials(live, JONES, "not-the-password", verify=True)

    assert result.exit_code != 0
    # One line names the cause (JSON log lines of the attempt aside), no traceback.
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "refused the login" in errors[0] and "nothing stored" in errors[0]
    assert "Traceback" not in result.output
    assert "not-the-password" not in result.output
    with seeded.session() as s:
        assert (
            s.scalars(select(Prescriber.password_enc).where(Prescriber.email == JONES)).one()
            == before
        )
    assert sandbox.stats()["login_refusals_by_email"] == {JONES: 1}

    good = set_credentials(live, JONES, PRESCRIBER_SECRETS[JONES][0], verify=True)
    assert good.exit_code == 0, good.output
    assert "verified" in good.output


def test_refused_login_parks_the_prescribers_sends_with_one_login_until_credentials_change(
    live, live_settings, seeded, sandbox
):
    jones = region_b_drafts(seeded, JONES, 3)
    patel = region_b_drafts(seeded, PATEL, 1)
    assert len(jones) == 3 and len(patel) == 1
    assert set_credentials(live, JONES, "wrong-password-stored-without-verify").exit_code == 0

    for pid in jones[:2] + patel:
        send(live, seeded, pid)
    with worker_threads(live_settings, seeded, count=2):
        wait_until(
            lambda: outbox_states(seeded, jones[:2]) == ["blocked_credentials"] * 2, timeout_s=30
        )
        wait_until(lambda: outbox_states(seeded, patel) == ["done"], timeout_s=30)
        # A send queued after the refusal is parked without another login.
        send(live, seeded, jones[2])
        wait_until(
            lambda: outbox_states(seeded, jones) == ["blocked_credentials"] * 3, timeout_s=30
        )

        # Exactly one refused login for that prescriber; the other one is unaffected.
        stats = sandbox.stats()
        assert stats["login_refusals_by_email"] == {JONES: 1}
        assert stats["logins_by_email"].get(PATEL) == 1
        assert stats["issue_attempts"] == 1

        listed = live.app.test_cli_runner().invoke(args=["outbox", "list-blocked", "--json"])
        assert listed.exit_code == 0, listed.output
        assert sorted(item["prescription_id"] for item in json.loads(listed.output)) == jones

        # New credentials: the parked sends resume by themselves.
        assert set_credentials(live, JONES, PRESCRIBER_SECRETS[JONES][0]).exit_code == 0
        wait_until(lambda: outbox_states(seeded, jones) == ["done"] * 3, timeout_s=30)

    stats = sandbox.stats()
    assert stats["login_refusals_by_email"] == {JONES: 1}
    assert stats["logins_by_email"][JONES] == 1
    with seeded.session() as s:
        statuses = s.scalars(select(Prescription.status).where(Prescription.id.in_(jones))).all()
        refused_at = s.scalars(
            select(Prescriber.credentials_refused_at).where(Prescriber.email == JONES)
        ).one()
    assert set(statuses) <= {"issued", "signed", "printed", "dispensed"}
    assert refused_at is None
