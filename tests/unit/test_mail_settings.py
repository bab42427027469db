"""Region A's SMTP settings (app/foundation/config.py) and the stable Message-ID (app/services/mail.py)."""

from __future__ import annotations

import pytest

from app.foundation.config import ConfigError, load_settings
from app.services.mail import message_id_for
from tests.unit.test_config import PRODUCTION


def test_smtp_settings_are_read_from_the_environment() -> None:
    settings = load_settings(
        {
            "MAIL_BACKEND": "smtp",
            "SMTP_HOST": "smtp.example.test",
            "SMTP_PORT": "587",
            "SMTP_STARTTLS": "true",
            "SMTP_USERNAME": "erx-mailer",
            "SMTP_PASSWORD": "smtp-pass-Wq71",
            "SMTP_TIMEOUT_S": "12.5",
            "SMTP_TLS_VERIFY": "no",
            "SMTP_CA_FILE": "/etc/ssl/private-ca.pem",
            "PDF_FONT_PATH": "/fonts/Unicode.ttf",
        }
    )

    assert (settings.smtp_host, settings.smtp_port, settings.smtp_starttls) == (
        "smtp.example.test",
        587,
        True,
    )
    assert (settings.smtp_username, settings.smtp_password) == ("erx-mailer", "smtp-pass-Wq71")
    assert (settings.smtp_timeout_s, settings.smtp_tls_verify) == (12.5, False)
    assert (settings.smtp_ca_file, settings.pdf_font_path) == (
        "/etc/ssl/private-ca.pem",
        "/fonts/Unicode.ttf",
    )
    assert "smtp-pass-Wq71" not in repr(settings)


def test_smtp_defaults_verify_tls_and_send_no_credentials() -> None:
    settings = load_settings({})
    assert (settings.smtp_starttls, settings.smtp_tls_verify, settings.smtp_username) == (
        False,
        True,
        "",
    )


@pytest.mark.parametrize("name", ["SMTP_STARTTLS", "SMTP_TLS_VERIFY"])
def test_a_malformed_boolean_names_the_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        load_settings({name: "perhaps"})
    assert "perhaps" not in str(info.value)


def test_a_non_positive_smtp_timeout_is_refused() -> None:
    with pytest.raises(ConfigError, match="SMTP_TIMEOUT_S"):
        load_settings({"SMTP_TIMEOUT_S": "0"})


def test_production_refuses_credentials_without_starttls() -> None:
    with pytest.raises(ConfigError, match="SMTP_STARTTLS"):
        load_settings(
            {**PRODUCTION, "SMTP_USERNAME": "erx-mailer", "SMTP_PASSWORD": "smtp-pass-Wq71"}
        )
    settings = load_settings(
        {
            **PRODUCTION,
            "SMTP_USERNAME": "erx-mailer",
            "SMTP_PASSWORD": "smtp-pass-Wq71",
            "SMTP_STARTTLS": "1",
        }
    )
    assert settings.smtp_starttls is True


def test_the_message_id_is_stable_per_prescription_and_a_valid_msg_id() -> None:
    first = message_id_for("rx-000017", 17, "prescriptions@erx-connector.example.test")
    assert first == message_id_for("rx-000017", 17, "prescriptions@erx-connector.example.test")
    assert first == "<rx.rx-000017.17@erx-connector.example.test>"
    assert message_id_for("rx 18/<x>", 18, "a@b.test") == "<rx.rx-18--x-.18@b.test>"
    assert message_id_for("rx.18", 18, "a@b.test") != message_id_for("rx-18", 19, "a@b.test")
