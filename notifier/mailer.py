"""Plain-text notices to patients: by SMTP, or into a folder for development.

The notifier's own small sender (stdlib ``smtplib`` and ``email``): a notice
needs none of the service's exactly-once machinery for Region A, because the
consumer dedupes on the event id in its own transaction and the Message-ID is
stable per event (``<notice.<event_id>@<MAIL_FROM's domain>>``, RFC 5322
§3.6.4), so a mail system can drop the one duplicate a crash between send and
commit can cause.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from notifier.settings import NotifierSettings


@dataclass(frozen=True)
class Notice:
    """A plain-text notice to one patient.

    ``key``: the event id (stable and unique: the Message-ID and the file
    name derive from it); ``to``/``subject``/``text`` are the message and
    are never logged.
    """

    key: str
    prescription_id: int
    to: str
    subject: str
    text: str


def message_id_for(key: str, mail_from: str) -> str:
    """``<notice.<key>@<domain of mail_from>>``; outside ``[A-Za-z0-9-_]``, ``-``."""
    domain = mail_from.rpartition("@")[2] or "erx-connector.invalid"
    return f"<notice.{re.sub(r'[^A-Za-z0-9_-]', '-', key)}@{domain}>"


class NoticeMailer:
    """Sends a :class:`Notice` through ``MAIL_BACKEND``: ``smtp`` or ``file`` (``MAIL_DIR``)."""

    def __init__(
        self, settings: NotifierSettings, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.settings = settings
        self.now = now

    def build(self, notice: Notice) -> EmailMessage:
        """The message for ``notice``: From, To, Subject, Message-ID, Date and the text."""
        msg = EmailMessage()
        msg["From"] = self.settings.mail_from
        msg["To"] = notice.to
        msg["Subject"] = notice.subject
        msg["Message-ID"] = message_id_for(notice.key, self.settings.mail_from)
        msg["Date"] = format_datetime(self.now())
        msg.set_content(notice.text)
        return msg

    def send(self, notice: Notice) -> str:
        """Send ``notice`` once per call; returns its Message-ID.

        Raises ``OSError`` or ``smtplib.SMTPException`` when it was not sent
        (the consumer then returns the message to the queue for a retry).
        """
        msg = self.build(notice)
        if self.settings.mail_backend == "smtp":
            self._smtp(msg)
        else:
            self._file(msg, notice.key)
        return str(msg["Message-ID"])

    def _smtp(self, msg: EmailMessage) -> None:
        s = self.settings
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password)
            smtp.send_message(msg)

    def _file(self, msg: EmailMessage, key: str) -> None:
        folder = Path(self.settings.mail_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"notify-{re.sub(r'[^A-Za-z0-9_-]', '-', key)}.eml"
        temp = folder / f".{name}.tmp"
        temp.write_bytes(msg.as_bytes(policy=policy.SMTP))
        os.replace(temp, folder / name)  # whole or not at all
