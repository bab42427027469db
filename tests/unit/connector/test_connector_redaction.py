"""No PHI, secrets or tokens in reprs, error text or logs."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import pytest
import requests
import responses
from connector_fakes import CLIENT_SECRET, RX_URL, FakePlatform, success_issue_body

from connector import (
    ConnectorClient,
    ConnectorSettings,
    IssueRequest,
    PatientDetails,
    PrescriberCredentials,
    build_issue_payload,
)
from connector.errors import ConnectorError, PayloadError

PHI = (
    "Philippa",
    "Quackenbush",
    "1984",
    "07700",
    "900123",
    "philippa.q",
    "Lilac",
    "HG1 2AB",
    "Harrogate",
)


def secrets_of(prescriber: PrescriberCredentials) -> tuple[str, ...]:
    return (prescriber.password, prescriber.secure_pin, prescriber.email, CLIENT_SECRET)


def assert_clean(text: str, forbidden: tuple[str, ...]) -> None:
    leaked = [word for word in forbidden if word in text]
    assert leaked == [], f"leaked: {leaked}"


def test_settings_repr_hides_the_client_secret(settings: ConnectorSettings) -> None:
    assert "client-1" in repr(settings)
    assert_clean(repr(settings), (CLIENT_SECRET,))


def test_credentials_repr_shows_only_the_key(prescriber: PrescriberCredentials) -> None:
    assert repr(prescriber) == "PrescriberCredentials(key='5531')"


def test_request_types_redact_patient_data(
    issue_request: IssueRequest, patient: PatientDetails
) -> None:
    for obj in (patient, issue_request, issue_request.medicines[0]):
        assert_clean(repr(obj), PHI + ("Semaglutide", "Inject"))
        assert_clean(str(obj), PHI)
    assert "rx-000042" in repr(issue_request)


def test_payload_error_text_names_fields_not_values(issue_request: IssueRequest) -> None:
    patient = dataclasses.replace(
        issue_request.patient, gender="Philippa", phone="Quackenbush 1984"
    )
    with pytest.raises(PayloadError) as caught:
        build_issue_payload(dataclasses.replace(issue_request, patient=patient), secure_pin="1")

    text = str(caught.value) + repr(caught.value) + repr(caught.value.errors)
    assert "patient.gender" in text
    assert_clean(text, PHI)


def _collect_error_text(exc: ConnectorError) -> str:
    return f"{exc}\n{exc!r}\n{exc.message}"


@pytest.mark.parametrize(
    "respond",
    [
        lambda r: r.post(RX_URL, json=success_issue_body()),
        lambda r: r.post(
            RX_URL,
            json={
                "success": False,
                "message": "Invalid data",
                "errors": {"patient.last_name": ["Quackenbush is not allowed"]},
            },
        ),
        lambda r: r.post(RX_URL, status=500, body="Philippa Quackenbush 07700 900123"),
        lambda r: r.post(RX_URL, body="<p>Philippa Quackenbush</p>"),
        lambda r: r.post(RX_URL, body=requests.exceptions.ReadTimeout("timed out")),
        lambda r: r.post(
            RX_URL, json={"success": True, "data": {"prescription": {"id": ["Philippa"]}}}
        ),
    ],
    ids=["success", "rejected", "5xx", "non-json", "timeout", "bad-token"],
)
def test_issue_logs_and_errors_carry_ids_only(
    caplog: pytest.LogCaptureFixture,
    client: ConnectorClient,
    platform: FakePlatform,
    prescriber: PrescriberCredentials,
    issue_request: IssueRequest,
    respond: Callable[[responses.RequestsMock], object],
) -> None:
    respond(platform.rsps)
    caplog.set_level(logging.DEBUG)
    error_text = ""

    try:
        client.issue(prescriber, issue_request)
    except ConnectorError as exc:
        error_text = _collect_error_text(exc)

    logs = "\n".join(r.getMessage() for r in caplog.records)
    tokens = (
        client.tokens.access_token(),
        client.tokens.session_token(prescriber),
        "SRXC49F3D4F66A7",
    )
    assert "rx-000042" in logs
    assert_clean(logs, PHI + secrets_of(prescriber) + tokens)
    assert_clean(error_text, PHI + secrets_of(prescriber) + tokens)


def test_failed_login_error_and_logs_hide_credentials(
    caplog: pytest.LogCaptureFixture,
    client: ConnectorClient,
    platform: FakePlatform,
    prescriber: PrescriberCredentials,
    issue_request: IssueRequest,
) -> None:
    platform.bad_passwords.add(prescriber.password)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ConnectorError) as caught:
        client.issue(prescriber, issue_request)

    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "5531" in logs
    assert_clean(logs + _collect_error_text(caught.value), secrets_of(prescriber) + PHI)
