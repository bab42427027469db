"""The status resource as the pages and support use it: keys, lookup by reference, conditional GET.

Real database (seeded per test), Flask test client, real development JWTs.
rx-000001 belongs to pt-0001 (Region B), rx-000017 to pt-0017 (Region A).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from app.foundation.db import Database
from app.foundation.models import AuditEvent, Patient, Pharmacy, Prescription
from app.interfaces.directory_schemas import PrescriptionPageSchema, prescription_page_body
from app.interfaces.schemas import PrescriptionViewSchema
from app.mechanisms.history import Change, local, record
from app.services.patients import patient_prescription_page
from app.services.prescription_reads import Viewer, find_view
from tests.conftest import bearer

REASON = "Prescribed twice by mistake"


def _id(db: Database, reference: str) -> int:
    with db.session() as session:
        value = session.scalar(select(Prescription.id).where(Prescription.reference == reference))
    assert value is not None
    return value


def _audit(db: Database) -> list[tuple[str, str, int | None]]:
    with db.session() as session:
        rows = session.execute(
            select(AuditEvent.actor, AuditEvent.action, AuditEvent.prescription_id).order_by(
                AuditEvent.id
            )
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _headers(app: Any, role: str, subject: str = "pt-0001") -> dict[str, str]:
    return bearer(app, role=role, subject=subject)


def _patient_name(db: Database, ref: str) -> str:
    with db.session() as session:
        patient = session.scalars(select(Patient).where(Patient.external_ref == ref)).one()
        return f"{patient.first_name} {patient.last_name}"


# -- the view's keys ------------------------------------------------------------------


def test_view_names_the_prescriber_and_when_it_was_written(
    app: Any, client: Any, seeded: Any
) -> None:
    body = client.get("/api/v1/prescriptions/1", headers=_headers(app, "patient")).get_json()

    assert body["created_at"].endswith("Z") and "T" in body["created_at"]
    assert set(body["prescriber"]) == {"id", "name"} and body["prescriber"]["name"]
    assert {"id", "reference", "status", "region", "pharmacy", "medicines", "history"} <= set(body)


def test_patient_block_for_staff_only(app: Any, client: Any, seeded: Any) -> None:
    name = _patient_name(seeded, "pt-0001")
    for role in ("support", "service"):
        body = client.get(
            "/api/v1/prescriptions/1", headers=_headers(app, role, f"{role}-1")
        ).get_json()
        assert body["patient"] == {"ref": "pt-0001", "name": name}
    as_patient = client.get("/api/v1/prescriptions/1", headers=_headers(app, "patient"))
    assert "patient" not in as_patient.get_json() and name not in as_patient.get_data(as_text=True)


def test_history_carries_the_void_reason_and_who_voided(app: Any, client: Any, seeded: Any) -> None:
    pid = _id(seeded, "rx-000001")
    with seeded.session() as session:
        rx = session.get(Prescription, pid)
        record(session, [Change(rx, local(rx, "queued", source="service"))])
    support = _headers(app, "support", "support-7")

    voided = client.post(
        f"/api/v1/prescriptions/{pid}/void", json={"reason": REASON}, headers=support
    )

    assert voided.status_code == 200, voided.get_data(as_text=True)
    history = client.get(f"/api/v1/prescriptions/{pid}", headers=support).get_json()["history"]
    assert [(h["to"], h["reason"], h["actor"]) for h in history] == [
        ("queued", None, None),
        ("voided", REASON, "support:support-7"),
    ]


# -- a reference in the id slot, and the lookup ---------------------------------------------


def test_reference_in_the_id_slot_is_the_same_view(app: Any, client: Any, seeded: Any) -> None:
    headers = _headers(app, "patient")
    by_id = client.get("/api/v1/prescriptions/1", headers=headers)
    by_reference = client.get("/api/v1/prescriptions/rx-000001", headers=headers)

    assert by_reference.status_code == 200
    assert by_reference.get_json() == by_id.get_json()
    assert by_reference.headers["ETag"] == by_id.headers["ETag"]


@pytest.mark.parametrize(
    "path", ["rx-000017", "rx-999999", "no-such", "rx%20000001", "x" * 65, "%C3%A9"]
)
def test_unknown_or_another_patients_reference_is_a_json_404(
    app: Any, client: Any, seeded: Any, path: str
) -> None:
    response = client.get(f"/api/v1/prescriptions/{path}", headers=_headers(app, "patient"))

    assert response.status_code == 404
    assert response.get_json()["code"] == "not_found"


@pytest.mark.parametrize("role", ["support", "service"])
def test_lookup_by_reference_and_by_platform_token(
    app: Any, client: Any, seeded: Any, role: str
) -> None:
    pid = _id(seeded, "rx-000017")
    with seeded.session() as session:
        session.get(Prescription, pid).platform_token = "SRXLOOKUP0001"
    headers = _headers(app, role, f"{role}-1")

    by_reference = client.get("/api/v1/prescriptions?reference=rx-000017", headers=headers)
    by_token = client.get("/api/v1/prescriptions?platform_token=SRXLOOKUP0001", headers=headers)

    assert by_reference.status_code == by_token.status_code == 200
    items = by_reference.get_json()["items"]
    assert [i["id"] for i in items] == [pid] and items == by_token.get_json()["items"]
    assert items[0]["platform_token"] == "SRXLOOKUP0001"
    assert _audit(seeded)[-2:] == [(f"{role}-1", "read", pid), (f"{role}-1", "read", pid)]


def test_lookup_that_finds_nothing_is_empty_and_audited(app: Any, client: Any, seeded: Any) -> None:
    response = client.get(
        "/api/v1/prescriptions?reference=rx-999999", headers=_headers(app, "support", "s-1")
    )

    assert response.status_code == 200 and response.get_json() == {"items": []}
    assert _audit(seeded) == [("s-1", "lookup", None)]


def test_patients_may_not_look_up(app: Any, client: Any, seeded: Any) -> None:
    response = client.get(
        "/api/v1/prescriptions?reference=rx-000001", headers=_headers(app, "patient")
    )

    assert response.status_code == 403 and response.get_json()["code"] == "forbidden"
    assert _audit(seeded) == []


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?reference=rx-000001&platform_token=x",
        "?reference=rx-000001&reference=rx-000002",
        "?reference=",
        "?reference=%20rx-000001",
        "?platform_token=" + "x" * 65,
        "?reference=rx%0A1",
    ],
)
def test_lookup_needs_exactly_one_well_formed_key(
    app: Any, client: Any, seeded: Any, query: str
) -> None:
    response = client.get(f"/api/v1/prescriptions{query}", headers=_headers(app, "support", "s-1"))

    assert response.status_code == 422
    body = response.get_json()
    assert set(body) >= {"code", "message", "errors"} and body["errors"]
    assert _audit(seeded) == []


# -- conditional GET ---------------------------------------------------------------------


def test_if_none_match_answers_304_and_the_access_is_still_audited(
    app: Any, client: Any, seeded: Any
) -> None:
    headers = _headers(app, "patient")
    first = client.get("/api/v1/prescriptions/1", headers=headers)
    etag = first.headers["ETag"]

    again = client.get("/api/v1/prescriptions/1", headers=headers | {"If-None-Match": etag})

    assert again.status_code == 304 and again.get_data() == b""
    assert again.headers["ETag"] == etag
    assert [a for _, a, _ in _audit(seeded)] == ["read", "read-not-modified"]


def test_a_status_change_changes_the_etag(app: Any, client: Any, seeded: Any) -> None:
    headers = _headers(app, "patient")
    etag = client.get("/api/v1/prescriptions/1", headers=headers).headers["ETag"]
    with seeded.session() as session:
        rx = session.get(Prescription, 1)
        record(session, [Change(rx, local(rx, "queued", source="service"))])

    changed = client.get("/api/v1/prescriptions/1", headers=headers | {"If-None-Match": etag})

    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.get_json()["status"] == "queued"


def test_roles_that_see_different_keys_get_different_etags(
    app: Any, client: Any, seeded: Any
) -> None:
    patient = client.get("/api/v1/prescriptions/1", headers=_headers(app, "patient")).headers[
        "ETag"
    ]
    support = client.get(
        "/api/v1/prescriptions/1", headers=_headers(app, "support", "s-1")
    ).headers["ETag"]

    assert patient != support


def test_the_list_is_conditional_too(app: Any, client: Any, seeded: Any) -> None:
    headers = _headers(app, "patient")
    first = client.get("/api/v1/me/prescriptions?per_page=50", headers=headers)
    ids = [item["id"] for item in first.get_json()["items"]]

    again = client.get(
        "/api/v1/me/prescriptions?per_page=50",
        headers=headers | {"If-None-Match": first.headers["ETag"]},
    )

    assert again.status_code == 304 and again.get_data() == b""
    # A 304 is still an access: one row naming what the list would have shown, as the 200's.
    with seeded.session() as session:
        listed = session.execute(
            select(AuditEvent.action, AuditEvent.prescription_ids).order_by(AuditEvent.id)
        ).all()
    assert [tuple(r) for r in listed] == [("list", ids), ("list-not-modified", ids)]


# -- the list carries each prescription's view ------------------------------------------------


def test_list_items_carry_the_view_and_keep_the_summary_keys(
    app: Any, client: Any, seeded: Any
) -> None:
    with seeded.session() as session:
        rx = session.get(Prescription, 1)
        record(session, [Change(rx, local(rx, "queued", source="service"))])
    headers = _headers(app, "patient")

    page = client.get("/api/v1/me/prescriptions?per_page=50", headers=headers).get_json()

    item = next(i for i in page["items"] if i["id"] == 1)
    single = client.get("/api/v1/prescriptions/1", headers=headers).get_json()
    for key in (
        "reference",
        "status",
        "region",
        "prescriber",
        "pharmacy",
        "medicines",
        "history",
        "dispatch",
    ):
        assert item[key] == single[key], key
    assert {"created_at", "updated_at", "pharmacy_id", "pharmacy_name", "status_url"} <= set(item)
    assert "platform_token" not in item and "patient" not in item
    assert page["total"] == len(page["items"])


def test_a_page_past_the_end_still_counts(app: Any, client: Any, seeded: Any) -> None:
    headers = _headers(app, "patient")
    total = client.get("/api/v1/me/prescriptions", headers=headers).get_json()["total"]

    past = client.get("/api/v1/me/prescriptions?page=99", headers=headers)

    assert (
        past.status_code == 200
        and past.get_json()["items"] == []
        and past.get_json()["total"] == total
    )
    unknown = client.get("/api/v1/me/prescriptions", headers=_headers(app, "patient", "pt-nobody"))
    assert unknown.status_code == 404 and unknown.get_json()["code"] == "patient_not_found"


def test_timeline_orders_by_time_to_the_microsecond(seeded: Any) -> None:
    from datetime import UTC, datetime

    from app.services.prescription_reads import history_entries

    at = datetime(2026, 11, 20, 10, 15, 8, tzinfo=UTC)
    rows = [
        {
            "id": 1,
            "from_status": "queued",
            "to_status": "rejected",
            "occurred_at": at.replace(microsecond=500000),
            "received_at": at,
            "source": "service",
            "event_id": None,
            "detail": None,
            "actor": None,
        },
        {
            "id": 2,
            "from_status": "draft",
            "to_status": "queued",
            "occurred_at": "2026-11-20 10:15:08",
            "received_at": at,
            "source": "service",
            "event_id": None,
            "detail": None,
            "actor": None,
        },
    ]

    assert [h["to"] for h in history_entries(rows)] == ["queued", "rejected"]


def test_postgresql_json_times_are_written_as_the_parsed_instant_would_be(seeded: Any) -> None:
    """The timeline's times arrive as PostgreSQL's JSON text and are rewritten without a
    parse: the text must be exactly what parsing the instant and writing it gives."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    from app.services.prescription_reads import _zulu, iso

    base = datetime(2026, 11, 20, 10, 15, 8, tzinfo=UTC)
    instants = [base + timedelta(microseconds=us) for us in (0, 1, 10, 120000, 500000, 999999)]
    instants += [datetime(1999, 12, 31, 23, 59, 59, 100, tzinfo=UTC)]
    for moment in instants:
        if seeded.is_postgres:
            with seeded.engine.connect() as conn:
                conn.exec_driver_sql("SET TIME ZONE 'UTC'")
                rendered = conn.execute(
                    text("SELECT json_build_object('t', CAST(:t AS timestamptz))::text"),
                    {"t": moment},
                ).scalar_one()
            value = json.loads(rendered)["t"]
        else:
            us = f"{moment.microsecond:06d}".rstrip("0")
            value = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{us}" if us else "") + "+00:00"
        assert iso(value) == _zulu(moment) == iso(moment), value
    # Other offsets and SQLite's naive text take the parsing path, to the same instant.
    assert iso("2026-11-20T15:45:08+05:30") == "2026-11-20T10:15:08Z"
    assert iso("2026-11-20 10:15:08.500000") == "2026-11-20T10:15:08.500000Z"


