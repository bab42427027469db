"""Region A end to end with a real SMTP server on loopback (aiosmtpd): the PDF by email, once.

The server is ``aiosmtpd.controller.Controller`` on a free port; its handler
records every message it accepts and can refuse RCPT with a 4xx, drop the
connection after taking the message (the reply is lost), or SIGKILL the
worker process on receipt. The worker runs in-process with an injected clock
(backoff without sleeping), or as ``flask --app app worker`` processes for the
kill test. The PDF is opened with pypdf and its text checked.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import signal
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pypdf import PdfReader
from sqlalchemy import select

from app.foundation.config import Settings
from app.foundation.db import Database
from app.foundation.models import (
    DispatchOutbox,
    EmailIntent,
    Patient,
    Pharmacy,
    Prescription,
    StatusHistory,
)
from app.services.connector_factory import make_client
from app.services.dispatch import Dispatcher
from app.services.mail import Mailer, email_job
from app.services.prescriptions import queue_send
from scripts.stack import Stack, base_env, free_port
from tests.conftest import make_settings
from tests.integration.conftest import wait_until
from tests.support import FakeClock

pytestmark = pytest.mark.integration

PHARMACY_EMAIL = "ards@pharmacy-a.example.test"
SMTP_USER, SMTP_PASSWORD = "erx-mailer", "smtp-test-password"


class Handler:
    """An aiosmtpd handler that stores accepted messages and misbehaves on request."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse_rcpt = 0  # answer 451 to this many RCPT commands
        self.refuse_data = 0  # answer 452 to the end of data this many times (message not taken)
        self.drop_after_data = 0  # take this many messages, then cut the connection (reply lost)
        self.kill_pid_on_data: int | None = None  # SIGKILL this process once a message is taken
        self.logins: list[str] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if self.refuse_rcpt:
            self.refuse_rcpt -= 1
            # Servers often quote the address they refuse.
            return f"451 4.3.0 <{address}>: Mailbox temporarily unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        if self.refuse_data:
            self.refuse_data -= 1
            return "452 4.3.1 Insufficient system storage"
        with self.lock:
            self.messages.append(
                BytesParser(policy=policy.default).parsebytes(envelope.original_content)
            )
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        if self.kill_pid_on_data is not None:
            os.kill(self.kill_pid_on_data, signal.SIGKILL)
        if self.drop_after_data:
            self.drop_after_data -= 1
            server.transport.abort()
        return "250 2.0.0 OK queued as TEST1"


def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok)


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Handler]]:
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


# The worker's clock starts at the real now: operator commands (requeue) stamp the
# real time, and a fixed date would leave their rows due in the clock's future.
Clock = FakeClock


def smtp_settings(db_url: str, port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"smtp_timeout_s": 5.0, **overrides}
    return make_settings(
        db_url, mail_backend="smtp", smtp_host="127.0.0.1", smtp_port=port, **values
    )


def region_a_prescription(db: Database, clock: Clock) -> int:
    """Queue the first Region A draft for the Ards pharmacy; returns its id."""
    with db.session() as s:
        pid = s.scalars(
            select(Prescription.id)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(Patient.region_code == "A", Prescription.status == "draft")
            .order_by(Prescription.id)
        ).first()
        pharmacy_id = s.scalars(select(Pharmacy.id).where(Pharmacy.email == PHARMACY_EMAIL)).one()
    assert pid is not None
    reply = queue_send(db, pid, pharmacy_id=pharmacy_id, now=clock())
    assert reply.status == "queued"
    return pid


def dispatcher(db: Database, settings: Settings, clock: Clock) -> Dispatcher:
    return Dispatcher(
        db, settings, make_client(settings), worker_id="mail-test", now=clock, rand=lambda: 0.5
    )


def state(db: Database, pid: int) -> tuple[str, str, int, str | None]:
    with db.session() as s:
        rx = s.get(Prescription, pid)
        row = s.scalars(select(DispatchOutbox).where(DispatchOutbox.prescription_id == pid)).one()
        assert rx is not None
        return rx.status, row.state, row.attempts, row.last_error


