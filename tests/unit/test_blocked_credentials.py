"""A refused prescriber login parks that prescriber's sends until their credentials change
(point 5), against the fake platform (``responses``) and the real database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from app.foundation.models import DispatchOutbox, Patient, Prescriber, Prescription
from app.services.reconcile import reconcile
from tests.support import PRESCRIBER_SECRETS
from tests.unit import test_dispatch
from tests.unit.test_dispatch import queue

# The dispatch tests' fixtures: fake platform, connector client, clock, dispatcher factory.
rsps, platform, erx, clock, make_dispatcher = (
    test_dispatch.rsps,
    test_dispatch.platform,
    test_dispatch.erx,
    test_dispatch.clock,
    test_dispatch.make_dispatcher,
)

JONES, PATEL = "dr.jones@example.test", "dr.patel@example.test"


def references(db, email: str, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return list(
            s.scalars(
                select(Prescription.reference)
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


def store(runner, email: str, password: str):  # type: ignore[no-untyped-def]
    result = runner.invoke(
        args=["prescribers", "set-credentials", email],
        env={
            "ERX_PRESCRIBER_PASSWORD": password,
            "ERX_PRESCRIBER_PIN": PRESCRIBER_SECRETS[email][1],
        },
    )
    assert result.exit_code == 0, result.output
    return result


def states(db, pids: list[int]) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        rows = {
            r.prescription_id: (r.state, r.attempts)
            for r in s.scalars(
                select(DispatchOutbox).where(DispatchOutbox.prescription_id.in_(pids))
            )
        }
    return [rows[p] for p in pids]


def test_refused_login_blocks_without_further_logins_and_new_credentials_resume(  # type: ignore[no-untyped-def]
    client, runner, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:
    store(runner, JONES, "wrong-password")
    first, second = (queue(client, seeded, ref) for ref in references(seeded, JONES, 2))
    other = queue(client, seeded, references(seeded, PATEL, 1)[0])
    dispatcher = make_dispatcher()

    assert dispatcher.run_batch() == 3
    assert states(seeded, [first, second, other]) == [
        ("blocked_credentials", 1),
        ("blocked_credentials", 0),  # blocked at claim: no login, no attempt
        ("done", 1),
    ]
    assert platform.logins[JONES] == 1
    # Parked rows are not claimed again, however much time passes.
    clock.advance(3600)
    assert dispatcher.run_batch() == 0
    assert platform.logins[JONES] == 1
    listed = runner.invoke(args=["outbox", "list-blocked"])
    assert listed.exit_code == 0
    assert (
        f"prescription_id={first}" in listed.output and f"prescription_id={second}" in listed.output
    )
    assert f"prescription_id={other}" not in listed.output
    # The prescriber is named by login: what `prescribers set-credentials` takes.
    assert listed.output.count(f"login={JONES}") == 2

    store(runner, JONES, PRESCRIBER_SECRETS[JONES][0])
    assert states(seeded, [first, second]) == [("pending", 0), ("pending", 0)]
    assert dispatcher.run_batch() == 2
    assert states(seeded, [first, second]) == [("done", 1), ("done", 1)]
    assert platform.logins[JONES] == 2  # the refused one, then one with the new password
    with seeded.session() as s:
        assert (
            s.scalars(
                select(Prescriber.credentials_refused_at).where(Prescriber.email == JONES)
            ).one()
            is None
        )


def test_reconcile_does_not_log_in_for_a_refused_prescriber(  # type: ignore[no-untyped-def]
    seeded, with_credentials, platform, erx, clock, settings
) -> None:
    from app.services.credentials import credential_cipher

    reference = references(seeded, JONES, 1)[0]
    with seeded.session() as s:
        jones = s.scalars(select(Prescriber).where(Prescriber.email == JONES)).one()
        jones.credentials_refused_at = clock()
        s.execute(
            update(Prescription)
            .where(Prescription.reference == reference)
            .values(
                status="issued",
                platform_token="SRXTOKEN000001",
                last_event_at=clock() - timedelta(hours=2),
            )
        )

    report = reconcile(
        seeded,
        erx,
        credential_cipher(settings.encryption_keys),
        quiet_s=3600,
        now=clock,
        base_url="http://x",
    )

    assert report.errors == 1 and "set-credentials" in report.failures[0]
    assert f"prescriber {JONES};" in report.failures[0]  # by login, as operators know it
    assert platform.logins.get(JONES, 0) == 0


def test_credentials_stored_while_a_batch_is_out_are_used_for_its_later_sends(  # type: ignore[no-untyped-def]
    client, runner, seeded, with_credentials, platform, make_dispatcher
) -> None:
    first, second = (queue(client, seeded, ref) for ref in references(seeded, JONES, 2))
    password, old_pin = PRESCRIBER_SECRETS[JONES]
    new_pin = "909090"
    stored: list[bool] = []

    def operator_rotates_the_pin() -> None:
        if not stored:  # during the batch's first send
            stored.append(True)
            result = runner.invoke(
                args=["prescribers", "set-credentials", JONES],
                env={"ERX_PRESCRIBER_PASSWORD": password, "ERX_PRESCRIBER_PIN": new_pin},
            )
            assert result.exit_code == 0, result.output

    platform.on_post = operator_rotates_the_pin
    assert make_dispatcher().run_batch() == 2  # one claim, one read of both prescriptions

    assert [p["secure_pin"] for p in platform.posts] == [old_pin, new_pin]
    assert states(seeded, [first, second]) == [("done", 1), ("done", 1)]
