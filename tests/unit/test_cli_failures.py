"""Every failing operator command prints ONE line naming the cause and exits non-zero, never a traceback.

The failure cases: ``clinics verify`` with the platform down or with
refused credentials, ``set-credentials`` with a malformed
``ERX_ENCRYPTION_KEYS``, ``reconcile`` against tokens the platform no longer
knows; and the happy path of ``clinics verify`` for contrast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import responses
from click.testing import Result
from sqlalchemy import select

from app import create_app
from app.foundation.db import Database, utcnow
from app.foundation.models import Clinic, Prescription
from scripts.stack import free_port
from tests.conftest import make_settings
from tests.support import BASE, CLIENT_ID, CLIENT_SECRET, PRESCRIBER_SECRETS, service_platform

JONES = "dr.jones@example.test"


def one_line_failure(result: Result) -> str:
    """The failure's single output line (asserts exit code, no traceback, one line)."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def cli_app(db_url: str, seeded: Database, tmp_path: Any, **overrides: Any):  # type: ignore[no-untyped-def]
    values = {
        "erx_base_url": BASE,
        "erx_client_id": CLIENT_ID,
        "erx_client_secret": CLIENT_SECRET,
        "mail_dir": str(tmp_path / "mail"),
        **overrides,
    }
    application = create_app(make_settings(db_url, **values), db=seeded)
    application.config["TESTING"] = True
    return application


def set_credentials(application, email: str = JONES, password: str | None = None) -> Result:  # type: ignore[no-untyped-def]
    stored_password, pin = PRESCRIBER_SECRETS[email]
    return application.test_cli_runner().invoke(
        args=["prescribers", "set-credentials", email],
        env={"ERX_PRESCRIBER_PASSWORD": password or stored_password, "ERX_PRESCRIBER_PIN": pin},
    )


def test_clinics_verify_agrees_with_the_platform(db_url, seeded, tmp_path, rsps) -> None:  # type: ignore[no-untyped-def]
    service_platform(rsps)
    application = cli_app(db_url, seeded, tmp_path)
    assert set_credentials(application).exit_code == 0

    result = application.test_cli_runner().invoke(args=["clinics", "verify", JONES])

    assert result.exit_code == 0, result.output
    assert "clinic display_id=201334 platform_id=994: ok" in result.output
    with seeded.session() as session:
        assert (
            session.scalar(select(Clinic.verified_at).where(Clinic.display_id == "201334"))
            is not None
        )


def test_clinics_verify_maps_a_clinic_known_only_by_its_display_id(
    db_url, seeded, tmp_path, rsps
) -> None:  # type: ignore[no-untyped-def]
    platform = service_platform(rsps)
    platform.clinics.append({"id": 995, "display_id": "201400", "name": "Second Clinic"})
    with seeded.session() as session:
        session.add(Clinic(display_id="201400", platform_id=None, name="Second Clinic"))
        session.add(Clinic(display_id="201401", platform_id=None, name="Not Listed Clinic"))
    application = cli_app(db_url, seeded, tmp_path)
    assert set_credentials(application).exit_code == 0

    first = application.test_cli_runner().invoke(args=["clinics", "verify", JONES])

    assert one_line_failure(first) == "Error: 1 clinic mapping(s) disagree with the platform"
    assert "clinic display_id=201334 platform_id=994: ok\n" in first.output
    assert "clinic display_id=201400 platform_id=995: ok (mapped now)" in first.output
    assert (
        "clinic display_id=201401 platform_id=None: NOT MAPPED "
        "(the platform does not list this display id)"
    ) in first.output
    again = application.test_cli_runner().invoke(args=["clinics", "verify", JONES]).output
    assert "clinic display_id=201400 platform_id=995: ok\n" in again  # mapped once, for good
    with seeded.session() as session:
        assert (
            session.scalar(select(Clinic.platform_id).where(Clinic.display_id == "201400")) == 995
        )


def test_clinics_verify_with_the_platform_down_names_the_url(db_url, seeded, tmp_path) -> None:  # type: ignore[no-untyped-def]
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    application = cli_app(db_url, seeded, tmp_path, erx_base_url=down)
    assert set_credentials(application).exit_code == 0

    line = one_line_failure(application.test_cli_runner().invoke(args=["clinics", "verify", JONES]))

    assert f"ERX_BASE_URL={down}" in line
    assert "unavailable" in line


def test_clinics_verify_with_refused_credentials_names_the_prescriber(
    db_url, seeded, tmp_path, rsps
) -> None:  # type: ignore[no-untyped-def]
    service_platform(rsps)
    application = cli_app(db_url, seeded, tmp_path)
    assert set_credentials(application, password="not-the-password").exit_code == 0
    with seeded.session() as session:
        from app.foundation.models import Prescriber

        prescriber_id = session.scalar(select(Prescriber.id).where(Prescriber.email == JONES))

    line = one_line_failure(application.test_cli_runner().invoke(args=["clinics", "verify", JONES]))

    # Named by login, as operators know the prescriber, never by the internal id.
    assert f"prescriber {JONES}" in line
    assert f"prescriber {prescriber_id} " not in line
    assert "refused" in line
    assert "not-the-password" not in line