def history(db: Database, pid: int) -> list[tuple[str, str]]:
    with db.session() as s:
        rows = s.scalars(
            select(StatusHistory)
            .where(StatusHistory.prescription_id == pid)
            .order_by(StatusHistory.id)
        )
        return [(h.to_status, h.source) for h in rows]


def pdf_text(message: EmailMessage) -> str:
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    return "\n".join(
        page.extract_text() for page in PdfReader(BytesIO(attachment.get_content())).pages
    )


def our_logs(caplog: pytest.LogCaptureFixture) -> str:
    """The service's log lines (the test SMTP server's own debug logs are not ours)."""
    ours = [r for r in caplog.records if r.name.split(".")[0] in ("app", "webhooks", "connector")]
    assert ours, "the service logs what it does"
    return "\n".join(f"{r.getMessage()} {r.args}" for r in ours)


# -- delivery -----------------------------------------------------------------------------


def test_the_pharmacy_receives_the_prescription_pdf_exactly_once(seeded, db_url, smtp) -> None:  # type: ignore[no-untyped-def]
    controller, handler = smtp
    clock = Clock()
    settings = smtp_settings(db_url, controller.port)
    pid = region_a_prescription(seeded, clock)

    worker = dispatcher(seeded, settings, clock)
    worker.run_batch()
    clock.advance(3600)
    worker.run_batch()  # nothing left to do: no second message

    assert len(handler.messages) == 1
    message = handler.messages[0]
    assert handler.envelopes == [(settings.mail_from, [PHARMACY_EMAIL])]
    with seeded.session() as s:
        rx = s.get(Prescription, pid)
        assert rx is not None
        reference, clinic, pharmacy = rx.reference, rx.clinic.name, rx.pharmacy.name  # type: ignore[union-attr]
        medicines = [(m.description, m.quantity, m.directions) for m in rx.medicines]
        patient = rx.patient
        intent = s.scalars(select(EmailIntent).where(EmailIntent.prescription_id == pid)).one()
    assert message["To"] == PHARMACY_EMAIL
    assert message["Message-ID"] == intent.message_id and reference in intent.message_id
    assert reference in message["Subject"] and patient.last_name not in message["Subject"]
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == f"prescription-{reference}.pdf"
    text = pdf_text(message)
    flat = " ".join(text.split())
    for expected in (reference, clinic, pharmacy, f"{patient.first_name} {patient.last_name}"):
        assert expected in flat, expected
    assert medicines
    for description, quantity, directions in medicines:
        assert description in flat and directions in flat and str(quantity) in text.split()
    assert (intent.stage, intent.attempts, intent.smtp_reply) == (
        "accepted",
        1,
        "250 2.0.0 OK queued as TEST1",
    )
    assert state(seeded, pid)[:2] == ("emailed", "done")
    assert history(seeded, pid) == [("queued", "service"), ("emailed", "service")]


def test_a_refused_rcpt_is_retried_with_backoff_and_delivered_once(seeded, db_url, smtp) -> None:  # type: ignore[no-untyped-def]
    controller, handler = smtp
    handler.refuse_rcpt = 1
    clock = Clock()
    pid = region_a_prescription(seeded, clock)
    worker = dispatcher(seeded, smtp_settings(db_url, controller.port), clock)

    worker.run_batch()
    # The cause an operator reads names the server and its reply, never the recipient.
    cause = (
        f"the SMTP server 127.0.0.1:{controller.port} refused the message at RCPT TO: "
        "451 4.3.0 <address> Mailbox temporarily unavailable"
    )
    assert state(seeded, pid) == ("queued", "pending", 1, cause)
    worker.run_batch()  # not due yet: the backoff holds it
    assert state(seeded, pid)[2] == 1 and handler.messages == []

    clock.advance(60)
    worker.run_batch()

    assert len(handler.messages) == 1
    assert state(seeded, pid) == ("emailed", "done", 2, None)


