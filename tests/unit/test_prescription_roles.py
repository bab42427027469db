"""Who may read, send and void a prescription, and what each role sees.

Real database (seeded per test), Flask test client, real development JWTs.
rx-000001 belongs to pt-0001 (Region B), rx-000017 to pt-0017 (Region A).
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.foundation.db import Database
from app.foundation.models import DispatchOutbox, Pharmacy, Prescription, StatusHistory
from app.mechanisms.history import Change, local, record
from app.services.pharmacies import display_address
from tests.conftest import bearer

OWNER = "pt-0001"
OTHER = "pt-0002"


def rx_id(db: Database, reference: str) -> int:
    with db.session() as session:
        value = session.scalar(select(Prescription.id).where(Prescription.reference == reference))
    assert value is not None
    return value


def branch_pharmacy(db: Database, branch_id: int = 17) -> int:
    with db.session() as session:
        value = session.scalar(select(Pharmacy.id).where(Pharmacy.branch_id == branch_id))
    assert value is not None
    return value


def counts(db: Database) -> tuple[int, int]:
    with db.session() as session:
        outbox = session.scalar(select(func.count()).select_from(DispatchOutbox)) or 0
        history = session.scalar(select(func.count()).select_from(StatusHistory)) or 0
    return outbox, history


def mark_issued(db: Database, pid: int, *, token: str = "SRXROLE0001") -> None:
    with db.session() as session:
        rx = session.get(Prescription, pid)
        assert rx is not None
        rx.platform_token = token
        rx.pharmacy_id = session.scalar(select(Pharmacy.id).where(Pharmacy.branch_id == 17))
        record(session, [Change(rx, local(rx, "issued", source="api"))])


def show(client, pid: int, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.get(f"/api/v1/prescriptions/{pid}", headers=headers)


# -- GET /prescriptions/<id> ----------------------------------------------------


def test_patient_reads_own_prescription_without_the_platform_token(
    app, client, seeded: Database
) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, "rx-000001")
    mark_issued(seeded, pid)

    resp = show(client, pid, bearer(app, role="patient", subject=OWNER))

    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "issued"
    assert "platform_token" not in body
    assert "SRXROLE0001" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("role", ["support", "service"])
def test_support_and_service_read_any_prescription_with_its_token(
    app, client, seeded: Database, role: str
) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, "rx-000001")
    mark_issued(seeded, pid)

    resp = show(client, pid, bearer(app, role=role, subject=f"staff-{role}"))

    assert resp.status_code == 200
    assert resp.get_json()["platform_token"] == "SRXROLE0001"


def test_another_patients_prescription_answers_exactly_like_a_missing_one(
    app, client, seeded: Database
) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, "rx-000001")
    headers = bearer(app, role="patient", subject=OTHER)

    other = show(client, pid, headers)
    missing = show(client, 999_999, headers)

    assert other.status_code == missing.status_code == 404
    assert other.get_json()["code"] == missing.get_json()["code"] == "not_found"
    assert other.get_json()["message"].replace(str(pid), "N") == missing.get_json()[
        "message"
    ].replace("999999", "N")


def test_view_has_pharmacy_address_and_medicines(app, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, "rx-000001")
    mark_issued(seeded, pid)
    with seeded.session() as session:
        rx = session.get(Prescription, pid)
        assert rx is not None and rx.pharmacy is not None
        pharmacy = {
            "id": rx.pharmacy.id,
            "name": rx.pharmacy.name,
            "address": display_address(rx.pharmacy),
        }
        lines = [
            {
                "vpid": m.vpid,
                "description": m.description,
                "quantity": m.quantity,
                "directions": m.directions,
            }
            for m in rx.medicines
        ]

    body = show(client, pid, bearer(app, role="patient", subject=OWNER)).get_json()

    assert body["pharmacy"] == pharmacy
    assert "," in body["pharmacy"]["address"] and "\n" not in body["pharmacy"]["address"]
    assert body["medicines"] == lines and lines
    assert body["region"] == "B"
    assert [h["to"] for h in body["history"]] == ["issued"]
    assert body["rejection"] is None


def test_draft_has_no_pharmacy(app, client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    body = show(
        client, rx_id(seeded, "rx-000001"), bearer(app, role="support", subject="s1")
    ).get_json()
    assert body["pharmacy"] is None
    assert body["dispatch"] is None


# -- POST /prescriptions/<id>/send ----------------------------------------------


def test_patient_sends_own_prescription(app, client, seeded: Database, with_credentials) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, "rx-000001")
    resp = client.post(
        f"/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": branch_pharmacy(seeded)},
        headers=bearer(app, role="patient", subject=OWNER),
    )
    assert resp.status_code == 202, resp.get_data(as_text=True)
    assert resp.get_json()["status"] == "queued"


def test_patient_sending_another_patients_prescription_gets_404_and_nothing_is_written(  # type: ignore[no-untyped-def]
    app, client, seeded: Database, with_credentials
) -> None:
    pid = rx_id(seeded, "rx-000001")
    before = counts(seeded)

    resp = client.post(
        f"/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": branch_pharmacy(seeded)},
        headers={**bearer(app, role="patient", subject=OTHER), "Idempotency-Key": "k-other"},
    )

    assert resp.status_code == 404
    assert resp.get_json()["code"] == "not_found"
    assert counts(seeded) == before


def test_another_patient_cannot_replay_the_owners_idempotent_answer(
    app, client, seeded: Database, with_credentials
) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, "rx-000001")
    url, body = f"/api/v1/prescriptions/{pid}/send", {"pharmacy_id": branch_pharmacy(seeded)}
    first = client.post(
        url,
        json=body,
        headers={**bearer(app, role="patient", subject=OWNER), "Idempotency-Key": "k1"},
    )
    assert first.status_code == 202

    replay = client.post(
        url,
        json=body,
        headers={**bearer(app, role="patient", subject=OTHER), "Idempotency-Key": "k1"},
    )

    assert replay.status_code == 404


def test_service_sends_any_prescription(app, client, seeded: Database, with_credentials) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, "rx-000001")
    resp = client.post(
        f"/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": branch_pharmacy(seeded)},
        headers=bearer(app, role="service", subject="svc"),
    )
    assert resp.status_code == 202


def test_support_may_not_send(app, client, seeded: Database, with_credentials) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, "rx-000001")
    before = counts(seeded)
    resp = client.post(
        f"/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": branch_pharmacy(seeded)},
        headers=bearer(app, role="support", subject="s1"),
    )
    assert resp.status_code == 403
    assert resp.get_json()["code"] == "forbidden"
    assert counts(seeded) == before


# -- POST /prescriptions/<id>/void: role rules (behaviour in test_void.py) ---------


@pytest.mark.parametrize("role", ["patient", "service"])
def test_only_support_may_void(app, client, seeded: Database, role: str) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, "rx-000001")
    before = counts(seeded)

    resp = client.post(
        f"/api/v1/prescriptions/{pid}/void",
        json={"reason": "duplicate"},
        headers=bearer(app, role=role, subject=OWNER),
    )

    assert resp.status_code == 403
    assert counts(seeded) == before
    with seeded.session() as session:
        rx = session.get(Prescription, pid)
        assert rx is not None and rx.status == "draft"


def test_void_without_a_token_is_401(client, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    resp = client.post(
        f"/api/v1/prescriptions/{rx_id(seeded, 'rx-000001')}/void", json={"reason": "x"}
    )
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
