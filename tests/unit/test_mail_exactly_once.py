"""The email intent's stages (app/services/mail.py) with a recording transport: fencing and restarts."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY
from sqlalchemy import select

from app.foundation.db import Database
from app.foundation.models import DispatchOutbox, EmailIntent, Patient, Pharmacy, Prescription
from app.services.connector_factory import make_client
from app.services.dispatch import Dispatcher
from app.services.mail import EmailJob, InDoubt, Mailer, NotAccepted, email_job
from app.services.prescriptions import queue_send
from tests.conftest import make_settings


class Recorder:
    """A transport that records deliveries; ``before`` runs before the fence is checked."""

    def __init__(
        self, before: Callable[[], None] | None = None, fail: Exception | None = None
    ) -> None:
        self.delivered: list[str] = []
        self.before = before
        self.fail = fail

    def deliver(
        self, *, sender: str, recipient: str, data: bytes, key: str, before_data: Callable[[], bool]
    ) -> str:
        if self.before is not None:
            before, self.before = self.before, None
            before()
        if not before_data():
            raise NotAccepted("superseded")
        if self.fail is not None:
            raise self.fail
        self.delivered.append(key)
        return "250 OK"


def job(db: Database) -> EmailJob:
    with db.session() as s:
        pid = s.scalars(
            select(Prescription.id)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(Patient.region_code == "A")
            .order_by(Prescription.id)
        ).first()
        pharmacy_id = s.scalars(
            select(Pharmacy.id).where(Pharmacy.region_code == "A").order_by(Pharmacy.id)
        ).first()
    assert pid is not None and pharmacy_id is not None
    queue_send(db, pid, pharmacy_id=pharmacy_id)
    with db.session() as s:
        rx = s.get(Prescription, pid)
        assert rx is not None
        return email_job(rx)


def stage(db: Database, prescription_id: int) -> str:
    with db.session() as s:
        return s.scalars(
            select(EmailIntent.stage).where(EmailIntent.prescription_id == prescription_id)
        ).one()


def test_an_attempt_overtaken_by_another_worker_never_reaches_data(
    seeded: Database, db_url: str
) -> None:
    settings = make_settings(db_url)
    the_job = job(seeded)
    newer = Recorder()
    # While the first attempt is still talking to the server (its lease ran out), another takes over.
    older = Recorder(before=lambda: Mailer(settings, transport=newer).deliver_once(seeded, the_job))

    first = Mailer(settings, transport=older).deliver_once(seeded, the_job)

    assert (first.kind, first.error.code if first.error else None) == ("retry", "superseded")
    assert (older.delivered, newer.delivered) == ([], [the_job.reference])
    assert stage(seeded, the_job.prescription_id) == "accepted"
    again = Mailer(settings, transport=Recorder()).deliver_once(seeded, the_job)
    assert (again.kind, again.already) == ("accepted", True)


def test_a_refusal_after_the_marker_returns_to_prepared_and_in_doubt_never_sends(
    seeded: Database, db_url: str
) -> None:
    settings = make_settings(db_url)
    the_job = job(seeded)

    refused = Mailer(
        settings, transport=Recorder(fail=NotAccepted("smtp_end_of_data_451"))
    ).deliver_once(seeded, the_job)
    assert refused.kind == "retry" and stage(seeded, the_job.prescription_id) == "prepared"

    lost = Mailer(settings, transport=Recorder(fail=InDoubt("no reply"))).deliver_once(
        seeded, the_job
    )
    assert (lost.kind, lost.reason) == ("in_doubt", "no reply")

    later = Recorder()
    parked = Mailer(settings, transport=later).deliver_once(seeded, the_job)
    assert (parked.kind, parked.reason, later.delivered) == ("in_doubt", "no reply", [])
    with seeded.session() as s:
        intent = s.scalars(
            select(EmailIntent).where(EmailIntent.prescription_id == the_job.prescription_id)
        ).one()
    assert (intent.stage, intent.attempts) == ("in_doubt", 2)
    assert intent.message_id == refused.message_id == lost.message_id == parked.message_id


def test_a_crash_after_the_marker_is_in_doubt(seeded: Database, db_url: str) -> None:
    settings = make_settings(db_url)
    the_job = job(seeded)

    class Crash(Exception):
        pass

    class DiesAfterMarker(Recorder):
        def deliver(self, *, sender, recipient, data, key, before_data):  # type: ignore[no-untyped-def]
            assert before_data()
            raise Crash  # stands for the process dying mid-DATA

    try:
        Mailer(settings, transport=DiesAfterMarker()).deliver_once(seeded, the_job)
    except Crash:
        pass
    assert stage(seeded, the_job.prescription_id) == "data"

    nxt = Recorder()
    result = Mailer(settings, transport=nxt).deliver_once(seeded, the_job)
    assert result.kind == "in_doubt" and nxt.delivered == []
    assert result.reason is not None and "reached DATA" in result.reason


def test_a_dead_letter_says_what_the_server_refused_and_the_metric_keeps_its_code(
    seeded: Database, db_url: str
) -> None:
    settings = make_settings(db_url, dispatch_max_attempts=1)
    the_job = job(seeded)
    cause = (
        "the SMTP server mail.example.test:587 refused the message at RCPT TO: "
        "550 5.1.1 <address> Mailbox unavailable"
    )
    labels = {"route": "email", "outcome": "dead", "reason": "smtp_rcpt_550"}
    before = REGISTRY.get_sample_value("erx_sends_stopped_total", labels) or 0.0
    mailer = Mailer(settings, transport=Recorder(fail=NotAccepted("smtp_rcpt_550", cause)))

    Dispatcher(
        seeded, settings, make_client(settings), worker_id="w-mail", mailer=mailer
    ).run_batch()

    with seeded.session() as s:
        row = s.scalars(
            select(DispatchOutbox).where(DispatchOutbox.prescription_id == the_job.prescription_id)
        ).one()
        intent = s.scalars(
            select(EmailIntent).where(EmailIntent.prescription_id == the_job.prescription_id)
        ).one()
    assert (row.state, row.last_error) == ("dead", cause)
    assert intent.last_error == cause
    # Metric labels stay the short code; the sentence is only the row's.
    assert REGISTRY.get_sample_value("erx_sends_stopped_total", labels) == before + 1