# -- the bodies are built directly; the schemas stay the contract -----------------------------


def test_the_bodies_built_directly_are_exactly_what_the_schemas_dump(
    app: Any, client: Any, seeded: Any
) -> None:
    """The single read and the list answer without marshmallow's dump (its per-field walk cost
    more CPU than the read); the schemas stay the documented contract, so each body must
    be exactly their dump, for every role and every shape of prescription."""
    support = _headers(app, "support", "support-7")
    with seeded.session() as session:
        queued = session.get(Prescription, 1)
        queued.pharmacy_id = session.scalar(select(Pharmacy.id).order_by(Pharmacy.id).limit(1))
        record(session, [Change(queued, local(queued, "queued", source="service"))])
        voided = session.get(Prescription, 25)
        record(session, [Change(voided, local(voided, "queued", source="service"))])
        rejected = session.get(Prescription, 49)
        rejected.status = "rejected"
        rejected.rejection_message = "Validation failed"
        rejected.rejection_errors = '{"medicines.0.vpid": ["unknown VMP"]}'
    assert (
        client.post(
            "/api/v1/prescriptions/25/void", json={"reason": REASON}, headers=support
        ).status_code
        == 200
    )

    with seeded.session() as session:
        ids = session.scalars(select(Prescription.id).order_by(Prescription.id)).all()
        patients = session.scalars(select(Patient.external_ref)).all()
        for viewer in (Viewer("pt-0001", False), Viewer(None, True)):
            for pid in ids:
                view = find_view(session, viewer=viewer, prescription_id=pid)
                if view is not None:
                    assert PrescriptionViewSchema().dump(view) == view, pid
        for ref in patients:
            page = patient_prescription_page(session, ref, page=1, per_page=50)
            assert PrescriptionPageSchema().dump(page) == prescription_page_body(page), ref
    # The same bodies reach the wire.
    body = client.get("/api/v1/prescriptions/25", headers=support).get_json()
    assert body["history"][-1]["reason"] == REASON and body["status"] == "voided"
    listed = client.get("/api/v1/me/prescriptions?per_page=50", headers=_headers(app, "patient"))
    items = listed.get_json()["items"]
    assert {i["status"] for i in items} >= {"queued", "voided", "rejected"}
    assert any(i["pharmacy"] and i["pharmacy"]["address"] for i in items)


def test_the_views_are_written_as_jsonify_writes_them(app: Any) -> None:
    """The read views are serialised by orjson (a page of 50 in a tenth of the time): the
    bytes must be jsonify's (sorted keys, compact, a final newline) for ASCII content, dates
    as Flask writes them, and the same JSON where text is not ASCII (UTF-8, not escapes)."""
    from dataclasses import dataclass
    from datetime import UTC, datetime

    from flask import jsonify

    from app.interfaces.conditional import serialise

    @dataclass
    class Point:
        x: int

    ascii_body = {
        "items": [{"b": 1, "a": [None, True, 2.5, "rx-000001"], "c": {"z": "", "y": -3}}],
        "total": 1,
        "when": datetime(2026, 11, 20, 10, 15, 8, tzinfo=UTC),
        "point": Point(4),
    }
    text_body = {"name": "Zoë Ōkubo “quoted” \\ / \u2028", "emoji": "\U0001f48a"}
    with app.app_context():
        assert serialise(ascii_body) == jsonify(ascii_body).get_data()
        written = serialise(text_body)
        assert json.loads(written) == json.loads(jsonify(text_body).get_data()) == text_body
        assert written.endswith(b"\n")
