"""Issue payload mapping (contract §4 field rules)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from connector import IssueRequest, MedicineLine, build_issue_payload, normalise_phone
from connector.errors import ConnectorError, PayloadError


def test_payload_matches_contract_shape(issue_request: IssueRequest) -> None:
    payload = build_issue_payload(issue_request, secure_pin="918273")

    assert payload == {
        "action": "issueToContact",
        "clinic_id": 994,
        "contact_id": 17,
        "secure_pin": "918273",
        "client_ref_id": "rx-000042",
        "notify": True,
        "patient": {
            "first_name": "Philippa",
            "last_name": "Quackenbush",
            "gender": "female",
            "birth_day": "07",
            "birth_month": "03",
            "birth_year": "1984",
            "email": "philippa.q@example.test",
            "phone": "447700900123",
            "address_ln1": "12 Lilac Crescent",
            "address_ln2": "",
            "city": "Harrogate",
            "post_code": "HG1 2AB",
            "country": "United Kingdom",
        },
        "medicines": [
            {
                "vpid": "39109211000001103",
                "description": "Semaglutide 0.25mg/0.19ml pen",
                "qty": "4",
                "directions": "Inject 0.25mg once weekly",
            }
        ],
    }


@pytest.mark.parametrize(
    ("dob", "expected"),
    [
        (dt.date(1984, 3, 7), ("07", "03", "1984")),
        (dt.date(2001, 12, 31), ("31", "12", "2001")),
        (dt.date(1930, 1, 1), ("01", "01", "1930")),
    ],
)
def test_date_of_birth_is_split_into_zero_padded_strings(
    issue_request: IssueRequest, dob: dt.date, expected: tuple[str, str, str]
) -> None:
    patient = dataclasses.replace(issue_request.patient, date_of_birth=dob)
    request = dataclasses.replace(issue_request, patient=patient)

    p = build_issue_payload(request, secure_pin="1")["patient"]

    assert (p["birth_day"], p["birth_month"], p["birth_year"]) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("07700 900123", "447700900123"),
        ("+44 (0)7700 900123", "447700900123"),
        ("0044 7700 900123", "447700900123"),
        ("447700900123", "447700900123"),
        ("+44 07700 900123", "447700900123"),
        ("(01632) 960-001", "441632960001"),
        ("+353 1 234 5678", "35312345678"),
        ("", ""),
        ("   ", ""),
        (None, ""),
    ],
)
def test_phone_normalisation_table(raw: str | None, expected: str) -> None:
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize(
    "raw", ["07700 9OO123", "call me", "07700 900123 ext 4", "44+7700900123", "0770"]
)
def test_phone_garbage_is_refused_without_echoing_it(raw: str) -> None:
    with pytest.raises(PayloadError) as caught:
        normalise_phone(raw)

    assert "phone" in caught.value.errors
    assert raw not in str(caught.value)
    assert raw not in repr(caught.value.errors)


@pytest.mark.parametrize(("qty", "expected"), [(4, "4"), ("4", "4"), (" 12 ", "12"), ("04", "4")])
def test_quantity_is_sent_as_a_string_of_digits(
    issue_request: IssueRequest, qty: int | str, expected: str
) -> None:
    line = dataclasses.replace(issue_request.medicines[0], quantity=qty)
    request = dataclasses.replace(issue_request, medicines=(line,))

    assert build_issue_payload(request, secure_pin="1")["medicines"][0]["qty"] == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Female", "female"), (" MALE ", "male"), ("other", "other"), ("Unknown", "unknown")],
)
def test_gender_is_lower_cased(issue_request: IssueRequest, raw: str, expected: str) -> None:
    patient = dataclasses.replace(issue_request.patient, gender=raw)
    request = dataclasses.replace(issue_request, patient=patient)

    assert build_issue_payload(request, secure_pin="1")["patient"]["gender"] == expected


def test_unknown_gender_is_refused(issue_request: IssueRequest) -> None:
    patient = dataclasses.replace(issue_request.patient, gender="f")
    request = dataclasses.replace(issue_request, patient=patient)

    with pytest.raises(PayloadError) as caught:
        build_issue_payload(request, secure_pin="1")

    assert list(caught.value.errors) == ["patient.gender"]


def test_display_id_sent_as_clinic_id_is_refused(issue_request: IssueRequest) -> None:
    # Our data keeps dashboard display ids as strings; the API wants the internal int (§3).
    request = dataclasses.replace(issue_request, clinic_id="201334")

    with pytest.raises(PayloadError) as caught:
        build_issue_payload(request, secure_pin="1")

    assert list(caught.value.errors) == ["clinic_id"]
    assert "display id" in caught.value.errors["clinic_id"][0]
    assert isinstance(caught.value, ConnectorError)


def test_every_medicine_needs_description_qty_and_directions(issue_request: IssueRequest) -> None:
    good = issue_request.medicines[0]
    lines = (
        good,
        MedicineLine(vpid=None, description="", quantity=None, directions="  "),
        MedicineLine(vpid="x", description="Something", quantity="2.5", directions="daily"),
    )
    request = dataclasses.replace(issue_request, medicines=lines)

    with pytest.raises(PayloadError) as caught:
        build_issue_payload(request, secure_pin="1")

    assert set(caught.value.errors) == {
        "medicines.1.description",
        "medicines.1.qty",
        "medicines.1.directions",
        "medicines.2.qty",
    }


def test_all_problems_are_reported_at_once(issue_request: IssueRequest) -> None:
    patient = dataclasses.replace(issue_request.patient, first_name="", phone="not a phone")
    request = dataclasses.replace(issue_request, patient=patient, medicines=(), contact_id=0)

    with pytest.raises(PayloadError) as caught:
        build_issue_payload(request, secure_pin="")

    assert set(caught.value.errors) == {
        "patient.first_name",
        "patient.phone",
        "medicines",
        "contact_id",
        "secure_pin",
    }
    assert "not a phone" not in str(caught.value)
