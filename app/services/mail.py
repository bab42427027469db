"""Region A: the prescription as a PDF by email to the pharmacy, exactly once.

The message (``multipart/mixed``: a short cover note and
``prescription-<reference>.pdf`` as ``application/pdf``) goes to the pharmacy's
address over SMTP (``SMTP_HOST``, ``SMTP_PORT``, STARTTLS when
``SMTP_STARTTLS`` is set, ``SMTP_USERNAME``/``SMTP_PASSWORD``), or with the
``file`` backend into ``MAIL_DIR`` for development. The PDF carries the
patient's details because the pharmacy needs them; logs carry ids only.

Exactly once (RFC 5321 §4.1.1.4, §6.1: the server takes responsibility for
a message when it answers 250 to the DATA terminator ``<CRLF>.<CRLF>``):

1. An intent row (``email_intents``, one per prescription, with a stable
   ``Message-ID``) is committed before the SMTP transaction starts.
2. Connect, EHLO, STARTTLS, AUTH, MAIL FROM and RCPT TO run with no stage
   change: a refusal or failure at any of them means the server has nothing,
   so the attempt is retried with the shared backoff (the outbox's).
3. Right before DATA the stage ``data`` is committed, fenced by the
   attempt's id (an attempt whose lease was taken over cannot reach DATA).
   A failure before the terminator is sent, or a 4xx/5xx reply to it, is
   still a definite "not accepted": the stage goes back to ``prepared``.
4. The terminator was sent and no reply was read (timeout, reset), or the
   process died anywhere after step 3: the message may have been accepted.
   It is **never sent again automatically**: the stage becomes ``in_doubt``,
   the outbox row a dead letter (``last_error`` ``email_in_doubt: <reason>``,
   ``flask --app app outbox list-dead``) and the prescription
   ``email_in_doubt``. An operator checks with the pharmacy or the mail
   server's log (the Message-ID identifies the message) and either confirms
   (``flask --app app outbox confirm-sent <outbox_id>``: ``emailed``) or
   resends (``flask --app app outbox requeue <outbox_id>``: same Message-ID).
5. A 250 reply commits the stage ``accepted``; dispatch then records
   ``emailed`` in the history. An attempt that finds ``accepted`` (a crash
   between the two) records ``emailed`` without sending.
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.foundation.config import Settings
from app.foundation.db import Database, insert_ignore, utcnow
from app.foundation.errors import Conflict, Invalid, NotFound
from app.foundation.models import DispatchOutbox, EmailIntent, Prescription
from app.mechanisms.audit import OPERATOR, record_by
from app.services.prescription_pdf import (
    PrescriptionSnapshot,
    find_unicode_font,
    prescription_snapshot,
    render_prescription_pdf,
)

log = logging.getLogger("app.mail")


@dataclass(frozen=True)
class EmailJob:
    """What the email flow needs, snapshotted in the claim's transaction (no ORM rows)."""

    prescription_id: int
    reference: str
    to: str
    snapshot: PrescriptionSnapshot

    @property
    def subject(self) -> str:
        """The subject line: our reference only (no PHI in headers)."""
        return f"Prescription {self.reference}"


def email_job(prescription: Prescription) -> EmailJob:
    """Build the :class:`EmailJob` for a Region A prescription (relations loaded).

    Raises :class:`app.foundation.errors.Invalid` when the prescription has no pharmacy.
    """
    if prescription.pharmacy is None:
        raise Invalid("The prescription has no pharmacy.", errors={"pharmacy_id": ["missing"]})
    snapshot = prescription_snapshot(prescription)
    return EmailJob(
        prescription_id=prescription.id,
        reference=prescription.reference,
        to=prescription.pharmacy.email,
        snapshot=snapshot,
    )


def message_id_for(reference: str, prescription_id: int, mail_from: str) -> str:
    """The stable Message-ID of one prescription's email (RFC 5322 §3.6.4).

    ``<rx.<reference>.<prescription_id>@<MAIL_FROM's domain>>``; the id keeps it
    unique even if two references sanitise alike.
    """
    local = re.sub(r"[^A-Za-z0-9\-_]", "-", reference)
    domain = mail_from.rpartition("@")[2] or "erx-connector.invalid"
    return f"<rx.{local}.{prescription_id}@{domain}>"


