"""The notifier's settings, its notices and its broker message, without a broker."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from notifier.broker import unreachable
from notifier.cli import main
from notifier.mailer import Notice, NoticeMailer, message_id_for
from notifier.settings import ConfigError, NotifierSettings, load_settings


def test_settings_come_from_the_environment_with_the_service_names() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "sqlite:///service.db",
            "AMQP_URL": "amqp://u:p@rabbit:5673/%2F",
            "EVENTS_EXCHANGE": "x",
            "EVENTS_DLX": "x.dlq",
            "NOTIFY_QUEUE": "q",
            "NOTIFY_MAX_ATTEMPTS": "7",
            "MAIL_BACKEND": "smtp",
            "SMTP_PORT": "2525",
            "SMTP_STARTTLS": "true",
        }
    )
    assert (
        settings.database_url,
        settings.exchange,
        settings.dlx,
        settings.queue,
        settings.dlq,
    ) == ("sqlite:///service.db", "x", "x.dlq", "q", "q.dlq")
    assert (
        settings.max_attempts,
        settings.mail_backend,
        settings.smtp_port,
        settings.smtp_starttls,
    ) == (7, "smtp", 2525, True)
    # Its own database when NOTIFIER_DATABASE_URL is set.
    assert load_settings({"DATABASE_URL": "a", "NOTIFIER_DATABASE_URL": "b"}).database_url == "b"
    assert "p@rabbit" not in repr(settings)  # the password stays out of logs


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOTIFY_MAX_ATTEMPTS": "many"}, "NOTIFY_MAX_ATTEMPTS must be a number"),
        ({"NOTIFY_MAX_ATTEMPTS": "0"}, "NOTIFY_MAX_ATTEMPTS must be at least 1"),
        ({"SMTP_STARTTLS": "perhaps"}, "SMTP_STARTTLS must be true or false"),
        ({"MAIL_BACKEND": "pigeon"}, "MAIL_BACKEND must be file or smtp"),
    ],
)
def test_a_malformed_setting_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_the_broker_message_names_host_and_port_never_credentials() -> None:
    text = unreachable("amqp://admin:s3cret@rabbit.internal:5671/prod", ConnectionRefusedError())
    assert text == "RabbitMQ unreachable at rabbit.internal:5671 (ConnectionRefusedError)"


def test_a_notice_file_carries_a_stable_message_id_per_event(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = NotifierSettings(mail_dir=str(tmp_path), mail_from="rx@clinic.example.test")
    mailer = NoticeMailer(settings, now=lambda: datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    notice = Notice(
        key="e1/x", prescription_id=7, to="p@example.test", subject="Ready", text="Hello\n"
    )
    message_id = mailer.send(notice)
    assert (
        message_id
        == message_id_for("e1/x", "rx@clinic.example.test")
        == "<notice.e1-x@clinic.example.test>"
    )
    parsed = email.message_from_bytes(
        (tmp_path / "notify-e1-x.eml").read_bytes(), policy=email.policy.default
    )
    assert (parsed["To"], parsed["Subject"], parsed["Message-ID"].strip()) == (
        "p@example.test",
        "Ready",
        message_id,
    )
    assert parsed.get_content().rstrip() == "Hello"


def test_an_unreachable_database_is_one_line_naming_host_and_port_never_credentials() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    url = "postgresql+psycopg2://notifier:s3cret@127.0.0.1:1/erx?connect_timeout=2"
    result = CliRunner().invoke(main, ["received"], obj=NotifierSettings(database_url=url))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == ["Error: database unavailable at 127.0.0.1:1 (OperationalError)"]
    assert "s3cret" not in result.output and "notifier:" not in result.output
