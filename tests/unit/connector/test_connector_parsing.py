"""Reading success bodies: the nested token, prescriptions, timestamps (contract §4, §5)."""

from __future__ import annotations

import datetime as dt

import pytest
from connector_fakes import success_issue_body

from connector import parse_prescription, parse_prescription_token
from connector.errors import ResponseParseError
from connector.results import StatusChange

UTC = dt.UTC


def test_nested_token_is_extracted() -> None:
    body = success_issue_body("SRXC49F3D4F66A7")
    body["data"]["extra"] = {"ignored": True}

    assert parse_prescription_token(body) == "SRXC49F3D4F66A7"


def test_token_path_comes_from_settings_not_code() -> None:
    body = {"success": True, "result": {"prescriptionId": "SRX1"}}

    assert parse_prescription_token(body, path=("result", "prescriptionId")) == "SRX1"


@pytest.mark.parametrize(
    ("body", "failed_path"),
    [
        ({"success": True}, "data"),
        ({"success": True, "data": None}, "data"),
        ({"success": True, "data": []}, "data"),
        ({"success": True, "data": {"prescription": None}}, "data.prescription"),
        ({"success": True, "data": {"prescription": [{"id": "SRX1"}]}}, "data.prescription"),
        ({"success": True, "data": {"prescription": {}}}, "data.prescription.id"),
        ({"success": True, "data": {"prescription": {"id": None}}}, "data.prescription.id"),
        ({"success": True, "data": {"prescription": {"id": 12345}}}, "data.prescription.id"),
        ({"success": True, "data": {"prescription": {"id": "  "}}}, "data.prescription.id"),
        ("not an object", "<body>"),
        (None, "<body>"),
    ],
)
def test_missing_or_wrong_token_is_a_parse_error_not_a_crash(
    body: object, failed_path: str
) -> None:
    with pytest.raises(ResponseParseError) as caught:
        parse_prescription_token(body)

    assert caught.value.path == failed_path


def test_parse_error_names_types_never_values() -> None:
    with pytest.raises(ResponseParseError) as caught:
        parse_prescription_token({"data": {"prescription": {"id": ["SRX-SECRET-VALUE"]}}})

    assert "SRX-SECRET-VALUE" not in str(caught.value)
    assert "array" in str(caught.value)


def test_prescription_with_history_is_read_in_utc() -> None:
    item = {
        "id": "SRX1",
        "status": "signed",
        "client_ref_id": "rx-1",
        "created_at": "2026-11-20T10:15:02Z",
        "history": [
            {"status": "issued", "at": "2026-11-20T10:15:02Z"},
            {"status": "signed", "at": "2026-11-20T11:15:08+01:00"},
        ],
        "unexpected": "ignored",
    }

    rx = parse_prescription(item)

    assert rx.platform_token == "SRX1"
    assert rx.status == "signed"
    assert rx.client_ref_id == "rx-1"
    assert rx.created_at == dt.datetime(2026, 11, 20, 10, 15, 2, tzinfo=UTC)
    assert rx.history == (
        StatusChange("issued", dt.datetime(2026, 11, 20, 10, 15, 2, tzinfo=UTC)),
        StatusChange("signed", dt.datetime(2026, 11, 20, 10, 15, 8, tzinfo=UTC)),
    )
    status, at = rx.history[1]
    assert at.tzinfo is UTC


def test_prescription_optional_fields_default() -> None:
    rx = parse_prescription({"id": "SRX1", "status": "issued"})

    assert (rx.client_ref_id, rx.created_at, rx.history) == (None, None, ())


@pytest.mark.parametrize(
    ("item", "failed_path"),
    [
        ({"status": "issued"}, "prescription.id"),
        ({"id": "SRX1"}, "prescription.status"),
        ({"id": "SRX1", "status": "issued", "history": {}}, "prescription.history"),
        (
            {"id": "SRX1", "status": "issued", "history": [{"status": "issued"}]},
            "prescription.history.0.at",
        ),
        ({"id": "SRX1", "status": "issued", "created_at": "yesterday"}, "prescription.created_at"),
        (["SRX1"], "prescription"),
    ],
)
def test_malformed_prescription_is_a_parse_error(item: object, failed_path: str) -> None:
    with pytest.raises(ResponseParseError) as caught:
        parse_prescription(item)

    assert caught.value.path == failed_path
