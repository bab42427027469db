"""Every read and change of a prescription leaves one audit row (who, as what,
did what, to which prescription, request id, client address), a refused call
leaves none, and the chain still verifies after the whole flow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from app import create_app
from app.foundation.db import Database
from app.foundation.models import AuditEvent, Pharmacy, Prescription
from app.mechanisms.audit_keys import parse_private_keys
from app.mechanisms.audit_sealer import seal_once, verify
from tests.conftest import bearer, make_settings
from tests.unit.test_webhook_receiver import clock, deliver, event_body  # noqa: F401 (clock: a fixture)
from webhooks.processing import InboxProcessor

Row = tuple[str, str, str, int | None]


def rows(db: Database, after: int = 0) -> list[AuditEvent]:
    with db.session() as session:
        found = session.scalars(
            select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id)
        ).all()
        session.expunge_all()
        return list(found)


def summary(db: Database, after: int = 0) -> list[Row]:
    return [(r.actor, r.role, r.action, r.prescription_id) for r in rows(db, after)]


def last_id(db: Database) -> int:
    found = rows(db)
    return found[-1].id if found else 0


def rx_id(db: Database, reference: str) -> int:
    with db.session() as session:
        return session.scalars(
            select(Prescription.id).where(Prescription.reference == reference)
        ).one()


@pytest.fixture
def ids(seeded: Database) -> Iterator[dict[str, int]]:
    # rx-000001, rx-000025 and rx-000049 belong to pt-0001, rx-000002 to pt-0002 (scripts/seed/002).
    with seeded.session() as session:
        pharmacy = session.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 17)).one()
    yield {
        "own": rx_id(seeded, "rx-000001"),
        "own2": rx_id(seeded, "rx-000025"),
        "own3": rx_id(seeded, "rx-000049"),
        "other": rx_id(seeded, "rx-000002"),
        "pharmacy": pharmacy,
    }


def test_each_api_read_and_change_writes_one_row(
    app, client, seeded, with_credentials, ids
) -> None:  # type: ignore[no-untyped-def]
    patient = bearer(app, role="patient", subject="pt-0001")
    service = bearer(app, role="service", subject="svc-7")
    support = bearer(app, role="support", subject="agent-3")
    own, other = ids["own"], ids["other"]

    resp = client.post(
        f"/api/v1/prescriptions/{own}/send",
        json={"pharmacy_id": ids["pharmacy"]},
        headers={**service, "X-Request-ID": "req-send-1"},
    )
    assert resp.status_code == 202, resp.get_data(as_text=True)
    [send] = rows(seeded)
    assert (send.actor, send.role, send.action, send.prescription_id) == (
        "svc-7",
        "service",
        "send",
        own,
    )
    assert send.request_id == "req-send-1" and send.client_addr == "127.0.0.1"

    mark = last_id(seeded)
    assert client.get(f"/api/v1/prescriptions/{own}", headers=patient).status_code == 200
    read = rows(seeded, mark)
    assert [(r.actor, r.role, r.action, r.prescription_id) for r in read] == [
        ("pt-0001", "patient", "read", own)
    ]
    assert read[0].request_id and read[0].occurred_at is not None

    mark = last_id(seeded)
    page = client.get("/api/v1/me/prescriptions", headers=patient)
    assert page.status_code == 200
    shown = [item["id"] for item in page.get_json()["items"]]
    # One access, one row: it names every prescription the page showed, in the order shown.
    [listed] = rows(seeded, mark)
    assert (listed.actor, listed.role, listed.action, listed.prescription_id) == (
        "pt-0001",
        "patient",
        "list",
        None,
    )
    assert listed.prescription_ids == shown and set(shown) == {own, ids["own2"], ids["own3"]}

    mark = last_id(seeded)
    assert (
        client.post(
            f"/api/v1/prescriptions/{other}/void", json={"reason": "duplicate"}, headers=support
        ).status_code
        == 200
    )
    assert summary(seeded, mark) == [("agent-3", "support", "void", other)]


def test_each_fhir_read_writes_one_row(app, client, seeded, ids) -> None:  # type: ignore[no-untyped-def]
    support = bearer(app, role="support", subject="agent-3")
    own = ids["own"]
    assert client.get(f"/fhir/R4/MedicationRequest/{own}-1", headers=support).status_code == 200
    assert (
        client.get(f"/fhir/R4/MedicationRequest/{own}-1/_history", headers=support).status_code
        == 200
    )
    mark = last_id(seeded)
    assert (
        client.get("/fhir/R4/MedicationRequest?patient=pt-0001", headers=support).status_code == 200
    )
    [searched] = rows(seeded, mark)
    assert summary(seeded)[:2] == [
        ("agent-3", "support", "fhir-read", own),
        ("agent-3", "support", "fhir-history", own),
    ]
    assert (searched.actor, searched.role, searched.action) == ("agent-3", "support", "fhir-search")
    assert searched.prescription_id is None
    assert sorted(searched.prescription_ids) == sorted([own, ids["own2"], ids["own3"]])


def test_a_read_that_showed_nothing_is_still_one_row(app, client, seeded) -> None:  # type: ignore[no-untyped-def]
    # A page past the end, and a FHIR search that matched none: both are accesses.
    patient = bearer(app, role="patient", subject="pt-0001")
    support = bearer(app, role="support", subject="agent-3")
    mark = last_id(seeded)
    past_the_end = client.get("/api/v1/me/prescriptions?page=99", headers=patient)
    assert past_the_end.status_code == 200 and past_the_end.get_json()["items"] == []
    assert (
        client.get("/fhir/R4/MedicationRequest?patient=pt-9999", headers=support).status_code == 200
    )
    found = rows(seeded, mark)
    assert [(r.actor, r.action, r.prescription_id, r.prescription_ids) for r in found] == [
        ("pt-0001", "list", None, []),
        ("agent-3", "fhir-search", None, []),
    ]


def test_refused_calls_write_no_row(app, client, seeded, with_credentials, ids) -> None:  # type: ignore[no-untyped-def]
    patient = bearer(app, role="patient", subject="pt-0001")
    own, other = ids["own"], ids["other"]
    answers = [
        client.get(f"/api/v1/prescriptions/{own}").status_code,  # no token
        client.get(
            f"/api/v1/prescriptions/{other}", headers=patient
        ).status_code,  # another patient's
        client.post(
            f"/api/v1/prescriptions/{own}/void", json={"reason": "x"}, headers=patient
        ).status_code,
        client.post(
            f"/api/v1/prescriptions/{other}/send",
            json={"pharmacy_id": ids["pharmacy"]},
            headers=patient,
        ).status_code,
        client.get(f"/fhir/R4/MedicationRequest/{other}-1", headers=patient).status_code,
        client.get(
            "/api/v1/prescriptions/999999", headers=bearer(app, role="support", subject="a")
        ).status_code,
    ]
    assert answers == [401, 404, 403, 404, 404, 404]
    assert rows(seeded) == []


@pytest.mark.usefixtures("clock")
def test_an_applied_webhook_is_audited_as_the_platform(client, seeded, ids) -> None:  # type: ignore[no-untyped-def]
    token = "SRXAUDIT000001"
    with seeded.session() as session:
        rx = session.get(Prescription, ids["own"])
        rx.platform_token, rx.status = token, "issued"
    assert deliver(client, event_body("evt_audit_1", token=token)).status_code == 200
    assert InboxProcessor(seeded, worker_id="w-audit").run_batch() == 1
    assert summary(seeded) == [("platform", "platform", "webhook-applied", ids["own"])]
    keys = parse_private_keys(
        ("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",), origin="erx.test/audit"
    )
    assert seal_once(seeded, keys, origin="erx.test/audit").sealed == 1
    assert verify(seeded, keys, full=True).ok


def test_client_address_comes_from_the_trusted_proxy(db_url: str, seeded: Database, ids) -> None:  # type: ignore[no-untyped-def]
    behind = create_app(make_settings(db_url, trusted_proxies=1), db=seeded)
    support = bearer(behind, role="support", subject="agent-3")
    headers = {**support, "X-Forwarded-For": "203.0.113.9"}
    assert (
        behind.test_client().get(f"/api/v1/prescriptions/{ids['own']}", headers=headers).status_code
        == 200
    )
    [row] = rows(seeded)
    assert row.client_addr == "203.0.113.9"


def test_the_chain_verifies_after_a_whole_flow(
    app, client, runner, seeded, with_credentials, ids
) -> None:  # type: ignore[no-untyped-def]
    service = bearer(app, role="service", subject="svc-7")
    support = bearer(app, role="support", subject="agent-3")
    for key in ("own", "own2"):
        assert (
            client.post(
                f"/api/v1/prescriptions/{ids[key]}/send",
                json={"pharmacy_id": ids["pharmacy"]},
                headers=service,
            ).status_code
            == 202
        )
        assert client.get(f"/api/v1/prescriptions/{ids[key]}", headers=support).status_code == 200
    assert (
        client.post(
            f"/api/v1/prescriptions/{ids['own2']}/void",
            json={"reason": "duplicate"},
            headers=support,
        ).status_code
        == 200
    )
    assert [r[2] for r in summary(seeded)] == ["send", "read", "send", "read", "void"]
    assert runner.invoke(args=["audit", "seal"]).exit_code == 0
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0
    assert result.output.strip().splitlines()[-1] == (
        "audit log ok: 5 sealed rows, 5 checked from leaf 0, 1 checkpoints"
    )


@pytest.mark.parametrize("conditional", [False, True], ids=["plain GET", "If-None-Match"])
def test_a_page_is_recorded_by_the_same_rule_however_it_is_read(
    client: Any, seeded: Database, conditional: bool
) -> None:
    """A plain GET writes its audit row in the page's own statement (PostgreSQL), a conditional
    one after it: both follow Access.record's rule. A page of exactly one prescription is a
    row naming it; a page of several one row listing them, in the order shown."""
    patient = bearer(client.application, role="patient", subject="pt-0001")
    for per_page in (1, 3):
        url = f"/api/v1/me/prescriptions?per_page={per_page}"
        extra = {"If-None-Match": '"no-such-tag"'} if conditional else {}
        mark = last_id(seeded)
        page = client.get(url, headers=patient | extra)
        assert page.status_code == 200
        shown = [item["id"] for item in page.get_json()["items"]]
        [row] = rows(seeded, mark)
        assert row.action == "list"
        if per_page == 1:
            assert (row.prescription_id, row.prescription_ids) == (shown[0], None)
        else:
            assert (row.prescription_id, row.prescription_ids) == (None, shown)
