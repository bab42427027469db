"""JSON logs, request ids and redaction: app/foundation/logs.py."""

from __future__ import annotations

import io
import json
import logging
from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.foundation.db import Database
from app.foundation.logs import (
    REDACTED,
    configure_logging,
    current_request_id,
    redact_text,
    redact_value,
    request_id_scope,
)
from app.foundation.models import Patient, Prescription
from tests.support import find_phi, seeded_phi
from tests.unit.test_webhook_receiver import clock, deliver, event_body  # noqa: F401 (clock: a fixture)
from webhooks.processing import InboxProcessor


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


# -- request ids ---------------------------------------------------------------------------


def test_valid_request_id_is_echoed_and_carried_by_log_lines(client, captured) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123.XYZ"})
    assert response.headers["X-Request-ID"] == "abc-123.XYZ"
    summary = [rec for rec in lines(captured) if rec["logger"] == "app.requests"]
    assert summary and summary[-1]["request_id"] == "abc-123.XYZ"
    assert summary[-1]["path"] == "/healthz" and summary[-1]["status"] == 200


def test_request_id_is_made_when_absent(client) -> None:  # type: ignore[no-untyped-def]
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz").headers["X-Request-ID"]
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != second


@pytest.mark.parametrize(
    "supplied",
    ["x" * 101, "bell\x07", "tab\there", "caf\u00e9", ""],
    ids=["too-long", "bell", "control", "non-ascii", "empty"],
)
def test_invalid_request_id_is_replaced(client, supplied: str) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/healthz", headers={"X-Request-ID": supplied})
    rid = response.headers["X-Request-ID"]
    assert rid != supplied and len(rid) == 32


def test_request_id_at_the_limit_is_kept(client) -> None:  # type: ignore[no-untyped-def]
    rid = "r" * 100
    assert client.get("/healthz", headers={"X-Request-ID": rid}).headers["X-Request-ID"] == rid


def test_error_responses_carry_the_request_id_too(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/prescriptions/1", headers={"X-Request-ID": "err-1"})
    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == "err-1"


def test_request_id_scope_sets_and_restores(captured) -> None:  # type: ignore[no-untyped-def]
    assert current_request_id() is None
    with request_id_scope("job-rid-7") as rid:
        assert rid == "job-rid-7" and current_request_id() == "job-rid-7"
        logging.getLogger("app.interfaces.worker").info("job done", extra={"outbox_id": 7})
        with request_id_scope(None) as inner:
            assert len(inner) == 32 and current_request_id() == inner
        assert current_request_id() == "job-rid-7"
    assert current_request_id() is None
    record = lines(captured)[-1]
    assert record["request_id"] == "job-rid-7" and record["outbox_id"] == 7


def test_request_id_does_not_leak_between_requests(client) -> None:  # type: ignore[no-untyped-def]
    client.get("/healthz", headers={"X-Request-ID": "first"})
    assert current_request_id() is None


# -- JSON shape ----------------------------------------------------------------------------


def test_each_line_is_one_json_object_with_the_standard_fields(captured) -> None:  # type: ignore[no-untyped-def]
    logging.getLogger("app.test").warning(
        "outbox %s dead after %d attempts", 12, 8, extra={"queue": "dispatch"}
    )
    try:
        raise RuntimeError("boom for amelia.hughes@patient.example.test")
    except RuntimeError:
        logging.getLogger("app.test").exception("failed")
    first, second = lines(captured)[-2:]
    assert first["message"] == "outbox 12 dead after 8 attempts"
    assert first["level"] == "WARNING" and first["logger"] == "app.test"
    assert first["queue"] == "dispatch" and first["request_id"] is None
    assert first["time"].endswith("+00:00") and isinstance(first["process"], int)
    assert "RuntimeError" in second["exc_info"]
    assert "amelia" not in second["exc_info"] and REDACTED in second["exc_info"]
    assert len(captured.getvalue().splitlines()) == len(lines(captured))


# -- redaction rules (unit) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("contact amelia.hughes@patient.example.test now", "amelia.hughes@patient.example.test"),
        ("call 07700 900123 today", "07700 900123"),
        ("call 07700900654", "07700900654"),
        ("call +44 7700 900789", "+44 7700 900789"),
        ("call +33 6 12 34 56 78", "+33 6 12 34 56 78"),
        ("Authorization: Bearer abc.def-123", "abc.def-123"),
        ("header bearer s3cr3tT0k3n", "s3cr3tT0k3n"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl seen", "eyJhbGciOiJIUzI1NiJ9"),
        ("token SRX7GK2P9QW4 issued", "SRX7GK2P9QW4"),
        ("stored gAAAAABnX2x0abc_def-ghi== ok", "gAAAAABnX2x0abc_def-ghi=="),
        ("dob 1984-03-07 for patient 1", "1984-03-07"),
        ("dob 07/03/1984 for patient 1", "07/03/1984"),
        ("lives at BS8 2BY", "BS8 2BY"),
        ("post code M14 5TB", "M14 5TB"),
        ("password=hunter2 user=5", "hunter2"),
        ("pin: 481516", "481516"),
        ('{"client_secret": "erx-sandbox-secret"}', "erx-sandbox-secret"),
        ("first_name=Amelia last_name=Hughes id=3", "Amelia"),
        ("first_name=Amelia last_name=Hughes id=3", "Hughes"),
        ("address_line1='12 Alma Road' city=Bristol", "12 Alma Road"),
        ("address_line1=12 Alma Road id=4", "Alma Road"),
        ("date_of_birth=1984-03-07", "1984-03-07"),
        ("api_token=dev-api-token", "dev-api-token"),
    ],
)
def test_redact_text_masks(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "webhook stored: event_id=evt_0001 type=prescription.status_updated state=pending duplicate=False",
        "occurred_at=2026-11-20T10:15:08Z received 2026-11-20 10:15:09",
        "outbox row 17 (prescription 4) attempt 3 of 8, next in 12.5 s",
        "request_id=3f2a9c0e7b8d4f1a9e6c5b4a3d2e1f00 at 1763634902",
        "reference rx-000001 pharmacy 17 flow erx",
    ],
)
def test_redact_text_keeps_ids_statuses_and_timestamps(text: str) -> None:
    assert redact_text(text) == text


