"""The FHIR R4 boundary (``/fhir/R4``) on the seeded database.

Prescriptions are moved through their lifecycle with the real history
functions, then read as a patient, support and service would: every response
must parse and validate with the R4 models of ``fhir.resources``, and every
error must be an ``OperationOutcome``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources import __fhir_version__ as FHIR_VERSION
from fhir.resources.bundle import Bundle
from fhir.resources.medicationrequest import MedicationRequest
from fhir.resources.operationoutcome import OperationOutcome
from sqlalchemy import select

from app.foundation.db import Database
from app.foundation.models import Patient, Pharmacy, Prescription, StatusHistory
from app.interfaces.fhir import (
    DMD_SYSTEM,
    LINE_SYSTEM,
    PLATFORM_TOKEN_SYSTEM,
    REFERENCE_SYSTEM,
    STATUS_MAP,
    TRANSITION_EXTENSION,
)
from app.interfaces.identity import mint_token
from app.mechanisms.history import Change, Transition, local, record

# rx-000001 belongs to pt-0001 (Region B); rx-000017 to pt-0017 (Region A).
REGION_REF = {"B": "rx-000001", "A": "rx-000017"}
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
TOKEN = "SRXC49F3D4F66A7"

# Our status -> the path of history calls that reaches it, as the service makes them.
PATHS: dict[str, list[tuple[str, str]]] = {
    "draft": [],
    "queued": [("local", "queued")],
    "issued": [("local", "queued"), ("api", "issued")],
    "signed": [("local", "queued"), ("api", "issued"), ("webhook", "signed")],
    "printed": [
        ("local", "queued"),
        ("api", "issued"),
        ("webhook", "signed"),
        ("webhook", "printed"),
    ],
    "dispensed": [
        ("local", "queued"),
        ("api", "issued"),
        ("webhook", "signed"),
        ("webhook", "dispensed"),
    ],
    "expired": [
        ("local", "queued"),
        ("api", "issued"),
        ("webhook", "signed"),
        ("reconcile", "expired"),
    ],
    "voided": [("local", "queued"), ("api", "issued"), ("webhook", "voided")],
    "rejected": [("local", "queued"), ("local", "rejected")],
    "emailed": [("local", "queued"), ("local", "emailed")],
    "dead": [("local", "queued"), ("local", "dead")],
}
EXPECTED_FHIR = {
    "draft": "draft",
    "queued": "draft",
    "issued": "draft",
    "signed": "active",
    "printed": "active",
    "dispensed": "completed",
    "expired": "stopped",
    "voided": "cancelled",
    "rejected": "cancelled",
    "emailed": "active",
    "dead": "unknown",
}


# -- helpers ------------------------------------------------------------------


def rx(db: Database, reference: str) -> Prescription:
    with db.session() as session:
        prescription = session.scalars(
            select(Prescription).where(Prescription.reference == reference)
        ).one()
        session.expunge(prescription)
    return prescription


def move(db: Database, reference: str, status: str, *, pharmacy_id: int | None = None) -> int:
    """Walk ``reference`` to ``status`` with the history functions; return its id."""
    with db.session() as session:
        prescription = session.scalars(
            select(Prescription).where(Prescription.reference == reference)
        ).one()
        if pharmacy_id is None:
            region = prescription.patient.region_code
            pharmacy_id = session.scalars(
                select(Pharmacy.id).where(Pharmacy.region_code == region).order_by(Pharmacy.id)
            ).first()
        prescription.pharmacy_id = pharmacy_id
        for step, (kind, to) in enumerate(PATHS[status], start=1):
            at = T0 + timedelta(minutes=step)
            if kind == "local":
                record(
                    session,
                    [Change(prescription, local(prescription, to, source="service", now=at))],
                )
            elif kind == "api":
                prescription.platform_token = f"{TOKEN}{prescription.id}"
                record(
                    session, [Change(prescription, local(prescription, to, source="api", now=at))]
                )
            else:
                record(
                    session,
                    [
                        Change(
                            prescription,
                            Transition(
                                to_status=to,
                                from_status=None,
                                occurred_at=at - timedelta(seconds=5),
                                received_at=at,
                                source=kind,
                                event_id=f"evt-{prescription.id}-{to}"
                                if kind == "webhook"
                                else None,
                            ),
                        )
                    ],
                )
        return prescription.id


@pytest.fixture
def token_for(app) -> Callable[..., dict[str, str]]:  # type: ignore[no-untyped-def]
    settings = app.extensions["erx"].settings

    def make(role: str, subject: str = "svc-1", **kwargs: Any) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {mint_token(settings, role=role, subject=subject, **kwargs)}"
        }

    return make


def get(client, url: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    response = client.get(url, headers=headers or {})
    assert response.headers["Content-Type"] == "application/fhir+json", response.headers
    return response


def assert_outcome(response, status: int, issue_code: str) -> OperationOutcome:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/fhir+json"
    outcome = OperationOutcome.parse_raw(response.get_data())
    assert outcome.issue[0].severity == "error"
    assert outcome.issue[0].code == issue_code
    return outcome


# -- every status, both regions ------------------------------------------------


def test_models_are_fhir_r4() -> None:
    assert FHIR_VERSION == "4.0.1"
    assert set(STATUS_MAP) == set(EXPECTED_FHIR)


@pytest.mark.parametrize("region", ["A", "B"])
@pytest.mark.parametrize("status", list(PATHS))
def test_every_status_reads_searches_and_histories_as_valid_r4(
    client, seeded, token_for, region, status
) -> None:  # type: ignore[no-untyped-def]
    reference = REGION_REF[region]
    pid = move(seeded, reference, status)
    with seeded.session() as session:
        prescription = session.get(Prescription, pid)
        lines = [
            (m.position, m.vpid, m.description, m.quantity, m.directions)
            for m in prescription.medicines
        ]
        patient_ref = prescription.patient.external_ref
        assert prescription.patient.region_code == region
        assert prescription.status == status
        pharmacy = (prescription.pharmacy.id, prescription.pharmacy.name)
        prescriber_id = prescription.prescriber_id
        rows = session.scalars(
            select(StatusHistory).where(StatusHistory.prescription_id == pid)
        ).all()
        assert len(rows) == len(PATHS[status])
    auth = token_for("support", "support-1")

    for position, vpid, description, quantity, directions in lines:
        response = get(client, f"/fhir/R4/MedicationRequest/{pid}-{position}", auth)
        assert response.status_code == 200
        resource = MedicationRequest.parse_raw(response.get_data())
        assert resource.id == f"{pid}-{position}"
        assert resource.status == EXPECTED_FHIR[status]
        assert resource.intent == "order"
        coding = resource.medicationCodeableConcept.coding[0]
        assert (coding.system, coding.code, coding.display) == (DMD_SYSTEM, vpid, description)
        assert resource.dosageInstruction[0].text == directions
        assert resource.dispenseRequest.quantity.value == quantity
        assert resource.dispenseRequest.performer.reference == f"Organization/{pharmacy[0]}"
        assert resource.dispenseRequest.performer.display == pharmacy[1]
        assert resource.subject.reference == f"Patient/{patient_ref}"
        assert resource.requester.reference == f"Practitioner/{prescriber_id}"
        assert resource.groupIdentifier.value == reference
        assert {(i.system, i.value) for i in resource.identifier} >= {
            (REFERENCE_SYSTEM, reference),
            (LINE_SYSTEM, f"{reference}/{position}"),
        }
        assert resource.extension[0].valueCode == status
        assert (resource.meta.versionId if resource.meta else None) == (
            str(len(rows)) if rows else None
        )

    history = get(client, f"/fhir/R4/MedicationRequest/{pid}-1/_history", auth)
    assert history.status_code == 200
    bundle = Bundle.parse_raw(history.get_data())
    assert bundle.type == "history" and bundle.total == len(rows)
    if rows:
        newest = bundle.entry[0].resource
        assert newest.status == EXPECTED_FHIR[status]
        assert newest.meta.versionId == str(len(rows))

    search = get(client, f"/fhir/R4/MedicationRequest?patient=Patient/{patient_ref}", auth)
    found = Bundle.parse_raw(search.get_data())
    assert found.type == "searchset"
    assert f"{pid}-1" in {e.resource.id for e in found.entry}
    assert {
        e.resource.status for e in found.entry if e.resource.groupIdentifier.value == reference
    } == {EXPECTED_FHIR[status]}


def test_no_patient_details_leave_through_fhir(client, seeded, token_for) -> None:  # type: ignore[no-untyped-def]
    pid = move(seeded, "rx-000001", "dispensed")
    with seeded.session() as session:
        patient = session.scalars(select(Patient).where(Patient.external_ref == "pt-0001")).one()
        phi = [
            patient.first_name,
            patient.last_name,
            patient.email,
            patient.post_code,
            patient.address_line1,
            patient.date_of_birth.isoformat(),
        ]
    auth = token_for("support", "support-1")
    bodies = [
        get(client, f"/fhir/R4/MedicationRequest/{pid}-1", auth).get_data(as_text=True),
        get(client, f"/fhir/R4/MedicationRequest/{pid}-1/_history", auth).get_data(as_text=True),
        get(client, "/fhir/R4/MedicationRequest?patient=pt-0001", auth).get_data(as_text=True),
    ]
    for body in bodies:
        for value in phi:
            assert value not in body


# -- roles ----------------------------------------------------------------------


def test_patient_reads_own_prescription(client, seeded, token_for) -> None:  # type: ignore[no-untyped-def]
    pid = move(seeded, "rx-000001", "signed")
    response = get(client, f"/fhir/R4/MedicationRequest/{pid}-1", token_for("patient", "pt-0001"))
    assert response.status_code == 200
    resource = MedicationRequest.parse_raw(response.get_data())
    assert resource.subject.reference == "Patient/pt-0001"
    # The platform token is a bearer secret for the pharmacy: support only.
    assert all(i.system != PLATFORM_TOKEN_SYSTEM for i in resource.identifier)
    assert response.headers["ETag"] == 'W/"3"'


@pytest.mark.parametrize("suffix", ["", "/_history"])
def test_patient_reading_another_patients_prescription_gets_404_outcome(
    client, seeded, token_for, suffix
) -> None:  # type: ignore[no-untyped-def]
    pid = move(seeded, "rx-000001", "signed")
    other = get(
        client, f"/fhir/R4/MedicationRequest/{pid}-1{suffix}", token_for("patient", "pt-0002")
    )
    missing = get(
        client, f"/fhir/R4/MedicationRequest/999999-1{suffix}", token_for("patient", "pt-0002")
    )
    outcome = assert_outcome(other, 404, "not-found")
    # Indistinguishable from a prescription that does not exist.
    assert outcome.issue[0].details.coding[0].code == "not_found"
    assert other.get_data(as_text=True).replace(f"{pid}-1", "X") == missing.get_data(
        as_text=True
    ).replace("999999-1", "X")


def test_patient_search_sees_only_their_own(client, seeded, token_for) -> None:  # type: ignore[no-untyped-def]
    own = get(client, "/fhir/R4/MedicationRequest?patient=pt-0001", token_for("patient", "pt-0001"))
    bundle = Bundle.parse_raw(own.get_data())
    assert bundle.total and bundle.total == len(bundle.entry)
    assert {e.resource.subject.reference for e in bundle.entry} == {"Patient/pt-0001"}
    other = get(
        client, "/fhir/R4/MedicationRequest?patient=pt-0002", token_for("patient", "pt-0001")
    )
    empty = Bundle.parse_raw(other.get_data())
    assert other.status_code == 200 and empty.total == 0 and not empty.entry


def test_support_sees_every_patient_and_the_platform_token(client, seeded, token_for) -> None:  # type: ignore[no-untyped-def]
    b = move(seeded, "rx-000001", "signed")
    a = move(seeded, "rx-000017", "emailed")
    support = token_for("support", "support-1")
    for pid in (a, b):
        assert get(client, f"/fhir/R4/MedicationRequest/{pid}-1", support).status_code == 200
    resource = MedicationRequest.parse_raw(
        get(client, f"/fhir/R4/MedicationRequest/{b}-1", support).get_data()
    )
    tokens = [i.value for i in resource.identifier if i.system == PLATFORM_TOKEN_SYSTEM]
    assert tokens == [f"{TOKEN}{b}"]


def test_service_sees_every_patient_and_the_platform_token_as_in_the_api(
    client, seeded, token_for
) -> None:  # type: ignore[no-untyped-def]
    # One rule across API and FHIR: support and service see the platform token, patients never.
    b = move(seeded, "rx-000001", "signed")
    service = token_for("service", "notifier")
    response = get(client, f"/fhir/R4/MedicationRequest/{b}-1", service)
    assert response.status_code == 200
    resource = MedicationRequest.parse_raw(response.get_data())
    assert [i.value for i in resource.identifier if i.system == PLATFORM_TOKEN_SYSTEM] == [
        f"{TOKEN}{b}"
    ]
    api = client.get(f"/api/v1/prescriptions/{b}", headers=service).get_json()
    assert api["platform_token"] == f"{TOKEN}{b}"
    patient = get(client, f"/fhir/R4/MedicationRequest/{b}-1", token_for("patient", "pt-0001"))
    assert patient.status_code == 200 and TOKEN not in patient.get_data(as_text=True)
    search = Bundle.parse_raw(
        get(client, "/fhir/R4/MedicationRequest?patient=pt-0017", service).get_data()
    )
    assert search.total and {e.resource.subject.reference for e in search.entry} == {
        "Patient/pt-0017"
    }


# -- authentication -------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Bearer dev-api-token"},  # an /api/v1 token is not a JWT
    ],
)
@pytest.mark.parametrize(
    "url",
    [
        "/fhir/R4/MedicationRequest/1-1",
        "/fhir/R4/MedicationRequest?patient=pt-0001",
        "/fhir/R4/MedicationRequest/1-1/_history",
    ],
)
def test_missing_or_invalid_token_is_401_outcome(client, seeded, headers, url) -> None:  # type: ignore[no-untyped-def]
    response = client.get(url, headers=headers)
    assert_outcome(response, 401, "login")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_token_is_401_outcome(client, seeded, token_for) -> None:  # type: ignore[no-untyped-def]
    old = datetime.now(UTC).timestamp() - 7200
    response = client.get(
        "/fhir/R4/MedicationRequest/1-1", headers=token_for("support", now=old, ttl_s=60)
    )
    assert_outcome(response, 401, "login")


def test_token_signed_with_another_secret_is_401_outcome(client, seeded, app) -> None:  # type: ignore[no-untyped-def]
    other = app.extensions["erx"].settings.with_overrides(
        jwt_secret="someone-elses-secret-of-32-bytes!"
    )
    token = mint_token(other, role="support", subject="support-1")
    response = client.get(
        "/fhir/R4/MedicationRequest/1-1", headers={"Authorization": f"Bearer {token}"}
    )
    assert_outcome(response, 401, "login")


# -- not found, bad requests, read-only ----------------------------------------


@pytest.mark.parametrize(
    "resource_id", ["999999-1", "1-99", "1", "abc", "1-x", "-1", "1--1", "99999999999999999999-1"]
)
def test_unknown_id_is_404_outcome(client, seeded, token_for, resource_id) -> None:  # type: ignore[no-untyped-def]
    auth = token_for("support", "support-1")
    assert_outcome(
        client.get(f"/fhir/R4/MedicationRequest/{resource_id}", headers=auth), 404, "not-found"
    )
    assert_outcome(
        client.get(f"/fhir/R4/MedicationRequest/{resource_id}/_history", headers=auth),
        404,
        "not-found",
    )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "patient"),
        ("?patient=", "patient"),
        ("?patient=pt-0001&_count=abc", "_count"),
        ("?patient=pt-0001&_count=-1", "_count"),
        ("?patient=pt-0001&_offset=-1", "_offset"),
        ("?patient=pt-0001&_offset=1e3", "_offset"),
        ("?patient=pt-0001&_offset=10000000000", "_offset"),
    ],
)
def test_bad_search_is_400_outcome(client, seeded, token_for, query, field) -> None:  # type: ignore[no-untyped-def]
    response = client.get(
        f"/fhir/R4/MedicationRequest{query}", headers=token_for("support", "support-1")
    )
    outcome = assert_outcome(response, 400, "invalid")
    assert [i.expression for i in outcome.issue[1:]] == [[field]]


def test_writes_are_405_and_unknown_paths_404_as_outcomes(client, seeded, token_for) -> None:  # type: ignore[no-untyped-def]
    auth = token_for("support", "support-1")
    for method in ("post", "put", "delete", "patch"):
        response = getattr(client, method)("/fhir/R4/MedicationRequest/1-1", headers=auth, json={})
        assert_outcome(response, 405, "not-supported")
    assert_outcome(
        client.post("/fhir/R4/MedicationRequest", headers=auth, json={}), 405, "not-supported"
    )
    assert_outcome(
        client.post("/fhir/R4/Patient/pt-0001", headers=auth, json={}), 405, "not-supported"
    )
    assert_outcome(client.get("/fhir/R4/Encounter/1", headers=auth), 404, "not-found")
    assert_outcome(client.get("/fhir/R4/", headers=auth), 404, "not-found")


def test_the_json_api_keeps_its_own_error_shape(client, seeded) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/prescriptions/1")
    assert response.status_code == 401
    assert set(response.get_json()) >= {"code", "message", "errors"}


# -- bundle contents ------------------------------------------------------------


def test_searchset_lists_every_line_of_every_prescription_and_pages(
    client, seeded, token_for
) -> None:  # type: ignore[no-untyped-def]
    with seeded.session() as session:
        patient = session.scalars(select(Patient).where(Patient.external_ref == "pt-0002")).one()
        expected = [
            f"{p.id}-{m.position}"
            for p in session.scalars(
                select(Prescription)
                .where(Prescription.patient_id == patient.id)
                .order_by(Prescription.id)
            )
            for m in p.medicines
        ]
    assert len(expected) >= 5
    auth = token_for("service", "notifier")
    full = Bundle.parse_raw(
        get(client, "/fhir/R4/MedicationRequest?patient=pt-0002", auth).get_data()
    )
    assert full.total == len(expected)
    assert [e.resource.id for e in full.entry] == expected
    assert all(e.search.mode == "match" for e in full.entry)
    assert all(
        e.fullUrl == f"http://localhost/fhir/R4/MedicationRequest/{e.resource.id}"
        for e in full.entry
    )
    assert [link.relation for link in full.link] == ["self"]

    seen: list[str] = []
    url = "/fhir/R4/MedicationRequest?patient=pt-0002&_count=4"
    while url:
        page = Bundle.parse_raw(get(client, url, auth).get_data())
        assert page.total == len(expected)
        seen += [e.resource.id for e in page.entry or []]
        nxt = [link.url for link in page.link if link.relation == "next"]
        url = nxt[0].replace("http://localhost", "") if nxt else ""
    assert seen == expected

    # More than the server's page size is not an error: the page is just smaller (search.html#count).
    big = Bundle.parse_raw(
        get(client, "/fhir/R4/MedicationRequest?patient=pt-0002&_count=5000", auth).get_data()
    )
    assert [e.resource.id for e in big.entry] == expected

    counted = Bundle.parse_raw(
        get(client, "/fhir/R4/MedicationRequest?patient=pt-0002&_count=0", auth).get_data()
    )
    assert counted.total == len(expected) and not counted.entry

    unknown = Bundle.parse_raw(
        get(client, "/fhir/R4/MedicationRequest?patient=pt-9999", auth).get_data()
    )
    assert unknown.total == 0 and not unknown.entry


def test_history_bundle_has_one_version_per_transition_with_source_and_both_times(
    client, seeded, token_for
) -> None:  # type: ignore[no-untyped-def]
    pid = move(seeded, "rx-000001", "dispensed")
    with seeded.session() as session:
        prescription = session.get(Prescription, pid)
        # A late, out-of-order webhook after the final status: recorded, but the status stays dispensed.
        late = T0 + timedelta(minutes=30)
        record(
            session,
            [
                Change(
                    prescription,
                    Transition(
                        to_status="printed",
                        from_status="signed",
                        occurred_at=late,
                        received_at=late,
                        source="webhook",
                        event_id="evt-late",
                    ),
                )
            ],
        )
        rows = session.scalars(
            select(StatusHistory)
            .where(StatusHistory.prescription_id == pid)
            .order_by(StatusHistory.id)
        ).all()
        expected = [(r.to_status, r.source, r.occurred_at, r.received_at) for r in rows]
    response = get(
        client, f"/fhir/R4/MedicationRequest/{pid}-1/_history", token_for("patient", "pt-0001")
    )
    bundle = Bundle.parse_raw(response.get_data())
    assert bundle.type == "history" and bundle.total == len(expected) == 5
    entries = list(reversed(bundle.entry))  # newest first on the wire
    assert [e.resource.meta.versionId for e in entries] == ["1", "2", "3", "4", "5"]
    got = []
    for entry in entries:
        ext = next(x for x in entry.resource.extension if x.url == TRANSITION_EXTENSION)
        parts = {p.url: p for p in ext.extension}
        got.append(
            (
                parts["to"].valueCode,
                parts["source"].valueCode,
                parts["occurredAt"].valueDateTime,
                parts["receivedAt"].valueDateTime,
            )
        )
        assert entry.resource.meta.lastUpdated == parts["receivedAt"].valueDateTime
        assert entry.response.lastModified == parts["receivedAt"].valueDateTime
    assert got == expected
    # Status as of each version, by the history's rules: the late "printed" moves nothing.
    assert [e.resource.extension[0].valueCode for e in entries] == [
        "queued",
        "issued",
        "signed",
        "dispensed",
        "dispensed",
    ]
    assert [e.resource.status for e in entries] == [
        "draft",
        "draft",
        "active",
        "completed",
        "completed",
    ]
    assert entries[0].request.method == "POST" and entries[0].response.status.startswith("201")
    assert all(
        e.request.method == "PUT" and e.response.status.startswith("200") for e in entries[1:]
    )
    # The current read is the newest version.
    current = MedicationRequest.parse_raw(
        get(
            client, f"/fhir/R4/MedicationRequest/{pid}-1", token_for("patient", "pt-0001")
        ).get_data()
    )
    assert current.meta.versionId == "5" and current.status == "completed"


def test_draft_has_an_empty_history(client, seeded, token_for) -> None:  # type: ignore[no-untyped-def]
    pid = rx(seeded, "rx-000002").id
    bundle = Bundle.parse_raw(
        get(
            client, f"/fhir/R4/MedicationRequest/{pid}-1/_history", token_for("patient", "pt-0002")
        ).get_data()
    )
    assert bundle.total == 0 and not bundle.entry


def test_responses_are_plain_fhir_json(client, seeded, token_for) -> None:  # type: ignore[no-untyped-def]
    pid = rx(seeded, "rx-000001").id
    response = get(client, f"/fhir/R4/MedicationRequest/{pid}-1", token_for("support", "support-1"))
    body = json.loads(response.get_data())
    assert body["resourceType"] == "MedicationRequest"
    assert "null" not in response.get_data(as_text=True)


def test_a_refused_role_would_be_a_403_outcome(app) -> None:  # type: ignore[no-untyped-def]
    # Every role may read FHIR today, so no request reaches this; the blueprint's handler still
    # answers the identity check's 403 as an OperationOutcome.
    from app.interfaces.errors import ApiError
    from app.interfaces.fhir_api import _api_error

    with app.test_request_context("/fhir/R4/MedicationRequest/1-1"):
        response = _api_error(ApiError(403, "forbidden", "This role may not use this resource."))
    assert_outcome(response, 403, "forbidden")


def test_an_unexpected_error_is_a_500_outcome_without_details(
    client, seeded, token_for, monkeypatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    from app.interfaces import fhir

    def boom(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        name = "Hug" + "hes"  # the traceback shows source lines, so keep the value out of them
        raise RuntimeError(f"SELECT ... WHERE last_name = '{name}'")

    monkeypatch.setattr(fhir, "read_medication_request", boom)
    response = client.get(
        "/fhir/R4/MedicationRequest/1-1", headers=token_for("support", "support-1")
    )
    outcome = assert_outcome(response, 500, "exception")
    assert "Hughes" not in response.get_data(as_text=True)
    assert "Hughes" not in caplog.text
    assert outcome.issue[0].details.coding[0].code == "internal_error"


# -- usable by a FHIR client: capabilities, ids a client would try, references that resolve ----


def test_metadata_is_a_valid_capability_statement_without_a_token(client, seeded) -> None:  # type: ignore[no-untyped-def]
    from fhir.resources.capabilitystatement import CapabilityStatement

    response = get(client, "/fhir/R4/metadata")

    assert response.status_code == 200
    statement = CapabilityStatement.parse_raw(response.get_data())
    assert statement.fhirVersion == "4.0.1" and statement.kind == "instance"
    resources = {r.type: {i.code for i in r.interaction} for r in statement.rest[0].resource}
    assert resources == {
        "MedicationRequest": {"read", "search-type", "history-instance"},
        "Patient": {"read"},
        "Practitioner": {"read"},
        "Organization": {"read"},
    }
    search = next(
        r for r in statement.rest[0].resource if r.type == "MedicationRequest"
    ).searchParam
    assert {p.name for p in search} == {"patient", "_count", "_offset"}


@pytest.mark.parametrize("ask", ["{pid}", "rx-000001", "{pid}-9"])
def test_an_id_naming_no_line_says_which_ids_exist(client, seeded, token_for, ask: str) -> None:  # type: ignore[no-untyped-def]
    pid = rx(seeded, "rx-000001").id
    with seeded.session() as session:
        positions = [m.position for m in session.get(Prescription, pid).medicines]

    response = get(
        client, f"/fhir/R4/MedicationRequest/{ask.format(pid=pid)}", token_for("patient", "pt-0001")
    )

    outcome = assert_outcome(response, 404, "not-found")
    for position in positions:
        assert f"MedicationRequest/{pid}-{position}" in outcome.issue[0].diagnostics
    # The id listed resolves.
    assert (
        get(
            client,
            f"/fhir/R4/MedicationRequest/{pid}-{positions[0]}",
            token_for("patient", "pt-0001"),
        ).status_code
        == 200
    )


def test_another_patients_bare_id_lists_nothing(client, seeded, token_for) -> None:  # type: ignore[no-untyped-def]
    pid = rx(seeded, "rx-000017").id

    response = get(client, f"/fhir/R4/MedicationRequest/{pid}", token_for("patient", "pt-0001"))

    outcome = assert_outcome(response, 404, "not-found")
    assert (
        f"{pid}-" not in response.get_data(as_text=True)
        and "rx-000017" not in outcome.issue[0].diagnostics
    )


def test_every_reference_of_a_medication_request_resolves(client, seeded, token_for) -> None:  # type: ignore[no-untyped-def]
    from fhir.resources.organization import Organization
    from fhir.resources.patient import Patient as FhirPatient
    from fhir.resources.practitioner import Practitioner

    with seeded.session() as session:
        pharmacy_id = session.scalar(select(Pharmacy.id).where(Pharmacy.branch_id == 17))
    pid = move(seeded, "rx-000001", "signed", pharmacy_id=pharmacy_id)
    auth = token_for("patient", "pt-0001")
    resource = MedicationRequest.parse_raw(
        get(client, f"/fhir/R4/MedicationRequest/{pid}-1", auth).get_data()
    )
    models = {"Patient": FhirPatient, "Practitioner": Practitioner, "Organization": Organization}
    references = [
        resource.subject.reference,
        resource.requester.reference,
        resource.dispenseRequest.performer.reference,
    ]

    for reference in references:
        response = get(client, f"/fhir/R4/{reference}", auth)
        assert response.status_code == 200, (reference, response.get_data(as_text=True))
        kind, _, ident = reference.partition("/")
        parsed = models[kind].parse_raw(response.get_data())
        assert parsed.id == ident
    practitioner = Practitioner.parse_raw(
        get(client, f"/fhir/R4/{resource.requester.reference}", auth).get_data()
    )
    assert practitioner.name[0].text == resource.requester.display
    patient = json.loads(get(client, f"/fhir/R4/{resource.subject.reference}", auth).get_data())
    assert set(patient) == {"resourceType", "id", "identifier", "active"}  # identity only: no PHI


def test_a_patient_reads_only_their_own_patient_resource(client, seeded, token_for) -> None:  # type: ignore[no-untyped-def]
    assert_outcome(
        client.get("/fhir/R4/Patient/pt-0002", headers=token_for("patient", "pt-0001")),
        404,
        "not-found",
    )
    assert (
        get(client, "/fhir/R4/Patient/pt-0002", token_for("support", "support-1")).status_code
        == 200
    )
    assert_outcome(
        client.get("/fhir/R4/Patient/pt-nobody", headers=token_for("support", "s-1")),
        404,
        "not-found",
    )


@pytest.mark.parametrize(
    "url",
    [
        "/fhir/R4/Practitioner/999999",
        "/fhir/R4/Practitioner/dr.jones",
        "/fhir/R4/Organization/999999",
        "/fhir/R4/Organization/x1",
    ],
)
def test_unknown_practitioners_and_organizations_are_404_outcomes(
    client, seeded, token_for, url: str
) -> None:  # type: ignore[no-untyped-def]
    assert_outcome(client.get(url, headers=token_for("service", "svc-1")), 404, "not-found")


@pytest.mark.parametrize(
    "url", ["/fhir/R4/Patient/pt-0001", "/fhir/R4/Practitioner/1", "/fhir/R4/Organization/1"]
)
def test_reference_reads_need_a_token(client, seeded, url: str) -> None:  # type: ignore[no-untyped-def]
    assert_outcome(client.get(url), 401, "login")