def test_a_refusal_of_the_message_itself_is_retried_and_delivered_once(
    seeded, db_url, smtp
) -> None:  # type: ignore[no-untyped-def]
    controller, handler = smtp
    handler.refuse_data = 1
    clock = Clock()
    pid = region_a_prescription(seeded, clock)
    worker = dispatcher(seeded, smtp_settings(db_url, controller.port), clock)

    worker.run_batch()
    cause = (
        f"the SMTP server 127.0.0.1:{controller.port} refused the message at the end of DATA: "
        "452 4.3.1 Insufficient system storage"
    )
    assert state(seeded, pid) == ("queued", "pending", 1, cause)
    clock.advance(60)
    worker.run_batch()

    assert len(handler.messages) == 1
    assert state(seeded, pid) == ("emailed", "done", 2, None)


def test_a_server_that_is_down_is_retried_and_delivered_once(seeded, db_url, smtp) -> None:  # type: ignore[no-untyped-def]
    controller, handler = smtp
    clock = Clock()
    pid = region_a_prescription(seeded, clock)
    down_port = free_port()  # nothing listens there
    dispatcher(seeded, smtp_settings(db_url, down_port), clock).run_batch()
    status, outbox_state, attempts, error = state(seeded, pid)
    assert (status, outbox_state, attempts) == ("queued", "pending", 1)
    assert error is not None and error.startswith(
        f"the SMTP transaction with 127.0.0.1:{down_port} failed at connect ("
    )

    clock.advance(60)
    dispatcher(seeded, smtp_settings(db_url, controller.port), clock).run_batch()

    assert len(handler.messages) == 1
    assert state(seeded, pid)[:2] == ("emailed", "done")


def test_an_acceptance_stored_before_a_crash_is_recorded_without_sending_again(
    seeded, db_url, smtp
) -> None:  # type: ignore[no-untyped-def]
    controller, handler = smtp
    clock = Clock()
    settings = smtp_settings(db_url, controller.port)
    pid = region_a_prescription(seeded, clock)
    # The server accepted and the intent says so, but the process died before dispatch stored "emailed".
    with seeded.session() as s:
        rx = s.get(Prescription, pid)
        job = email_job(rx)  # type: ignore[arg-type]
    assert Mailer(settings).deliver_once(seeded, job, now=clock).kind == "accepted"

    dispatcher(seeded, settings, clock).run_batch()

    assert len(handler.messages) == 1
    assert state(seeded, pid)[:2] == ("emailed", "done")


def test_a_lost_reply_after_data_parks_the_email_until_an_operator_decides(
    seeded, db_url, smtp, app
) -> None:  # type: ignore[no-untyped-def]
    controller, handler = smtp
    handler.drop_after_data = 1
    clock = Clock()
    pid = region_a_prescription(seeded, clock)
    worker = dispatcher(seeded, smtp_settings(db_url, controller.port), clock)

    worker.run_batch()
    clock.advance(3600)
    worker.run_batch()

    assert len(handler.messages) == 1  # the server has it; we never heard so, and never resend
    status, outbox_state, _, error = state(seeded, pid)
    assert (status, outbox_state) == ("email_in_doubt", "dead")
    assert error is not None and error.startswith("email_in_doubt: no reply to the DATA terminator")
    # The cause says what to do next, with this row's id.
    assert "outbox confirm-sent" in error and "outbox requeue" in error
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["outbox", "list-dead", "--json"])
    (item,) = json.loads(listed.output)  # one JSON document
    assert item["prescription_id"] == pid and item["outcome_unknown"] is True
    assert item["last_error"].startswith("email_in_doubt")

    # The operator checked with the pharmacy: it never arrived. Requeue sends it again, same Message-ID.
    result = runner.invoke(args=["outbox", "requeue", str(item["outbox_id"])])
    assert result.exit_code == 0, result.output
    worker.run_batch()

    assert len(handler.messages) == 2
    assert handler.messages[0]["Message-ID"] == handler.messages[1]["Message-ID"]
    assert state(seeded, pid)[:2] == ("emailed", "done")
    assert [h[0] for h in history(seeded, pid)] == ["queued", "email_in_doubt", "queued", "emailed"]