def build_message(
    job: EmailJob, *, mail_from: str, message_id: str, pdf: bytes, now: datetime
) -> EmailMessage:
    """The email for ``job``: cover note plus the PDF (``application/pdf``, filename with our reference)."""
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = job.to
    msg["Subject"] = job.subject
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(now)
    snap = job.snapshot
    msg.set_content(
        f"Dear {snap.pharmacy_name},\n\n"
        f"Please find attached private prescription {job.reference}, written on "
        f"{snap.prescribed_on.isoformat()} by {snap.prescriber_name} ({snap.clinic_name}).\n"
        f"Please quote our reference {job.reference} in any reply.\n"
    )
    msg.add_attachment(
        pdf, maintype="application", subtype="pdf", filename=f"prescription-{job.reference}.pdf"
    )
    return msg


@dataclass(frozen=True)
class Notice:
    """A plain-text notification (e.g. to a patient: "ready to collect"), no attachment.

    ``key``: a stable, unique id of this notice (the event id), used for its
    Message-ID and as the file backend's name; ``to``/``subject``/``text`` carry
    the message (never logged).
    """

    key: str
    prescription_id: int
    to: str
    subject: str
    text: str


# -- transports ---------------------------------------------------------------------


class NotAccepted(Exception):
    """The server (or the file backend) definitely does not have the message: safe to retry.

    ``code`` names the stage and the reply, e.g. ``smtp_rcpt_451`` (no PHI; a small set, fit
    for a metric label); ``cause`` is the one-line sentence an operator reads, e.g. "the
    SMTP server mail.example:587 refused the message at RCPT TO: 451 4.3.0 try later"
    (the server's host and port, never credentials or the recipient's address); it
    defaults to ``code``.
    """

    def __init__(self, code: str, cause: str | None = None) -> None:
        super().__init__(cause or code)
        self.code = code
        self.cause = cause or code


