"""The send API (``POST /api/v1/prescriptions/<id>/send``) and the status resource.

Real database (seeded per test), Flask test client. Every refusal is checked
for the one JSON error shape and for leaving the database exactly as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from sqlalchemy import event, func, select

from app.db import Database
from app.models import (
    DispatchOutbox,
    IdempotencyKey,
    Patient,
    Pharmacy,
    Prescription,
    StatusHistory,
)
from tests.conftest import bearer

# rx-000001 belongs to patient pt-0001 (Region B); rx-000017 to pt-0017 (Region A).
REGION_B_REF = "rx-000001"
REGION_A_REF = "rx-000017"


# -- helpers ------------------------------------------------------------------


def rx_id(db: Database, reference: str) -> int:
    with db.session() as session:
        value = session.scalar(select(Prescription.id).where(Prescription.reference == reference))
    assert value is not None, reference
    return value


def pharmacy_by_branch(db: Database, branch_id: int) -> int:
    with db.session() as session:
        value = session.scalar(select(Pharmacy.id).where(Pharmacy.branch_id == branch_id))
    assert value is not None
    return value


def region_a_pharmacy(db: Database) -> int:
    with db.session() as session:
        value = session.scalar(
            select(Pharmacy.id).where(Pharmacy.email == "ards@pharmacy-a.example.test")
        )
    assert value is not None
    return value


@dataclass(frozen=True)
class Snapshot:
    status: str
    pharmacy_id: int | None
    history: int
    outbox: tuple[tuple[str, int], ...]
    idempotency_keys: int


def snapshot(db: Database, prescription_id: int) -> Snapshot:
    with db.session() as session:
        rx = session.get(Prescription, prescription_id)
        assert rx is not None
        history = session.scalar(
            select(func.count())
            .select_from(StatusHistory)
            .where(StatusHistory.prescription_id == prescription_id)
        )
        outbox = tuple(
            (state, attempts)
            for state, attempts in session.execute(
                select(DispatchOutbox.state, DispatchOutbox.attempts).where(
                    DispatchOutbox.prescription_id == prescription_id
                )
            )
        )
        keys = session.scalar(select(func.count()).select_from(IdempotencyKey))
        return Snapshot(rx.status, rx.pharmacy_id, history or 0, outbox, keys or 0)


def total_outbox_rows(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(DispatchOutbox)) or 0


def assert_error_shape(resp, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert isinstance(body, dict)
    assert {"code", "message", "errors"} <= set(body)
    assert isinstance(body["code"], str) and body["code"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["errors"], dict)
    if code is not None:
        assert body["code"] == code
    return body


def send_url(prescription_id: int) -> str:
    return f"/api/v1/prescriptions/{prescription_id}/send"


# -- authentication -----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dev-api-token"},
        {"Authorization": "dev-api-token"},
        {"Authorization": "Bearer dev-api-token-but-longer"},
        {"Authorization": "Bearer dev-api-token"},
    ],
    ids=["none", "wrong", "empty", "scheme-only", "basic", "no-scheme", "prefix", "old-static-token"],
)
def test_send_without_valid_bearer_token_is_401_and_writes_nothing(
    client, seeded: Database, with_credentials, headers: dict[str, str]
) -> None:
    pid = rx_id(seeded, REGION_B_REF)
    before = snapshot(seeded, pid)

    resp = client.post(
        send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 17)}, headers=headers
    )

    assert_error_shape(resp, 401, "invalid_token")
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert snapshot(seeded, pid) == before


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}])
def test_status_resource_requires_a_bearer_token(client, seeded: Database, headers) -> None:  # type: ignore[no-untyped-def]
    resp = client.get(f"/api/v1/prescriptions/{rx_id(seeded, REGION_B_REF)}", headers=headers)

    body = assert_error_shape(resp, 401, "invalid_token")
    assert "status" not in body


def test_bearer_scheme_is_case_insensitive(auth, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    token = auth["Authorization"].partition(" ")[2]
    resp = client.get(
        f"/api/v1/prescriptions/{rx_id(seeded, REGION_B_REF)}",
        headers={"Authorization": f"bearer {token}"},
    )
    assert resp.status_code == 200


# -- success ------------------------------------------------------------------


def test_send_queues_prescription_with_history_and_outbox(
    auth,
    client, seeded: Database, with_credentials
) -> None:
    pid = rx_id(seeded, REGION_B_REF)
    pharmacy = pharmacy_by_branch(seeded, 17)

    resp = client.post(send_url(pid), json={"pharmacy_id": pharmacy}, headers=auth)

    assert resp.status_code == 202, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["id"] == pid
    assert body["reference"] == REGION_B_REF
    assert body["status"] == "queued"
    assert body["status_url"] == f"/api/v1/prescriptions/{pid}"
    assert resp.headers["Location"].endswith(body["status_url"])

    with seeded.session() as session:
        rx = session.get(Prescription, pid)
        assert rx is not None
        assert rx.status == "queued"
        assert rx.pharmacy_id == pharmacy
        history = list(
            session.scalars(select(StatusHistory).where(StatusHistory.prescription_id == pid))
        )
        outbox = list(
            session.scalars(select(DispatchOutbox).where(DispatchOutbox.prescription_id == pid))
        )
    assert [(h.from_status, h.to_status) for h in history] == [("draft", "queued")]
    assert len(outbox) == 1
    assert outbox[0].state == "pending"
    assert outbox[0].flow == "erx"
    assert outbox[0].attempts == 0
    assert outbox[0].outcome_unknown is False
    assert outbox[0].locked_by is None
    assert total_outbox_rows(seeded) == 1


def test_region_a_prescription_queues_for_the_email_flow(auth, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    # Region A needs no platform credentials: no with_credentials here.
    pid = rx_id(seeded, REGION_A_REF)

    resp = client.post(
        send_url(pid), json={"pharmacy_id": region_a_pharmacy(seeded)}, headers=auth
    )

    assert resp.status_code == 202, resp.get_data(as_text=True)
    with seeded.session() as session:
        row = session.scalars(
            select(DispatchOutbox).where(DispatchOutbox.prescription_id == pid)
        ).one()
        assert row.flow == "email"
        assert row.state == "pending"


def test_send_is_one_transaction_a_failing_outbox_write_leaves_nothing(
    auth,
    client, seeded: Database, with_credentials
) -> None:
    pid = rx_id(seeded, REGION_B_REF)
    before = snapshot(seeded, pid)

    def refuse_outbox(session, _flush_context, _instances) -> None:  # type: ignore[no-untyped-def]
        if any(isinstance(obj, DispatchOutbox) for obj in session.new):
            raise RuntimeError("simulated failure writing the outbox row")

    event.listen(seeded.sessionmaker, "before_flush", refuse_outbox)
    try:
        resp = client.post(
            send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 17)}, headers=auth
        )
    finally:
        event.remove(seeded.sessionmaker, "before_flush", refuse_outbox)

    body = assert_error_shape(resp, 500, "internal_error")
    assert "simulated" not in json.dumps(body)
    # The status change and the history row were rolled back with the outbox row.
    assert snapshot(seeded, pid) == before


def test_send_commits_exactly_once(auth, client, seeded: Database, with_credentials) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, REGION_B_REF)
    pharmacy = pharmacy_by_branch(seeded, 17)
    commits: list[object] = []

    def count(session) -> None:  # type: ignore[no-untyped-def]
        commits.append(session)

    event.listen(seeded.sessionmaker, "after_commit", count)
    try:
        resp = client.post(send_url(pid), json={"pharmacy_id": pharmacy}, headers=auth)
    finally:
        event.remove(seeded.sessionmaker, "after_commit", count)

    assert resp.status_code == 202
    assert len(commits) == 1


# -- idempotency --------------------------------------------------------------


def test_idempotency_key_repeat_returns_first_reply_and_queues_once(
    auth,
    client, seeded: Database, with_credentials
) -> None:
    pid = rx_id(seeded, REGION_B_REF)
    headers = {**auth, "Idempotency-Key": "send-abc-123"}
    payload = {"pharmacy_id": pharmacy_by_branch(seeded, 17)}

    first = client.post(send_url(pid), json=payload, headers=headers)
    after_first = snapshot(seeded, pid)
    second = client.post(send_url(pid), json=payload, headers=headers)

    assert first.status_code == second.status_code == 202
    assert second.get_json() == first.get_json()
    assert second.headers["Location"] == first.headers["Location"]
    assert snapshot(seeded, pid) == after_first
    assert after_first.history == 1
    assert after_first.outbox == (("pending", 0),)
    assert total_outbox_rows(seeded) == 1


def test_idempotency_key_reused_with_another_body_is_422(
    auth,
    client, seeded: Database, with_credentials
) -> None:
    pid = rx_id(seeded, REGION_B_REF)
    headers = {**auth, "Idempotency-Key": "send-abc-123"}
    first = client.post(
        send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 17)}, headers=headers
    )
    assert first.status_code == 202
    after_first = snapshot(seeded, pid)

    resp = client.post(
        send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 101)}, headers=headers
    )

    body = assert_error_shape(resp, 422, "idempotency_key_reused")
    assert "Idempotency-Key" in body["errors"]
    assert snapshot(seeded, pid) == after_first


def test_same_idempotency_key_on_another_prescription_is_independent(
    auth,
    client, seeded: Database, with_credentials
) -> None:
    headers = {**auth, "Idempotency-Key": "k-1"}
    payload = {"pharmacy_id": pharmacy_by_branch(seeded, 17)}
    first = client.post(send_url(rx_id(seeded, "rx-000001")), json=payload, headers=headers)
    other = client.post(send_url(rx_id(seeded, "rx-000002")), json=payload, headers=headers)

    assert first.status_code == other.status_code == 202
    assert other.get_json()["reference"] == "rx-000002"
    assert total_outbox_rows(seeded) == 2


def test_idempotency_key_of_a_refused_request_is_not_burned(
    auth,
    client, seeded: Database, with_credentials
) -> None:
    pid = rx_id(seeded, REGION_B_REF)
    headers = {**auth, "Idempotency-Key": "retry-after-fix"}

    refused = client.post(send_url(pid), json={"pharmacy_id": region_a_pharmacy(seeded)}, headers=headers)
    fixed = client.post(
        send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 17)}, headers=headers
    )

    assert refused.status_code == 422
    assert fixed.status_code == 202
    assert snapshot(seeded, pid).outbox == (("pending", 0),)


@pytest.mark.parametrize("key", ["x" * 201, "tab\there"], ids=["too-long", "unprintable"])
def test_invalid_idempotency_key_is_400_and_writes_nothing(
    auth,
    client, seeded: Database, with_credentials, key: str
) -> None:
    pid = rx_id(seeded, REGION_B_REF)
    before = snapshot(seeded, pid)

    resp = client.post(
        send_url(pid),
        json={"pharmacy_id": pharmacy_by_branch(seeded, 17)},
        headers={**auth, "Idempotency-Key": key},
    )

    assert_error_shape(resp, 400, "invalid_idempotency_key")
    assert snapshot(seeded, pid) == before


def test_second_send_without_key_is_409_and_changes_nothing(
    auth,
    client, seeded: Database, with_credentials
) -> None:
    pid = rx_id(seeded, REGION_B_REF)
    first = client.post(
        send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 17)}, headers=auth
    )
    assert first.status_code == 202
    after_first = snapshot(seeded, pid)

    resp = client.post(
        send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 101)}, headers=auth
    )

    body = assert_error_shape(resp, 409, "already_queued_or_sent")
    assert "queued" in body["message"]
    assert snapshot(seeded, pid) == after_first


def test_unknown_prescription_is_404(auth, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    before = total_outbox_rows(seeded)
    resp = client.post(send_url(999_999), json={"pharmacy_id": 1}, headers=auth)

    assert_error_shape(resp, 404, "not_found")
    assert total_outbox_rows(seeded) == before
    assert_error_shape(client.get("/api/v1/prescriptions/999999", headers=auth), 404, "not_found")


# -- refusals that must write nothing -----------------------------------------


def _region_b_pharmacy(db: Database) -> int:
    return pharmacy_by_branch(db, 17)


INVALID_REQUESTS = {
    # name: (build kwargs for client.post from db, expected status, expected code, error field)
    "unknown-pharmacy": (lambda db: {"json": {"pharmacy_id": 987_654}}, 422, "validation_error", "pharmacy_id"),
    "other-region-pharmacy": (
        lambda db: {"json": {"pharmacy_id": region_a_pharmacy(db)}},
        422,
        "validation_error",
        "pharmacy_id",
    ),
    "pharmacy-id-as-string": (
        lambda db: {"json": {"pharmacy_id": str(_region_b_pharmacy(db))}},
        422,
        "validation_error",
        "pharmacy_id",
    ),
    "pharmacy-id-as-float": (
        lambda db: {"json": {"pharmacy_id": float(_region_b_pharmacy(db))}},
        422,
        "validation_error",
        "pharmacy_id",
    ),
    "pharmacy-id-as-bool": (lambda db: {"json": {"pharmacy_id": True}}, 422, "validation_error", "pharmacy_id"),
    "pharmacy-id-null": (lambda db: {"json": {"pharmacy_id": None}}, 422, "validation_error", "pharmacy_id"),
    "pharmacy-id-zero": (lambda db: {"json": {"pharmacy_id": 0}}, 422, "validation_error", "pharmacy_id"),
    "pharmacy-id-missing": (lambda db: {"json": {}}, 422, "validation_error", "pharmacy_id"),
    "extra-unknown-field": (
        lambda db: {"json": {"pharmacy_id": _region_b_pharmacy(db), "priority": "high"}},
        422,
        "validation_error",
        "priority",
    ),
    "non-json-body": (
        lambda db: {"data": "pharmacy_id=5", "content_type": "application/json"},
        400,
        "malformed_json",
        None,
    ),
    "truncated-json": (
        lambda db: {"data": '{"pharmacy_id": ', "content_type": "application/json"},
        400,
        "malformed_json",
        None,
    ),
    "json-array": (
        lambda db: {"data": json.dumps([{"pharmacy_id": 5}]), "content_type": "application/json"},
        400,
        "malformed_json",
        None,
    ),
    "json-string": (lambda db: {"data": '"hello"', "content_type": "application/json"}, 400, "malformed_json", None),
    "text-plain": (
        lambda db: {"data": json.dumps({"pharmacy_id": 5}), "content_type": "text/plain"},
        415,
        "unsupported_media_type",
        None,
    ),
    "form-encoded": (lambda db: {"data": {"pharmacy_id": "5"}}, 415, "unsupported_media_type", None),
    "no-body": (lambda db: {}, 415, "unsupported_media_type", None),
}


@pytest.mark.parametrize("case", list(INVALID_REQUESTS), ids=list(INVALID_REQUESTS))
def test_invalid_send_is_refused_with_json_error_and_writes_nothing(
    auth,
    client, seeded: Database, with_credentials, case: str
) -> None:
    build, status, code, field = INVALID_REQUESTS[case]
    pid = rx_id(seeded, REGION_B_REF)
    before = snapshot(seeded, pid)
    assert before.status == "draft"

    resp = client.post(send_url(pid), headers=auth, **build(seeded))

    body = assert_error_shape(resp, status, code)
    if field is not None:
        assert field in body["errors"], body
    after = snapshot(seeded, pid)
    assert after == before
    assert after.status == "draft"
    assert after.history == 0
    assert after.outbox == ()
    assert total_outbox_rows(seeded) == 0


def test_region_b_prescription_to_region_a_pharmacy_names_the_region(
    auth,
    client, seeded: Database, with_credentials
) -> None:
    resp = client.post(
        send_url(rx_id(seeded, REGION_B_REF)),
        json={"pharmacy_id": region_a_pharmacy(seeded)},
        headers=auth,
    )
    body = assert_error_shape(resp, 422, "validation_error")
    assert "region" in " ".join(body["errors"]["pharmacy_id"]).lower()


def test_region_a_prescription_to_region_b_pharmacy_is_refused(auth, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, REGION_A_REF)
    before = snapshot(seeded, pid)

    resp = client.post(
        send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 17)}, headers=auth
    )

    body = assert_error_shape(resp, 422, "validation_error")
    assert "pharmacy_id" in body["errors"]
    assert snapshot(seeded, pid) == before


@pytest.mark.parametrize("value", [2**63, 10**30], ids=["2**63", "10**30"])
def test_huge_pharmacy_id_is_a_client_error_not_500(
    auth,
    client, seeded: Database, with_credentials, value: int
) -> None:
    pid = rx_id(seeded, REGION_B_REF)
    before = snapshot(seeded, pid)

    resp = client.post(send_url(pid), json={"pharmacy_id": value}, headers=auth)

    body = assert_error_shape(resp, 422, "validation_error")
    assert "pharmacy_id" in body["errors"]
    assert snapshot(seeded, pid) == before


def test_huge_prescription_id_in_path_is_404_not_500(auth, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    resp = client.get(f"/api/v1/prescriptions/{10**30}", headers=auth)
    assert_error_shape(resp, 404, "not_found")


def test_prescriber_without_credentials_is_422_and_writes_nothing(auth, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, REGION_B_REF)
    before = snapshot(seeded, pid)

    resp = client.post(
        send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 17)}, headers=auth
    )

    body = assert_error_shape(resp, 422, "validation_error")
    assert "prescriber" in body["errors"]
    assert snapshot(seeded, pid) == before


def test_prescription_without_medicines_is_422(auth, client, seeded: Database, with_credentials) -> None:  # type: ignore[no-untyped-def]
    from app.models import PrescriptionMedicine

    pid = rx_id(seeded, REGION_B_REF)
    with seeded.session() as session:
        for line in session.scalars(
            select(PrescriptionMedicine).where(PrescriptionMedicine.prescription_id == pid)
        ):
            session.delete(line)
    before = snapshot(seeded, pid)

    resp = client.post(
        send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 17)}, headers=auth
    )

    body = assert_error_shape(resp, 422, "validation_error")
    assert "medicines" in body["errors"]
    assert snapshot(seeded, pid) == before


def test_wrong_method_and_unknown_route_use_the_json_error_shape(auth, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, REGION_B_REF)
    resp = client.get(send_url(pid), headers=auth)
    assert_error_shape(resp, 405)
    assert "POST" in resp.headers.get("Allow", "")
    assert_error_shape(client.get("/api/v1/nowhere", headers=auth), 404)


# -- the status resource ------------------------------------------------------


def test_status_of_a_draft_has_no_dispatch_and_no_history(auth, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, REGION_B_REF)

    resp = client.get(f"/api/v1/prescriptions/{pid}", headers=auth)

    assert resp.status_code == 200
    body = resp.get_json()
    assert body["id"] == pid
    assert body["reference"] == REGION_B_REF
    assert body["status"] == "draft"
    assert body["region"] == "B"
    assert body["dispatch"] is None
    assert body["history"] == []
    assert body["rejection"] is None
    assert body["platform_token"] is None


def test_status_after_send_shows_status_dispatch_and_history(
    auth,
    client, seeded: Database, with_credentials
) -> None:
    pid = rx_id(seeded, REGION_B_REF)
    pharmacy = pharmacy_by_branch(seeded, 17)
    sent = client.post(send_url(pid), json={"pharmacy_id": pharmacy}, headers=auth)

    resp = client.get(sent.headers["Location"], headers=auth)

    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "queued"
    assert body["pharmacy_id"] == pharmacy
    assert body["dispatch"]["state"] == "pending"
    assert body["dispatch"]["attempts"] == 0
    assert body["dispatch"]["next_attempt_at"].endswith("Z")
    assert body["dispatch"]["last_error"] is None
    assert len(body["history"]) == 1
    entry = body["history"][0]
    assert (entry["from"], entry["to"], entry["source"]) == ("draft", "queued", "service")
    assert entry["occurred_at"].endswith("Z")
    assert entry["event_id"] is None


def test_responses_never_contain_patient_details(auth, client, seeded: Database, with_credentials) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, REGION_B_REF)
    with seeded.session() as session:
        rx = session.get(Prescription, pid)
        assert rx is not None
        patient = session.get(Patient, rx.patient_id)
        assert patient is not None
        dob = patient.date_of_birth
        phone_digits = "".join(ch for ch in patient.phone or "" if ch.isdigit())
        secrets = [
            patient.first_name,
            patient.last_name,
            patient.email,
            patient.phone,
            phone_digits,
            phone_digits.lstrip("0"),
            dob.isoformat(),
            dob.strftime("%d/%m/%Y"),
            patient.address_line1,
            patient.post_code,
        ]

    bodies = [
        client.post(send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 17)}, headers=auth),
        # As the patient: a staff read carries the patient's display name by contract (and is audited).
        client.get(f"/api/v1/prescriptions/{pid}", headers=bearer(client.application, role="patient")),
        client.post(send_url(pid), json={"pharmacy_id": pharmacy_by_branch(seeded, 17)}, headers=auth),
        client.post(send_url(pid), json={"pharmacy_id": region_a_pharmacy(seeded)}, headers=auth),
        client.post(send_url(rx_id(seeded, "rx-000025")), json={"pharmacy_id": region_a_pharmacy(seeded)}, headers=auth),
    ]
    # The repeats are refused (409 once app/services/prescriptions.py:133 is fixed).
    assert [bodies[0].status_code, bodies[1].status_code, bodies[4].status_code] == [202, 200, 422]
    assert all(400 <= r.status_code < 600 for r in bodies[2:4])
    for resp in bodies:
        text = resp.get_data(as_text=True)
        for secret in secrets:
            assert secret and secret not in text, f"patient detail leaked in {resp.status_code} body"


def test_oversized_body_is_413_json_and_writes_nothing(auth, client, seeded) -> None:  # type: ignore[no-untyped-def]
    resp = client.post(
        "/api/v1/prescriptions/1/send",
        data=b"{" + b" " * (1024 * 1024) + b"}",
        headers={**auth, "Content-Type": "application/json"},
    )
    assert resp.status_code == 413
    assert set(resp.get_json()) >= {"code", "message", "errors"}
    with seeded.session() as s:
        assert s.scalar(select(func.count()).select_from(DispatchOutbox)) == 0