def test_an_operator_confirms_an_email_in_doubt(seeded, db_url, smtp, app) -> None:  # type: ignore[no-untyped-def]
    controller, handler = smtp
    handler.drop_after_data = 1
    clock = Clock()
    pid = region_a_prescription(seeded, clock)
    dispatcher(seeded, smtp_settings(db_url, controller.port), clock).run_batch()
    with seeded.session() as s:
        outbox_id = s.scalars(
            select(DispatchOutbox.id).where(DispatchOutbox.prescription_id == pid)
        ).one()
    runner = app.test_cli_runner()

    wrong = runner.invoke(args=["outbox", "confirm-sent", str(outbox_id + 1000)])
    assert (
        wrong.exit_code != 0
        and wrong.output.strip().splitlines()[-1] == f"Error: no outbox row {outbox_id + 1000}"
    )
    result = runner.invoke(args=["outbox", "confirm-sent", str(outbox_id)])
    assert result.exit_code == 0, result.output
    again = runner.invoke(args=["outbox", "confirm-sent", str(outbox_id)])
    assert again.exit_code != 0 and "not an email in doubt" in again.output

    assert len(handler.messages) == 1
    assert state(seeded, pid)[:2] == ("emailed", "done")
    assert history(seeded, pid)[-1] == ("emailed", "operator")


# -- the worker killed right after the server took the message ------------------------------


def test_a_worker_killed_after_the_server_accepted_never_sends_a_second_copy(
    seeded, db_url, smtp, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    controller, handler = smtp
    clock = Clock()
    clock.now = datetime.now(UTC)  # the worker processes use the real clock
    pid = region_a_prescription(seeded, clock)
    stack = Stack(
        env=base_env(
            DATABASE_URL=db_url,
            ERX_ENV="test",
            MAIL_BACKEND="smtp",
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(controller.port),
            SMTP_TIMEOUT_S="5",
            ERX_CONNECT_TIMEOUT_S="0.2",
            ERX_READ_TIMEOUT_S="0.3",
            LEASE_S="3.5",  # just above 6 x (connect + read): the killed worker's row returns soon
            WORKER_POLL_S="0.05",
        ),
        log_dir=tmp_path / "logs",
    )
    try:
        victim = stack.start_worker("worker-1", "--no-inbox")
        handler.kill_pid_on_data = victim.pid
        assert victim.wait(60) == -signal.SIGKILL
        handler.kill_pid_on_data = None
        assert len(handler.messages) == 1
        with seeded.session() as s:
            stage = s.scalars(
                select(EmailIntent.stage).where(EmailIntent.prescription_id == pid)
            ).one()
        assert stage == "data"  # the marker committed right before DATA survived the kill

        stack.start_worker("worker-2", "--no-inbox")
        wait_until(lambda: state(seeded, pid)[1] != "pending", timeout_s=60)
    finally:
        stack.stop()

    assert len(handler.messages) == 1
    assert state(seeded, pid)[:2] == ("email_in_doubt", "dead")
    listed = stack.flask("outbox", "list-dead", "--json")
    (item,) = json.loads(listed)  # one JSON document
    assert item["prescription_id"] == pid and item["last_error"].startswith("email_in_doubt")
    out = stack.flask("outbox", "confirm-sent", str(item["outbox_id"]))
    assert "confirmed" in out
    assert state(seeded, pid)[:2] == ("emailed", "done")
    assert len(handler.messages) == 1


# -- STARTTLS with credentials --------------------------------------------------------------


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_smtp(tmp_path: Path) -> Iterator[tuple[Controller, Handler, Path]]:
    cert_path, key_path = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    handler = Handler()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticator,
    )
    controller.start()
    try:
        yield controller, handler, cert_path
    finally:
        controller.stop()