class InDoubt(Exception):
    """The DATA terminator was sent and no reply was read: the server may have the message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Transport(Protocol):
    """Delivers one message; calls ``before_data()`` right before the point of no return.

    ``before_data`` returns False when this attempt lost its fence: the
    transport must then stop without delivering. Returns the server's reply
    (no PHI). Raises :class:`NotAccepted` or :class:`InDoubt`.
    """

    def deliver(
        self, *, sender: str, recipient: str, data: bytes, key: str, before_data: Callable[[], bool]
    ) -> str: ...


_LEADING_DOT = re.compile(rb"(?m)^\.")
# What an operator reads for each stage of the SMTP transaction.
_STAGE_NAMES = {
    "connect": "connect",
    "ehlo": "EHLO",
    "starttls": "STARTTLS",
    "auth": "AUTH",
    "mail": "MAIL FROM",
    "rcpt": "RCPT TO",
    "data": "DATA",
    "end_of_data": "the end of DATA",
}
_ADDRESS = re.compile(r"\S+@\S+")
_SUPERSEDED = "another attempt took over this email before it was sent"


def _safe_text(text: str | bytes) -> str:
    """``text`` (a server reply or an error's text) on one line, addresses masked, at most 200 chars.

    A reply may quote the recipient's address (PHI-adjacent) or the login name.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return _ADDRESS.sub("<address>", " ".join(text.split()))[:200]


class SmtpTransport:
    """SMTP, one transaction per message, driven step by step so each stage is known."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _refused(self, stage: str, code: int, reply: str | bytes = b"") -> NotAccepted:
        """The server answered ``code`` (and ``reply``) at ``stage``: not accepted, with its cause."""
        s = self.settings
        text = f"{code} {_safe_text(reply)}".strip()
        return NotAccepted(
            f"smtp_{stage}_{code}",
            f"the SMTP server {s.smtp_host}:{s.smtp_port} refused the message at "
            f"{_STAGE_NAMES[stage]}: {text}",
        )

    def _failed(self, stage: str, exc: Exception) -> NotAccepted:
        """``exc`` was raised at ``stage`` before the message could go: not accepted, with its cause.

        The text of a socket, TLS or SMTP error names the failure (no credentials, no
        recipient); any other exception is named by its type only.
        """
        s = self.settings
        detail = _safe_text(str(exc)) if isinstance(exc, (OSError, smtplib.SMTPException)) else ""
        detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        return NotAccepted(
            f"smtp_{stage}_{type(exc).__name__}",
            f"the SMTP transaction with {s.smtp_host}:{s.smtp_port} failed at "
            f"{_STAGE_NAMES[stage]} ({detail})",
        )

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.settings.smtp_ca_file or None)
        if not self.settings.smtp_tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def deliver(
        self, *, sender: str, recipient: str, data: bytes, key: str, before_data: Callable[[], bool]
    ) -> str:
        """See :class:`Transport`. ``data`` has CRLF line ends (``policy.SMTP``)."""
        s = self.settings
        smtp: smtplib.SMTP | None = None
        stage = "connect"
        try:
            try:
                # Connects and reads the greeting (SMTPConnectError unless 220); STARTTLS
                # checks the certificate against this host name.
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
                stage = "ehlo"
                smtp.ehlo_or_helo_if_needed()
                if s.smtp_starttls:
                    stage = "starttls"
                    smtp.starttls(context=self._tls_context())
                    smtp.ehlo()
                if s.smtp_username:
                    stage = "auth"
                    smtp.login(s.smtp_username, s.smtp_password)
                stage = "mail"
                code, reply = smtp.mail(sender)
                if code != 250:
                    raise self._refused(stage, code, reply)
                stage = "rcpt"
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    raise self._refused(stage, code, reply)
                if not before_data():
                    raise NotAccepted("superseded", _SUPERSEDED)
                stage = "data"
                smtp.putcmd("data")
                code, reply = smtp.getreply()
                if code != 354:
                    raise self._refused(stage, code, reply)
                body = _LEADING_DOT.sub(b"..", data)
                if not body.endswith(b"\r\n"):
                    body += b"\r\n"
                smtp.send(body)  # without the terminator the server cannot accept it
            except smtplib.SMTPResponseException as exc:
                raise self._refused(stage, exc.smtp_code, exc.smtp_error) from None
            except NotAccepted:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a bad TLS setting: nothing was sent
                raise self._failed(stage, exc) from None
            # From the first byte of the terminator on, the server may take the message.
            if (
                smtp is None
            ):  # the loop above always connects or raises; never send a bare terminator
                raise NotAccepted("smtp_not_connected")
            try:
                smtp.send(b".\r\n")
                code, reply = smtp.getreply()
            except (OSError, smtplib.SMTPException) as exc:
                raise InDoubt(f"no reply to the DATA terminator ({type(exc).__name__})") from None
            if 400 <= code < 600:  # a definite refusal: the server did not take it
                raise self._refused("end_of_data", code, reply)
            if not 200 <= code < 300:  # smtplib gives -1 for a reply it cannot parse
                raise InDoubt(f"unreadable reply to the DATA terminator (code {code})")
            return f"{code} {reply.decode('utf-8', 'replace')}"[:500]
        finally:
            if smtp is not None:
                try:
                    smtp.quit()
                except (OSError, smtplib.SMTPException):
                    smtp.close()


class FileTransport:
    """Development: writes ``<key>.eml`` under ``MAIL_DIR``; the rename is the point of no return."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def deliver(
        self, *, sender: str, recipient: str, data: bytes, key: str, before_data: Callable[[], bool]
    ) -> str:
        """See :class:`Transport`; returns ``"file <name>"``."""
        target = self.folder / f"{key}.eml"
        temp = self.folder / f".{key}.eml.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(data)
            if not before_data():
                temp.unlink(missing_ok=True)
                raise NotAccepted("superseded", _SUPERSEDED)
            os.replace(temp, target)  # atomic: the file is there whole or not at all
        except OSError as exc:
            raise NotAccepted(
                f"file_{type(exc).__name__}",
                f"writing the message into MAIL_DIR failed ({exc.strerror or type(exc).__name__})",
            ) from None
        return f"file {target.name}"