def test_clinics_verify_with_refused_client_credentials_names_the_settings(
    db_url, seeded, tmp_path, rsps
) -> None:  # type: ignore[no-untyped-def]
    service_platform(rsps)
    application = cli_app(db_url, seeded, tmp_path, erx_client_secret="cs-wrong-secret-000000")
    assert set_credentials(application).exit_code == 0

    line = one_line_failure(application.test_cli_runner().invoke(args=["clinics", "verify", JONES]))

    assert "ERX_CLIENT_SECRET" in line
    assert "cs-wrong-secret" not in line


@pytest.mark.parametrize(
    "keys", [("not-a-fernet-key",), ("ä" * 44,)], ids=["not_base64", "not_ascii"]
)
def test_set_credentials_with_a_malformed_encryption_key_names_the_variable(
    db_url, seeded, tmp_path, keys
) -> None:  # type: ignore[no-untyped-def]
    application = cli_app(db_url, seeded, tmp_path, encryption_keys=keys)

    line = one_line_failure(set_credentials(application))

    assert "ERX_ENCRYPTION_KEYS" in line
    assert "key 1 of 1" in line
    assert keys[0] not in line


def test_set_credentials_for_an_unknown_prescriber_fails_in_one_line(
    db_url, seeded, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    application = cli_app(db_url, seeded, tmp_path)
    result = application.test_cli_runner().invoke(
        args=["prescribers", "set-credentials", "nobody@example.test"],
        env={"ERX_PRESCRIBER_PASSWORD": "x", "ERX_PRESCRIBER_PIN": "1"},
    )

    line = one_line_failure(result)

    assert "no prescriber" in line and "nobody@example.test" not in line


def test_reconcile_against_a_token_the_platform_no_longer_knows(
    db_url, seeded, tmp_path, rsps
) -> None:  # type: ignore[no-untyped-def]
    service_platform(rsps)  # knows no prescription at all
    application = cli_app(db_url, seeded, tmp_path)
    for email in PRESCRIBER_SECRETS:
        assert set_credentials(application, email).exit_code == 0
    with seeded.session() as session:
        rx = session.scalars(
            select(Prescription).where(Prescription.reference == "rx-000001")
        ).one()
        rx.platform_token, rx.status, rx.last_event_at = "SRXFORGOTTEN001", "issued", utcnow()
        rx_id = rx.id

    result = application.test_cli_runner().invoke(args=["reconcile", "--quiet-s", "0"])

    line = one_line_failure(result)
    assert "checked=1 recorded=0 errors=1" in result.output
    assert f"prescription {rx_id}" in line
    assert "not_found" in line and f"ERX_BASE_URL={BASE}" in line
    assert "SRXFORGOTTEN001" not in result.output


def test_reconcile_with_a_refused_login_names_the_prescriber_by_login(
    db_url, seeded, tmp_path, rsps
) -> None:  # type: ignore[no-untyped-def]
    service_platform(rsps)
    application = cli_app(db_url, seeded, tmp_path)
    with seeded.session() as session:
        rx = session.scalars(
            select(Prescription).where(Prescription.reference == "rx-000001")
        ).one()
        rx.platform_token, rx.status, rx.last_event_at = "SRXREFUSED0001", "issued", utcnow()
        login, internal_id = rx.prescriber.email, rx.prescriber_id
    assert set_credentials(application, login, password="not-the-password").exit_code == 0

    result = application.test_cli_runner().invoke(args=["reconcile", "--quiet-s", "0"])

    line = one_line_failure(result)
    assert f"refused the credentials of prescriber {login} (login step)" in line
    assert f"prescriber {internal_id} " not in line
    assert "not-the-password" not in result.output


def test_requeue_of_an_unknown_row_fails_in_one_line(db_url, seeded, tmp_path) -> None:  # type: ignore[no-untyped-def]
    application = cli_app(db_url, seeded, tmp_path)

    line = one_line_failure(
        application.test_cli_runner().invoke(args=["outbox", "requeue", "999999"])
    )

    assert "outbox row 999999" in line


def test_worker_with_a_malformed_encryption_key_fails_in_one_line(db_url, seeded, tmp_path) -> None:  # type: ignore[no-untyped-def]
    application = cli_app(db_url, seeded, tmp_path, encryption_keys=("short",))

    line = one_line_failure(application.test_cli_runner().invoke(args=["worker", "--until-idle"]))

    assert "ERX_ENCRYPTION_KEYS" in line