def test_starttls_with_credentials_delivers_once(seeded, db_url, tls_smtp, caplog) -> None:  # type: ignore[no-untyped-def]
    controller, handler, ca_file = tls_smtp
    clock = Clock()
    pid = region_a_prescription(seeded, clock)
    settings = smtp_settings(
        db_url,
        controller.port,
        smtp_starttls=True,
        smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_ca_file=str(ca_file),
    )
    caplog.set_level("DEBUG")

    dispatcher(seeded, settings, clock).run_batch()

    assert len(handler.messages) == 1
    assert state(seeded, pid)[:2] == ("emailed", "done")
    assert SMTP_PASSWORD not in our_logs(caplog) and SMTP_PASSWORD not in repr(settings)


def test_a_wrong_password_is_retried_not_sent(seeded, db_url, tls_smtp) -> None:  # type: ignore[no-untyped-def]
    controller, handler, ca_file = tls_smtp
    clock = Clock()
    pid = region_a_prescription(seeded, clock)
    settings = smtp_settings(
        db_url,
        controller.port,
        smtp_starttls=True,
        smtp_username=SMTP_USER,
        smtp_password="wrong",
        smtp_ca_file=str(ca_file),
        smtp_timeout_s=1.0,  # the server may stay silent after a refused AUTH
    )

    dispatcher(seeded, settings, clock).run_batch()

    assert handler.messages == []
    status, outbox_state, attempts, error = state(seeded, pid)
    assert (status, outbox_state, attempts) == ("queued", "pending", 1)
    # The stage and the server, never the login or the password.
    assert error is not None
    assert error.startswith(f"the SMTP transaction with 127.0.0.1:{controller.port} failed at AUTH")
    assert SMTP_USER not in error and "wrong" not in error


def test_an_untrusted_certificate_is_refused_before_anything_is_sent(
    seeded, db_url, tls_smtp
) -> None:  # type: ignore[no-untyped-def]
    controller, handler, _ = tls_smtp
    clock = Clock()
    pid = region_a_prescription(seeded, clock)
    settings = smtp_settings(
        db_url,
        controller.port,
        smtp_starttls=True,
        smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
    )

    dispatcher(seeded, settings, clock).run_batch()

    assert handler.messages == []
    status, outbox_state, _, error = state(seeded, pid)
    assert (status, outbox_state) == ("queued", "pending")
    assert error is not None and error.startswith(
        f"the SMTP transaction with 127.0.0.1:{controller.port} failed at STARTTLS "
        "(SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    )


def test_no_patient_detail_is_logged(seeded, db_url, smtp, caplog) -> None:  # type: ignore[no-untyped-def]
    controller, handler = smtp
    handler.refuse_rcpt = 1
    caplog.set_level("DEBUG")
    clock = Clock()
    pid = region_a_prescription(seeded, clock)
    worker = dispatcher(seeded, smtp_settings(db_url, controller.port), clock)
    worker.run_batch()
    clock.advance(60)
    worker.run_batch()
    assert len(handler.messages) == 1
    with seeded.session() as s:
        patient = s.get(Prescription, pid).patient  # type: ignore[union-attr]
        forbidden = {
            patient.first_name,
            patient.last_name,
            patient.address_line1,
            patient.post_code,
            patient.date_of_birth.isoformat(),
            PHARMACY_EMAIL,
        }
    assert sorted(f for f in forbidden if f and f in our_logs(caplog)) == []


def test_tls_verification_can_be_switched_off_for_a_test_server(seeded, db_url, tls_smtp) -> None:  # type: ignore[no-untyped-def]
    controller, handler, _ = tls_smtp
    clock = Clock()
    pid = region_a_prescription(seeded, clock)
    settings = smtp_settings(
        db_url,
        controller.port,
        smtp_starttls=True,
        smtp_username=SMTP_USER,
        smtp_password=SMTP_PASSWORD,
        smtp_tls_verify=False,
    )

    dispatcher(seeded, settings, clock).run_batch()

    assert len(handler.messages) == 1
    assert state(seeded, pid)[:2] == ("emailed", "done")
