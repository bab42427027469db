"""The notifier's settings, read once from the environment into a frozen dataclass.

Names shared with the service (``AMQP_URL``, ``EVENTS_EXCHANGE``, ``EVENTS_DLX``,
``NOTIFY_QUEUE``, ``NOTIFY_MAX_ATTEMPTS``, the ``MAIL_*``/``SMTP_*`` family)
mean the same thing in both, so one environment configures the publisher and
the consumer consistently: the publisher declares the same queue
(:mod:`contracts.event_topology`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting is malformed; the message names the variable, never its value."""


@dataclass(frozen=True, kw_only=True)
class NotifierSettings:
    """Everything the notifier reads. Durations in seconds.

    ``database_url``: where its own table ``notifier_inbox`` lives and, in this
    reference setup, where the patient directory is read (``NOTIFIER_DATABASE_URL``,
    else ``DATABASE_URL``, else the service's embedded SQLite file).
    ``queue``/``max_attempts``: its quorum queue and the deliveries before a
    message is dead-lettered. ``mail_backend``: ``file`` (development: one
    ``.eml`` per notice under ``mail_dir``) or ``smtp``.
    """

    database_url: str = f"sqlite:///{REPO_ROOT / 'instance' / 'erx.sqlite3'}"
    amqp_url: str = field(default="amqp://guest:guest@127.0.0.1:5672/%2F", repr=False)
    exchange: str = "erx.events"
    dlx: str = "erx.events.dlq"
    queue: str = "erx.notify.patient"
    max_attempts: int = 5
    prefetch: int = 20
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    mail_backend: str = "file"
    mail_dir: str = str(REPO_ROOT / "instance" / "mail")
    mail_from: str = "prescriptions@erx-connector.example.test"
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.queue:
            raise ConfigError("NOTIFY_QUEUE must not be empty")
        if self.max_attempts < 1:
            raise ConfigError("NOTIFY_MAX_ATTEMPTS must be at least 1")
        if self.mail_backend not in ("file", "smtp"):
            raise ConfigError("MAIL_BACKEND must be file or smtp")

    @property
    def dlq(self) -> str:
        """The dead-letter queue's name: ``<queue>.dlq``."""
        return f"{self.queue}.dlq"


_STRINGS = {
    "AMQP_URL": "amqp_url",
    "EVENTS_EXCHANGE": "exchange",
    "EVENTS_DLX": "dlx",
    "NOTIFY_QUEUE": "queue",
    "MAIL_BACKEND": "mail_backend",
    "MAIL_DIR": "mail_dir",
    "MAIL_FROM": "mail_from",
    "SMTP_HOST": "smtp_host",
    "SMTP_USERNAME": "smtp_username",
    "SMTP_PASSWORD": "smtp_password",
}
_NUMBERS: dict[str, tuple[str, type]] = {
    "NOTIFY_MAX_ATTEMPTS": ("max_attempts", int),
    "NOTIFY_PREFETCH": ("prefetch", int),
    "EVENTS_BACKOFF_BASE_S": ("backoff_base_s", float),
    "EVENTS_BACKOFF_CAP_S": ("backoff_cap_s", float),
    "SMTP_PORT": ("smtp_port", int),
    "SMTP_TIMEOUT_S": ("smtp_timeout_s", float),
}


def load_settings(environ: Mapping[str, str] | None = None) -> NotifierSettings:
    """Read :class:`NotifierSettings` from ``environ`` (default: the process environment).

    Unset or empty variables keep their defaults. Raises :class:`ConfigError`
    naming the variable for a malformed number or flag.
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    url = env.get("NOTIFIER_DATABASE_URL", "").strip() or env.get("DATABASE_URL", "").strip()
    if url:
        values["database_url"] = url
    for name, attr in _STRINGS.items():
        raw = env.get(name, "").strip()
        if raw:
            values[attr] = raw
    for name, (attr, kind) in _NUMBERS.items():
        raw = env.get(name, "").strip()
        if raw:
            try:
                values[attr] = kind(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number") from None
    raw = env.get("SMTP_STARTTLS", "").strip().lower()
    if raw:
        if raw not in _TRUE + _FALSE:
            raise ConfigError("SMTP_STARTTLS must be true or false")
        values["smtp_starttls"] = raw in _TRUE
    return NotifierSettings(**values)  # type: ignore[arg-type]
