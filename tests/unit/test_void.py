"""``POST /api/v1/prescriptions/<id>/void`` (support): platform void, local void, refusals.

Real database, Flask test client, the fake platform on ``responses`` (contract
§1 auth and §5 void). The connector call happens outside any transaction; a
refusal or an unreachable platform leaves the database exactly as it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import responses
from sqlalchemy import func, select

from app.foundation.config import Settings
from app.foundation.db import Database, utcnow
from app.foundation.models import DispatchOutbox, EmailIntent, Pharmacy, Prescription, StatusHistory
from app.mechanisms.history import Change, local, record
from app.services.dispatch import Dispatcher
from connector import ConnectorClient, ConnectorSettings
from tests.conftest import bearer, make_settings
from tests.support import (
    BASE,
    CLIENT_ID,
    CLIENT_SECRET,
    RX_URL,
    FakePlatform,
    claimed_ids,
    service_platform,
)

TOKEN = "SRXVOID00001"
VOID_URL = f"{RX_URL}/{TOKEN}/void"
REASON = "Prescribed twice by mistake (ticket 4411)"


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    # The app's own connector talks to the fake platform.
    return make_settings(
        db_url,
        mail_dir=str(tmp_path / "mail"),
        erx_base_url=BASE,
        erx_client_id=CLIENT_ID,
        erx_client_secret=CLIENT_SECRET,
    )


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def platform(rsps: responses.RequestsMock) -> FakePlatform:
    return service_platform(rsps)


@pytest.fixture
def support(app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return bearer(app, role="support", subject="support-7")


def rx_id(db: Database, reference: str = "rx-000001") -> int:
    with db.session() as session:
        value = session.scalar(select(Prescription.id).where(Prescription.reference == reference))
    assert value is not None
    return value


def branch_pharmacy(db: Database) -> int:
    with db.session() as session:
        value = session.scalar(select(Pharmacy.id).where(Pharmacy.branch_id == 17))
    assert value is not None
    return value


def set_status(db: Database, pid: int, status: str, *, token: str | None = TOKEN) -> None:
    with db.session() as session:
        rx = session.get(Prescription, pid)
        assert rx is not None
        rx.platform_token = token
        record(session, [Change(rx, local(rx, status, source="api"))])


def state(db: Database, pid: int) -> tuple[str, int, tuple[tuple[str, str | None], ...]]:
    with db.session() as session:
        rx = session.get(Prescription, pid)
        assert rx is not None
        rows = session.execute(
            select(StatusHistory.to_status, StatusHistory.source)
            .where(StatusHistory.prescription_id == pid)
            .order_by(StatusHistory.id)
        ).all()
        outbox = session.scalar(select(func.count()).select_from(DispatchOutbox)) or 0
    return rx.status, outbox, tuple((to, source) for to, source in rows)


def void(client, pid: int, headers: dict[str, str], reason: str = REASON):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/v1/prescriptions/{pid}/void", json={"reason": reason}, headers=headers
    )


def void_calls(rsps: responses.RequestsMock) -> list[dict]:
    return [json.loads(c.request.body) for c in rsps.calls if c.request.url == VOID_URL]


# -- issued: voided at the platform ---------------------------------------------------


@pytest.mark.parametrize("status", ["issued", "signed", "printed"])
def test_open_prescription_is_voided_at_the_platform_and_recorded(  # type: ignore[no-untyped-def]
    client, seeded: Database, with_credentials, platform, rsps, support, status: str
) -> None:
    pid = rx_id(seeded)
    set_status(seeded, pid, status)
    rsps.add(
        responses.POST,
        VOID_URL,
        json={"success": True, "data": {"prescription": {"id": TOKEN, "status": "voided"}}},
    )

    resp = void(client, pid, support)

    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["status"] == "voided"
    assert body["platform_token"] == TOKEN  # support sees it
    assert void_calls(rsps) == [{"reason": REASON}]
    last = body["history"][-1]
    assert (last["from"], last["to"], last["source"]) == (status, "voided", "operator")
    assert (last["reason"], last["actor"]) == (
        REASON,
        "support:support-7",
    )  # the timeline says why and who
    with seeded.session() as session:
        row = session.scalars(
            select(StatusHistory).where(
                StatusHistory.prescription_id == pid, StatusHistory.to_status == "voided"
            )
        ).one()
        assert row.detail == REASON


def test_the_reason_is_never_logged(
    client, seeded, with_credentials, platform, rsps, support, caplog
) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded)
    set_status(seeded, pid, "issued")
    rsps.add(
        responses.POST,
        VOID_URL,
        json={"success": True, "data": {"prescription": {"id": TOKEN, "status": "voided"}}},
    )

    with caplog.at_level(logging.DEBUG):
        assert void(client, pid, support).status_code == 200

    assert "ticket 4411" not in caplog.text
    assert TOKEN not in caplog.text


def test_platform_invalid_transition_is_409_already_final_and_nothing_recorded(  # type: ignore[no-untyped-def]
    client, seeded, with_credentials, platform, rsps, support
) -> None:
    pid = rx_id(seeded)
    set_status(seeded, pid, "signed")
    before = state(seeded, pid)
    rsps.add(
        responses.POST,
        VOID_URL,
        json={"success": False, "code": "invalid_transition", "message": "Cannot void"},
    )

    resp = void(client, pid, support)

    assert resp.status_code == 409
    assert resp.get_json()["code"] == "already_final"
    assert state(seeded, pid) == before


@pytest.mark.parametrize(
    "failure",
    [
        {"body": requests.ConnectionError("connection refused")},
        {"status": 503, "json": {"success": False, "message": "maintenance"}},
    ],
    ids=["unreachable", "503"],
)
def test_platform_down_is_503_and_nothing_recorded(  # type: ignore[no-untyped-def]
    client, seeded, with_credentials, platform, rsps, support, failure
) -> None:
    pid = rx_id(seeded)
    set_status(seeded, pid, "issued")
    before = state(seeded, pid)
    rsps.add(responses.POST, VOID_URL, **failure)

    resp = void(client, pid, support)

    assert resp.status_code == 503, resp.get_data(as_text=True)
    body = resp.get_json()
    assert {"code", "message", "errors"} <= set(body)
    assert state(seeded, pid) == before


def test_prescriber_without_credentials_is_503_naming_their_login(  # type: ignore[no-untyped-def]
    client, seeded, platform, rsps, support
) -> None:
    pid = rx_id(seeded)
    set_status(seeded, pid, "issued")
    before = state(seeded, pid)
    with seeded.session() as session:
        prescriber = session.get(Prescription, pid).prescriber  # type: ignore[union-attr]
        login, internal_id = prescriber.email, prescriber.id

    resp = void(client, pid, support)

    assert resp.status_code == 503, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["code"] == "prescriber_credentials_missing"
    # Support knows the prescriber by login, never by the internal id.
    assert f"Prescriber {login} has no usable platform credentials" in body["message"]
    assert f"Prescriber {internal_id} " not in body["message"]
    assert void_calls(rsps) == [] and state(seeded, pid) == before


# -- final: 409 without a platform call -------------------------------------------------


@pytest.mark.parametrize("status", ["dispensed", "expired", "voided", "rejected", "emailed"])
def test_final_prescription_is_409_already_final(
    client, seeded, platform, rsps, support, status: str
) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded)
    set_status(
        seeded, pid, status, token=TOKEN if status in ("dispensed", "expired", "voided") else None
    )
    before = state(seeded, pid)

    resp = void(client, pid, support)

    assert resp.status_code == 409
    body = resp.get_json()
    assert body["code"] == "already_final"
    assert body["current_status"] == status
    assert void_calls(rsps) == []
    assert state(seeded, pid) == before


# -- not yet issued: voided locally ------------------------------------------------------


def test_queued_prescription_is_voided_locally_and_never_sent(  # type: ignore[no-untyped-def]
    app, client, seeded, with_credentials, platform, rsps, support, settings
) -> None:
    pid = rx_id(seeded)
    sent = client.post(
        f"/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": branch_pharmacy(seeded)},
        headers=bearer(app, role="service", subject="svc"),
    )
    assert sent.status_code == 202

    resp = void(client, pid, support)

    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["status"] == "voided"
    assert [(h["from"], h["to"], h["source"]) for h in body["history"]] == [
        ("draft", "queued", "service"),
        ("queued", "voided", "operator"),
    ]
    assert body["dispatch"]["state"] == "done"
    with ConnectorClient(
        ConnectorSettings(base_url=BASE, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    ) as erx:
        assert Dispatcher(seeded, settings, erx, worker_id="w1").run_batch() == 0
    assert platform.posts == []
    assert void_calls(rsps) == []


def test_draft_prescription_is_voided_locally(client, seeded, platform, rsps, support) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded)

    resp = void(client, pid, support)

    assert resp.status_code == 200
    assert resp.get_json()["status"] == "voided"
    assert state(seeded, pid)[2] == (("voided", "operator"),)
    assert void_calls(rsps) == []


def test_queued_prescription_a_worker_holds_is_409_and_left_alone(  # type: ignore[no-untyped-def]
    app, client, seeded, with_credentials, support
) -> None:
    pid = rx_id(seeded)
    assert (
        client.post(
            f"/api/v1/prescriptions/{pid}/send",
            json={"pharmacy_id": branch_pharmacy(seeded)},
            headers=bearer(app, role="service", subject="svc"),
        ).status_code
        == 202
    )
    assert claimed_ids(seeded, DispatchOutbox, worker_id="w1", now=utcnow(), lease_s=120, limit=10)
    before = state(seeded, pid)

    resp = void(client, pid, support)

    assert resp.status_code == 409
    assert resp.get_json()["code"] == "dispatch_in_progress"
    assert state(seeded, pid) == before


# -- input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reason": ""},
        {"reason": "   "},
        {"reason": 7},
        {"reason": "x" * 501},
        {"reason": "ok", "extra": 1},
    ],
    ids=["missing", "empty", "blank", "number", "too-long", "unknown-field"],
)
def test_bad_void_body_is_422_and_writes_nothing(client, seeded, support, body) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded)
    before = state(seeded, pid)

    resp = client.post(f"/api/v1/prescriptions/{pid}/void", json=body, headers=support)

    assert resp.status_code == 422
    assert resp.get_json()["code"] == "validation_error"
    assert state(seeded, pid) == before


def test_void_of_unknown_prescription_is_404(client, seeded, support) -> None:  # type: ignore[no-untyped-def]
    resp = void(client, 999_999, support)
    assert resp.status_code == 404
    assert resp.get_json()["code"] == "not_found"


@pytest.mark.parametrize("stage", ["data", "accepted", "in_doubt"])
def test_region_a_email_that_may_have_left_is_not_voided_locally(
    client, seeded, support, stage: str
) -> None:  # type: ignore[no-untyped-def]
    pid = rx_id(seeded, "rx-000017")
    now = utcnow()
    with seeded.session() as session:
        rx = session.get(Prescription, pid)
        assert rx is not None
        record(session, [Change(rx, local(rx, "queued", source="service"))])
        session.add(
            EmailIntent(
                prescription_id=pid,
                message_id=f"<{pid}@test>",
                recipient="pharmacy@example.test",
                stage=stage,
                attempts=1,
                created_at=now,
                updated_at=now,
            )
        )
    before = state(seeded, pid)

    resp = void(client, pid, support)

    assert resp.status_code == 409
    assert resp.get_json()["code"] == "dispatch_in_progress"
    assert state(seeded, pid) == before
