"""Region A: the existing email flow. The prescription goes to the pharmacy by email.

Backends: ``file`` (writes an .eml per prescription under ``MAIL_DIR``; the
demo's and tests' default) and ``smtp``. The message carries the patient's
details because the pharmacy needs them; it is never logged.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from app.config import Settings


@dataclass(frozen=True)
class EmailJob:
    """What the email flow needs: ids for logging, the recipient and the text."""

    prescription_id: int
    reference: str
    to: str
    subject: str
    text: str


class Mailer:
    """Send :class:`EmailJob` messages through the configured backend."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, job: EmailJob) -> str:
        """Send ``job``; returns the Message-ID. Raises OSError/smtplib errors (retryable)."""
        msg = EmailMessage()
        msg["From"] = self.settings.mail_from
        msg["To"] = job.to
        msg["Subject"] = job.subject
        msg_id = f"<{job.reference}@erx-connector>"
        msg["Message-ID"] = msg_id
        msg.set_content(job.text)
        if self.settings.mail_backend == "file":
            folder = Path(self.settings.mail_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{job.reference}.eml").write_bytes(bytes(msg))
        else:
            with smtplib.SMTP(self.settings.smtp_host, self.settings.smtp_port, timeout=10) as smtp:
                smtp.send_message(msg)
        return msg_id