def test_sqlalchemy_error_parameters_are_masked(captured, seeded) -> None:  # type: ignore[no-untyped-def]
    try:
        with seeded.session() as session:
            session.add(
                Patient(
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
            )
    except IntegrityError:
        logging.getLogger("app.test").exception("insert failed")
    out = captured.getvalue()
    assert "insert failed" in out and "IntegrityError" in out
    for value in ("Amelia", "Hughes", "Alma Road", "Bristol"):
        assert value not in out


def test_extra_fields_with_sensitive_keys_are_redacted_whatever_the_value() -> None:
    extra = {
        "password": "x",
        "PIN": 1234,
        "client_secret": "y",
        "access_token": "z",
        "Authorization": "Bearer q",
        "email": "a@b.example",
        "patient_phone": "1",
        "first_name": "Amelia",
        "last_name": "Hughes",
        "date_of_birth": "1984-03-07",
        "address_line1": "12 Alma Road",
        "address": {"street": "12 Alma Road"},
        "post_code": "BS8 2BY",
        "prescription_id": 4,
        "outbox_id": 9,
        "status": "issued",
    }
    out = redact_value(extra)
    for key in extra:
        if key in {"prescription_id", "outbox_id", "status"}:
            assert out[key] == extra[key]
        else:
            assert out[key] == REDACTED, key


def test_values_in_non_sensitive_fields_are_masked_by_pattern() -> None:
    out = redact_value(
        {"detail": "sent to amelia.hughes@patient.example.test", "items": ["07700 900123", 3]}
    )
    assert out == {"detail": f"sent to {REDACTED}", "items": [REDACTED, 3]}


def test_filter_masks_message_args_and_extra_in_emitted_lines(captured) -> None:  # type: ignore[no-untyped-def]
    log = logging.getLogger("app.test")
    log.info(
        "login for %s with %s",
        "dr.jones@example.test",
        "password=sandbox-jones-pass",
        extra={"pin": "481516", "patient": {"email": "x@y.example", "id": 1}},
    )
    log.info({"event": "dict message", "token": "SRX123456789", "phone": "07700 900123"})
    out = captured.getvalue()
    for secret in (
        "dr.jones@example.test",
        "sandbox-jones-pass",
        "481516",
        "x@y.example",
        "SRX123456789",
        "900123",
    ):
        assert secret not in out
    first, second = lines(captured)[-2:]
    assert first["pin"] == REDACTED and first["patient"]["id"] == 1
    assert second["event"] == "dict message" and second["token"] == REDACTED


def test_configure_logging_is_idempotent_and_leaves_other_handlers() -> None:
    root = logging.getLogger()
    others = [h for h in root.handlers if not getattr(h, "_erx_json_handler", False)]
    level = root.level
    try:
        configure_logging(stream=io.StringIO())
        handler = configure_logging(stream=io.StringIO())
        ours = [h for h in root.handlers if getattr(h, "_erx_json_handler", False)]
        assert ours == [handler]
        assert [h for h in root.handlers if h is not handler] == others
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_handler_added_by_someone_else_gets_masked_text_too(captured) -> None:  # type: ignore[no-untyped-def]
    # The record factory masks at creation: a plain-text handler (a library's basicConfig,
    # a debugging aid) attached next to ours, or on a child logger, cannot write the raw text.
    plain = io.StringIO()
    foreign = logging.StreamHandler(plain)
    foreign.setFormatter(logging.Formatter("%(name)s %(message)s"))
    child = logging.getLogger("thirdparty.client")
    root = logging.getLogger()
    root.addHandler(foreign)
    child.addHandler(foreign)
    try:
        child.warning("auth Bearer abc.def.ghi for %s at %s", "jo@example.test", "BS8 2BY")
        try:
            raise ValueError("boom for jo@example.test")
        except ValueError:
            child.exception("failed")
    finally:
        root.removeHandler(foreign)
        child.removeHandler(foreign)
    text = plain.getvalue()
    assert (
        text.count("auth Bearer [redacted] for [redacted] at [redacted]") == 2
    )  # child's and root's
    assert "ValueError: boom for [redacted]" in text
    assert "jo@example.test" not in text and "abc.def.ghi" not in text and "BS8 2BY" not in text
    ours = [line for line in lines(captured) if line["logger"] == "thirdparty.client"]
    assert [line["message"] for line in ours][
        0
    ] == "auth Bearer [redacted] for [redacted] at [redacted]"


# -- no seeded PHI in the logs of a full request cycle -----------------------------------------


@pytest.mark.usefixtures("with_credentials", "clock")
def test_no_seeded_phi_in_logs_of_api_and_webhook_cycle(
    client, auth, seeded: Database, captured
) -> None:  # type: ignore[no-untyped-def]
    # ``captured`` comes last: it replaces the handler create_app installed, at DEBUG.
    with seeded.session() as session:
        rx = session.scalars(
            select(Prescription).where(Prescription.reference == "rx-000001")
        ).one()
        rx_id = rx.id
    assert (
        client.post(
            f"/api/v1/prescriptions/{rx_id}/send", json={"pharmacy_id": 1}, headers=auth
        ).status_code
        == 202
    )
    assert client.get(f"/api/v1/prescriptions/{rx_id}", headers=auth).status_code == 200
    assert client.get(f"/api/v1/prescriptions/{rx_id}").status_code == 401
    with seeded.session() as session:
        rx = session.get(Prescription, rx_id)
        assert rx is not None
        rx.platform_token, rx.status = "SRXTEST0000001", "issued"
    assert deliver(client, event_body("evt_phi_1")).status_code == 200
    assert deliver(client, event_body("evt_phi_1")).status_code == 200  # duplicate
    assert deliver(client, event_body("evt_phi_2"), header="t=1,v1=bad").status_code == 401
    assert InboxProcessor(seeded, worker_id="test").run_batch() >= 1
    assert client.get(f"/api/v1/prescriptions/{rx_id}", headers=auth).status_code == 200

    output = captured.getvalue().splitlines()
    assert len(output) >= 6  # the cycle was logged at all
    phi = seeded_phi(seeded)
    assert len(phi) > 24 * 5
    findings = find_phi(output, phi)
    assert findings == [], [str(f) for f in findings]
    assert "SRXTEST0000001" not in captured.getvalue()


def test_find_phi_reports_field_and_patient_not_the_value(seeded: Database) -> None:
    phi = seeded_phi(seeded)
    amelia = [p for p in phi if p.patient == "pt-0001"]
    text = [
        "ok line",
        "leaked Amelia Hughes born 1984-03-07",
        "phone 07700900123",
        "grace period of 5 s",
    ]
    findings = find_phi(text, phi)
    fields = {(f.line, f.phi.field) for f in findings if f.phi.patient == "pt-0001"}
    assert {
        (2, "first_name"),
        (2, "last_name"),
        (2, "full_name"),
        (2, "date_of_birth"),
        (3, "phone_digits"),
    } <= fields
    assert all(f.line != 4 for f in findings)
    assert all("Amelia" not in str(f) for f in findings)
    assert amelia


def test_log_level_setting_is_read_and_checked() -> None:
    from app.foundation.config import ConfigError, load_settings

    assert load_settings({"LOG_LEVEL": "debug"}).log_level == "debug"
    assert load_settings({}).log_level == "INFO"
    with pytest.raises(ConfigError, match="^LOG_LEVEL must be"):
        load_settings({"LOG_LEVEL": "verbose"})


def test_scan_log_files_reads_every_file(seeded: Database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support import scan_log_files

    clean = tmp_path / "web.log"
    clean.write_text('{"message": "request", "path": "/api/v1/prescriptions/1"}\n')
    leaky = tmp_path / "worker.log"
    leaky.write_text('{"message": "ok"}\n{"message": "sent to isla.morgan@patient.example.test"}\n')
    findings = scan_log_files([clean, leaky], seeded_phi(seeded))
    assert [(f.source, f.line, f.phi.field, f.phi.patient) for f in findings] == [
        (str(leaky), 2, "email", "pt-0003")
    ]
