"""app/interfaces/fhir.py without HTTP: the status table, ids, history replay, outcomes, edge rows; the JWT settings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from fhir.resources.medicationrequest import MedicationRequest
from fhir.resources.operationoutcome import OperationOutcome

from app.foundation.config import ConfigError, Settings, load_settings
from app.foundation.errors import Forbidden, Invalid, NotFound
from app.foundation.models import (
    Patient,
    Pharmacy,
    Prescriber,
    Prescription,
    PrescriptionMedicine,
    StatusHistory,
)
from app.interfaces.fhir import (
    PLATFORM_TOKEN_SYSTEM,
    STATUS_MAP,
    medication_request,
    operation_outcome,
    parse_resource_id,
    patient_ref_from_search,
    replay,
    transition_extension,
)
from app.interfaces.identity import mint_token

# http://hl7.org/fhir/R4/valueset-medicationrequest-status.html
R4_MEDICATIONREQUEST_STATUS = {
    "active",
    "on-hold",
    "cancelled",
    "completed",
    "entered-in-error",
    "stopped",
    "draft",
    "unknown",
}
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def rows(*steps: tuple[str, str]) -> list[StatusHistory]:
    return [
        StatusHistory(
            id=n,
            prescription_id=1,
            from_status=None,
            to_status=to,
            source=source,
            occurred_at=T0 + timedelta(minutes=n),
            received_at=T0 + timedelta(minutes=n, seconds=2),
        )
        for n, (to, source) in enumerate(steps, start=1)
    ]


def prescription(
    *, pharmacy: bool = True, vpid: str | None = "39720311000001101", token: str | None = None
):  # type: ignore[no-untyped-def]
    patient = Patient(
        id=1,
        external_ref="pt-0001",
        region_code="B",
        first_name="Amelia",
        last_name="Hughes",
        gender="female",
        date_of_birth=date(1984, 3, 7),
        address_line1="12 Alma Road",
        city="Bristol",
        post_code="BS8 2BY",
    )
    rx = Prescription(
        id=7,
        reference="rx-000007",
        status="signed",
        created_at=T0,
        platform_token=token,
        patient=patient,
        prescriber=Prescriber(id=2, name="Dr Jones"),
        pharmacy=Pharmacy(id=17, name="Marylebone Pharmacy") if pharmacy else None,
    )
    line = PrescriptionMedicine(
        prescription_id=7,
        position=2,
        vpid=vpid,
        description="Semaglutide 0.25mg",
        quantity=4,
        directions="Inject 0.25mg once weekly",
    )
    return rx, line


def test_every_mapped_status_is_in_the_r4_value_set() -> None:
    assert set(STATUS_MAP.values()) <= R4_MEDICATIONREQUEST_STATUS
    assert {
        "draft",
        "queued",
        "issued",
        "signed",
        "printed",
        "dispensed",
        "expired",
        "voided",
        "rejected",
        "emailed",
        "dead",
    } == set(STATUS_MAP)


@pytest.mark.parametrize(("value", "expected"), [("12-1", (12, 1)), ("1-3", (1, 3))])
def test_resource_ids_are_prescription_and_line(value: str, expected: tuple[int, int]) -> None:
    assert parse_resource_id(value) == expected


@pytest.mark.parametrize(
    "value", ["12", "", "a-1", "1-", "-1", "1-2-3", "١-١", "1 -1", "9" * 30 + "-1"]
)
def test_malformed_ids_name_nothing(value: str) -> None:
    with pytest.raises(NotFound):
        parse_resource_id(value)


@pytest.mark.parametrize(
    ("value", "ref"),
    [
        ("pt-0001", "pt-0001"),
        ("Patient/pt-0001", "pt-0001"),
        ("https://x.test/fhir/R4/Patient/pt-0001", "pt-0001"),
    ],
)
def test_patient_search_values(value: str, ref: str) -> None:
    assert patient_ref_from_search(value) == ref


@pytest.mark.parametrize("value", [None, "", "  ", "Patient/", "a/b"])
def test_patient_search_needs_a_reference(value: str | None) -> None:
    with pytest.raises(Invalid) as caught:
        patient_ref_from_search(value)
    assert "patient" in caught.value.errors


def test_replay_follows_the_history_rules() -> None:
    history = rows(
        ("queued", "service"),
        ("issued", "api"),
        ("dispensed", "webhook"),
        ("signed", "webhook"),
        ("printed", "reconcile"),
    )
    assert [status for _, status in replay(history)] == [
        "queued",
        "issued",
        "dispensed",
        "dispensed",
        "dispensed",
    ]
    again = rows(
        ("queued", "service"), ("rejected", "service"), ("queued", "service"), ("issued", "api")
    )
    assert [status for _, status in replay(again)] == ["queued", "rejected", "queued", "issued"]


def test_transition_extension_carries_source_and_both_times() -> None:
    (row,) = rows(("signed", "webhook"))
    row.event_id = "evt-9"
    parts = {p["url"]: p for p in transition_extension(row)["extension"]}
    assert set(parts) == {"to", "source", "occurredAt", "receivedAt", "eventId"}
    assert parts["occurredAt"]["valueDateTime"] == row.occurred_at
    assert parts["receivedAt"]["valueDateTime"] == row.received_at


def test_line_without_vpid_or_pharmacy_still_validates() -> None:
    rx, line = prescription(pharmacy=False, vpid=None)
    resource = medication_request(rx, line)
    assert resource.medicationCodeableConcept.coding is None
    assert resource.medicationCodeableConcept.text == "Semaglutide 0.25mg"
    assert resource.dispenseRequest.performer is None
    MedicationRequest.parse_raw(resource.json())


def test_platform_token_only_when_asked() -> None:
    rx, line = prescription(token="SRXC49F3D4F66A7")
    hidden = medication_request(rx, line)
    shown = medication_request(rx, line, show_platform_token=True)
    assert "SRXC49F3D4F66A7" not in hidden.json()
    assert [i.value for i in shown.identifier if i.system == PLATFORM_TOKEN_SYSTEM] == [
        "SRXC49F3D4F66A7"
    ]


def test_no_patient_details_in_the_resource() -> None:
    rx, line = prescription()
    body = medication_request(rx, line).json()
    for value in ("Amelia", "Hughes", "1984", "Alma", "BS8"):
        assert value not in body


@pytest.mark.parametrize(
    ("status", "issue"),
    [
        (400, "invalid"),
        (401, "login"),
        (403, "forbidden"),
        (404, "not-found"),
        (405, "not-supported"),
        (500, "exception"),
        (503, "transient"),
    ],
)
def test_operation_outcomes_validate(status: int, issue: str) -> None:
    outcome = operation_outcome(
        status, "some_code", "Something is wrong.", {"patient": ["Required."]}
    )
    parsed = OperationOutcome.parse_raw(outcome.resource.json())
    assert outcome.status == status
    assert parsed.issue[0].code == issue
    assert parsed.issue[0].details.coding[0].code == "some_code"
    assert parsed.issue[1].expression == ["patient"]


# -- the JWT settings the identity interface relies on --------------------------


def test_jwt_settings_have_development_defaults_and_read_the_environment() -> None:
    settings = load_settings({})
    assert (
        settings.jwt_issuer,
        settings.jwt_audience,
        settings.jwt_jwks_url,
        settings.jwt_leeway_s,
    ) == ("erx-connector-dev", "erx-connector", None, 30.0)
    assert settings.jwt_secret
    custom = load_settings(
        {
            "JWT_SECRET": "s" * 32,
            "JWT_ISSUER": "idp",
            "JWT_AUDIENCE": "erx",
            "JWT_JWKS_URL": "https://idp.test/jwks",
            "JWT_LEEWAY_S": "5",
        }
    )
    assert (
        custom.jwt_secret,
        custom.jwt_issuer,
        custom.jwt_audience,
        custom.jwt_jwks_url,
        custom.jwt_leeway_s,
    ) == ("s" * 32, "idp", "erx", "https://idp.test/jwks", 5.0)
    assert "s" * 32 not in repr(custom)


def test_production_has_no_development_jwt_secret() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        Settings(env="production")
    with pytest.raises(ConfigError, match="JWT_LEEWAY_S"):
        load_settings({"JWT_LEEWAY_S": "-1"})


def test_tokens_cannot_be_minted_in_production() -> None:
    settings = Settings(env="production", jwt_secret="p" * 32)
    with pytest.raises(Forbidden):
        mint_token(settings, role="support", subject="support-1")