# -- exactly once -----------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """The result of :meth:`Mailer.deliver_once`.

    ``kind``: ``accepted`` (``already`` true when an earlier attempt's
    acceptance was found and nothing was sent), ``retry`` (definitely not
    accepted; ``error`` is the :class:`NotAccepted`), or ``in_doubt``
    (``reason`` says why; never send again automatically).
    """

    kind: str
    message_id: str
    error: NotAccepted | None = None
    reason: str | None = None
    already: bool = False


class Mailer:
    """Sends Region A emails exactly once (see the module docs) through the configured backend."""

    def __init__(self, settings: Settings, *, transport: Transport | None = None) -> None:
        self.settings = settings
        if transport is None:
            transport = (
                SmtpTransport(settings)
                if settings.mail_backend == "smtp"
                else FileTransport(settings.mail_dir)
            )
        self.transport = transport

    def send(self, notice: Notice, *, now: Callable[[], datetime] = utcnow) -> str:
        """Send a plain :class:`Notice` once per call (at least once; the caller dedupes).

        Returns the Message-ID (``<notice.<key>@<MAIL_FROM's domain>>``, stable per
        notice, so a mail system can drop a redelivered copy). Raises
        :class:`NotAccepted` or :class:`InDoubt` (both mean: retry later).
        """
        domain = self.settings.mail_from.rpartition("@")[2] or "erx-connector.invalid"
        local = re.sub(r"[^A-Za-z0-9\-_]", "-", notice.key)
        msg = EmailMessage()
        msg["From"] = self.settings.mail_from
        msg["To"] = notice.to
        msg["Subject"] = notice.subject
        msg["Message-ID"] = message_id = f"<notice.{local}@{domain}>"
        msg["Date"] = format_datetime(now())
        msg.set_content(notice.text)
        self.transport.deliver(
            sender=self.settings.mail_from,
            recipient=notice.to,
            data=msg.as_bytes(policy=policy.SMTP),
            key=f"notify-{local}",
            before_data=lambda: True,
        )
        return message_id

    def deliver_once(
        self, db: Database, job: EmailJob, *, now: Callable[[], datetime] = utcnow
    ) -> Delivery:
        """Deliver ``job`` unless an earlier attempt was accepted or may have been.

        Opens its own short transactions on ``db`` (never one across the SMTP
        conversation). Returns a :class:`Delivery`; raises only on database
        errors (the intent then stays as committed, so the next attempt decides).
        """
        started = now()
        attempt = uuid.uuid4().hex
        with db.session() as session:
            insert_ignore(
                session,
                EmailIntent.__table__,
                {
                    "prescription_id": job.prescription_id,
                    "message_id": message_id_for(
                        job.reference, job.prescription_id, self.settings.mail_from
                    ),
                    "recipient": job.to,
                    "stage": "prepared",
                    "attempt_id": None,
                    "attempts": 0,
                    "created_at": started,
                    "updated_at": started,
                },
            )
            intent = session.scalars(
                select(EmailIntent)
                .where(EmailIntent.prescription_id == job.prescription_id)
                .with_for_update()
            ).one()
            intent_id, message_id = intent.id, intent.message_id
            if intent.stage == "accepted":
                log.info(
                    "email already accepted, not sent again: prescription_id=%s",
                    job.prescription_id,
                )
                return Delivery("accepted", message_id, already=True)
            if intent.stage in ("data", "in_doubt"):
                reason = intent.last_error if intent.stage == "in_doubt" else None
                reason = (
                    reason
                    or "an earlier attempt reached DATA and stored no reply (crash or lost connection)"
                )
                intent.stage, intent.last_error, intent.updated_at = "in_doubt", reason, started
                log.warning("email in doubt, parked: prescription_id=%s", job.prescription_id)
                return Delivery("in_doubt", message_id, reason=reason)
            intent.attempt_id, intent.attempts, intent.updated_at = (
                attempt,
                intent.attempts + 1,
                started,
            )
            intent.recipient = job.to

        try:
            pdf = render_prescription_pdf(
                job.snapshot, unicode_font_path=find_unicode_font(self.settings.pdf_font_path)
            )
        except Exception as exc:  # noqa: BLE001 - nothing was sent; retry, then dead letter
            return self._not_accepted(
                db,
                intent_id,
                attempt,
                # Only the type: the text may quote the prescription's contents.
                NotAccepted(
                    f"pdf_{type(exc).__name__}",
                    f"rendering the prescription PDF failed ({type(exc).__name__})",
                ),
                now,
            )
        if pdf.transliterated:
            log.warning(
                "pdf text outside Latin-1 transliterated (set PDF_FONT_PATH): prescription_id=%s",
                job.prescription_id,
            )
        message = build_message(
            job,
            mail_from=self.settings.mail_from,
            message_id=message_id,
            pdf=pdf.content,
            now=started,
        )

        def before_data() -> bool:
            with db.session() as session:
                moved = session.execute(
                    update(EmailIntent)
                    .where(
                        EmailIntent.id == intent_id,
                        EmailIntent.attempt_id == attempt,
                        EmailIntent.stage == "prepared",
                    )
                    .values(stage="data", data_started_at=now(), updated_at=now())
                ).rowcount
            return bool(moved)

        try:
            reply = self.transport.deliver(
                sender=self.settings.mail_from,
                recipient=job.to,
                data=message.as_bytes(policy=policy.SMTP),
                key=job.reference,
                before_data=before_data,
            )
        except NotAccepted as exc:
            return self._not_accepted(db, intent_id, attempt, exc, now)
        except InDoubt as exc:
            with db.session() as session:
                session.execute(
                    update(EmailIntent)
                    .where(EmailIntent.id == intent_id, EmailIntent.attempt_id == attempt)
                    .values(stage="in_doubt", last_error=exc.reason, updated_at=now())
                )
            log.warning("email in doubt after DATA: prescription_id=%s", job.prescription_id)
            return Delivery("in_doubt", message_id, reason=exc.reason)
        with db.session() as session:
            session.execute(
                update(EmailIntent)
                .where(EmailIntent.id == intent_id)
                .values(
                    stage="accepted",
                    smtp_reply=reply,
                    last_error=None,
                    accepted_at=now(),
                    updated_at=now(),
                )
            )
        log.info("email accepted: prescription_id=%s", job.prescription_id)
        return Delivery("accepted", message_id)

    def _not_accepted(
        self,
        db: Database,
        intent_id: int,
        attempt: str,
        exc: NotAccepted,
        now: Callable[[], datetime],
    ) -> Delivery:
        with db.session() as session:
            intent = session.get(EmailIntent, intent_id, with_for_update=True)
            if intent is None:
                raise NotFound(f"email intent {intent_id} vanished while its attempt ran")
            message_id = intent.message_id
            if intent.attempt_id == attempt:  # a newer attempt owns the row otherwise
                if intent.stage == "data":
                    intent.stage = "prepared"
                intent.last_error, intent.updated_at = exc.cause, now()
        log.info("email not accepted, will retry: intent_id=%s error=%s", intent_id, exc.code)
        return Delivery("retry", message_id, error=exc)


# -- operator decisions on a parked (in-doubt) email ---------------------------------------


def in_doubt_cause(outbox_id: int, reason: str) -> str:
    """The dead letter's cause for an email that may or may not have reached the pharmacy.

    ``reason``: why the server's answer is unknown (the transport's sentence, e.g. no
    reply to the DATA terminator). Names what to do next with this ``outbox_id``; it
    keeps the ``email_in_doubt:`` prefix that operators and queries filter on.
    """
    return (
        f"email_in_doubt: {reason}; the pharmacy may have it: ask them, then "
        f"`flask --app app outbox confirm-sent {outbox_id}` if it arrived, or "
        f"`flask --app app outbox requeue {outbox_id}` to send it again"
    )


def reopen_for_resend(session: Session, prescription_id: int, *, now: datetime) -> bool:
    """Let a requeued in-doubt email be sent again (same Message-ID); call in the requeue's transaction.

    Returns True when an in-doubt intent was reopened, False when there was
    none (nothing to do).
    """
    intent = session.scalars(
        select(EmailIntent).where(EmailIntent.prescription_id == prescription_id).with_for_update()
    ).first()
    if intent is None or intent.stage not in ("data", "in_doubt"):
        return False
    intent.stage, intent.attempt_id, intent.updated_at = "prepared", None, now
    intent.last_error = "requeued by an operator after being in doubt"
    return True


def confirm_sent(db: Database, outbox_id: int, *, now: datetime | None = None) -> int:
    """An operator confirms that a parked (in-doubt) email did reach the pharmacy.

    Marks the intent ``accepted``, the outbox row ``done`` and records
    ``emailed`` (source ``operator``) with a ``confirm-sent`` audit row (actor
    ``operator``). Returns the prescription id. Raises
    :class:`NotFound` (no such outbox row) or :class:`Conflict` (not a
    parked email).
    """
    at = now or utcnow()
    with db.session() as session:
        row = session.get(DispatchOutbox, outbox_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no outbox row {outbox_id}")
        intent = session.scalars(
            select(EmailIntent)
            .where(EmailIntent.prescription_id == row.prescription_id)
            .with_for_update()
        ).first()
        # "accepted" too: an attempt whose lease had run out may have heard the 250 after the row was parked.
        in_doubt = intent is not None and intent.stage in ("data", "in_doubt", "accepted")
        if row.flow != "email" or row.state != "dead" or not in_doubt or intent is None:
            raise Conflict(f"outbox row {outbox_id} is not an email in doubt", code="not_in_doubt")
        prescription = session.get(Prescription, row.prescription_id, with_for_update=True)
        if prescription is None:
            raise NotFound(f"outbox row {outbox_id} has no prescription {row.prescription_id}")
        intent.stage, intent.accepted_at, intent.updated_at = "accepted", at, at
        intent.last_error = "confirmed by an operator"
        # Imported here: the dispatch package imports this module (its email route).
        from app.services.dispatch.outcome import store_emailed

        store_emailed(
            session, row, prescription, source="operator", detail="confirmed by operator", now=at
        )
        record_by(session, OPERATOR, action="confirm-sent", prescription_id=prescription.id, now=at)
        return prescription.id
