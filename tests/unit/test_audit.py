"""The audit trail (issue 9, point 6): append-only, hash-chained, verifiable, exportable."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.audit import GENESIS_HASH, record, row_hash, verify
from app.db import Database, utcnow
from app.history import record_local_status
from app.models import AuditEvent, DispatchOutbox, Prescription, WebhookInbox
from tests.support import audit_triggers_suspended, find_phi, seeded_phi
from tests.unit.test_webhook_receiver import clock, deliver, event_body  # noqa: F401 (clock: a fixture)

T0 = datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC)


def add(db: Database, n: int = 1, *, prescription_id: int | None = 1, action: str = "read") -> list[int]:
    ids = []
    with db.session() as session:
        for i in range(n):
            event = record(
                session,
                actor=f"user-{i % 7}",
                role="support",
                action=action,
                prescription_id=prescription_id,
                request_id=f"rid-{i}",
                client_addr="10.0.0.7",
                now=T0 + timedelta(seconds=i),
            )
            ids.append(event.id)
    return ids


def count(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


def test_rows_chain_from_genesis_and_verify(seeded: Database) -> None:
    ids = add(seeded, 3)
    with seeded.session() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [r.id for r in rows] == ids
    assert rows[0].prev_hash == GENESIS_HASH
    assert rows[1].prev_hash == rows[0].hash and rows[2].prev_hash == rows[1].hash
    assert rows[0].occurred_at == T0 and rows[0].request_id == "rid-0" and rows[0].client_addr == "10.0.0.7"
    assert all(len(r.hash) == 64 for r in rows)
    assert verify(seeded).ok and verify(seeded).count == 3


def test_empty_chain_verifies(seeded: Database) -> None:
    assert verify(seeded) == verify(seeded).__class__(ok=True, count=0)


def test_hash_is_sha256_of_canonical_json() -> None:
    content = {"b": 1, "a": "é"}
    import hashlib

    assert row_hash(content) == hashlib.sha256('{"a":"é","b":1}'.encode()).hexdigest()


def test_record_rolls_back_with_the_callers_transaction(seeded: Database) -> None:
    with pytest.raises(RuntimeError), seeded.session() as session:
        record(session, actor="a", role="support", action="read", prescription_id=1, request_id=None,
               client_addr=None, now=T0)
        raise RuntimeError("caller failed")
    assert count(seeded) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"action": "peek"}, {"now": datetime(2026, 1, 1)}, {"actor": ""}, {"role": "x" * 33}, {"request_id": "r" * 101}],
    ids=["unknown-action", "naive-time", "no-actor", "long-role", "long-request-id"],
)
def test_record_refuses_bad_input(seeded: Database, kwargs: dict) -> None:
    values = {"actor": "a", "role": "support", "action": "read", "prescription_id": 1, "request_id": None,
              "client_addr": None, "now": T0, **kwargs}
    with pytest.raises(ValueError), seeded.session() as session:
        record(session, **values)
    assert count(seeded) == 0


def test_chain_of_1000_rows_verifies(seeded: Database) -> None:
    add(seeded, 1000)
    result = verify(seeded, batch=128)
    assert result.ok and result.count == 1000


def test_update_and_delete_are_refused(seeded: Database) -> None:
    add(seeded, 2)
    for statement in ("UPDATE audit_events SET actor = 'someone-else'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError) as caught, seeded.engine.begin() as conn:
            conn.execute(text(statement))
        assert "append-only" in str(caught.value.orig)
    assert count(seeded) == 2 and verify(seeded).ok


def test_truncate_is_refused_on_postgresql(seeded: Database) -> None:
    if not seeded.is_postgres:
        pytest.skip("TRUNCATE is PostgreSQL's")
    add(seeded, 1)
    with pytest.raises(DBAPIError) as caught, seeded.engine.begin() as conn:
        conn.execute(text("TRUNCATE audit_events"))
    assert "append-only" in str(caught.value.orig)
    assert count(seeded) == 1


def tamper(db: Database, statement: str, **params: object) -> None:
    """Change the table behind the triggers' back (as a superuser could)."""
    with db.engine.begin() as conn, audit_triggers_suspended(conn):
        conn.execute(text(statement), params)


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("UPDATE audit_events SET actor = 'mallory' WHERE id = :id", "hash does not match"),
        ("UPDATE audit_events SET occurred_at = occurred_at + INTERVAL '1 day' WHERE id = :id", "hash does not match"),
        ("UPDATE audit_events SET prescription_id = 99 WHERE id = :id", "hash does not match"),
        ("DELETE FROM audit_events WHERE id = :id", "prev_hash does not match"),
    ],
    ids=["actor", "time", "prescription", "deleted"],
)
def test_tampered_row_fails_verify_at_that_row(seeded: Database, statement: str, reason: str) -> None:
    ids = add(seeded, 10)
    if "INTERVAL" in statement and not seeded.is_postgres:
        statement = "UPDATE audit_events SET occurred_at = '2030-01-01 00:00:00.000000' WHERE id = :id"
    tamper(seeded, statement, id=ids[4])
    result = verify(seeded)
    assert not result.ok
    expected_bad = ids[5] if statement.startswith("DELETE") else ids[4]
    assert result.first_bad_id == expected_bad
    assert reason in (result.reason or "")


def test_rewritten_row_with_a_recomputed_hash_still_breaks_the_next_link(seeded: Database) -> None:
    ids = add(seeded, 5)
    with seeded.session() as session:
        row = session.get(AuditEvent, ids[2])
        assert row is not None
        content = {"actor": "mallory", "role": row.role, "action": row.action, "prescription_id": row.prescription_id,
                   "occurred_at": row.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "request_id": row.request_id,
                   "client_addr": row.client_addr, "prev_hash": row.prev_hash}
    tamper(seeded, "UPDATE audit_events SET actor = 'mallory', hash = :h WHERE id = :id", h=row_hash(content), id=ids[2])
    result = verify(seeded)
    assert not result.ok and result.first_bad_id == ids[3]


def test_two_concurrent_writers_never_fork_the_chain(seeded: Database) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(name: str) -> None:
        try:
            start.wait()
            for i in range(60):
                with seeded.session() as session:
                    record(session, actor=name, role="service", action="read", prescription_id=i,
                           request_id=None, client_addr=None, now=utcnow())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    result = verify(seeded)
    assert result.ok and result.count == 120


def test_a_fork_cannot_be_stored_even_without_the_lock(seeded: Database) -> None:
    add(seeded, 1)
    with seeded.session() as session:
        first = session.scalars(select(AuditEvent)).one()
        values = {c: getattr(first, c) for c in ("actor", "role", "action", "prescription_id", "occurred_at", "prev_hash")}
    with pytest.raises(IntegrityError), seeded.session() as session:
        session.add(AuditEvent(**values, hash="f" * 64))


# -- CLI: verify and export ----------------------------------------------------------------


def test_cli_verify_ok_and_broken(app, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    runner = app.test_cli_runner()
    ids = add(seeded, 4)
    ok = runner.invoke(args=["audit", "verify"])
    assert ok.exit_code == 0 and ok.output.strip() == "audit chain ok: 4 rows"
    tamper(seeded, "UPDATE audit_events SET role = 'patient' WHERE id = :id", id=ids[1])
    bad = runner.invoke(args=["audit", "verify"])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines() == [
        f"Error: audit chain broken at row {ids[1]}: hash does not match the row's content (2 rows checked)"
    ]


@pytest.mark.usefixtures("clock")
def test_cli_export_writes_the_prescriptions_complete_record(app, client, seeded: Database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    token = "SRXTEST0000001"
    with seeded.session() as session:
        rx = session.scalars(select(Prescription).where(Prescription.reference == "rx-000001")).one()
        other = session.scalars(select(Prescription).where(Prescription.reference == "rx-000002")).one()
        rx_id, other_id = rx.id, other.id
        record_local_status(session, rx, "queued", source="api", now=T0)
        session.add(DispatchOutbox(prescription_id=rx.id, flow="erx", state="done", attempts=1, next_attempt_at=T0,
                                   created_at=T0, updated_at=T0))
        rx.platform_token, rx.status = token, "issued"
    body = event_body("evt_export_1", token=token)
    assert deliver(client, body).status_code == 200
    assert deliver(client, event_body("evt_other", token="SRXOTHER0000002")).status_code == 200
    add(seeded, 2, prescription_id=rx_id)
    add(seeded, 1, prescription_id=other_id)

    out = tmp_path / "export.json"
    result = app.test_cli_runner().invoke(args=["audit", "export", str(rx_id), "--out", str(out), "--actor", "auditor-1"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"exported prescription {rx_id} to {out}: 1 transitions, 1 webhook events, 3 audit rows"
    )
    data = json.loads(out.read_text())
    assert data["format"] == "erx-audit-export/1"
    assert data["prescription"]["id"] == rx_id and data["prescription"]["reference"] == "rx-000001"
    assert data["prescription"]["platform_token"] == token
    assert [h["to_status"] for h in data["status_history"]] == ["queued"]
    assert data["dispatch"]["state"] == "done" and data["dispatch"]["attempts"] == 1
    [event] = data["webhook_events"]
    assert event["event_id"] == "evt_export_1" and event["body"].encode() == body
    with seeded.session() as session:
        stored = session.scalars(select(WebhookInbox).where(WebhookInbox.event_id == "evt_export_1")).one()
        assert event["id"] == stored.id
    actions = [(a["action"], a["actor"]) for a in data["audit_events"]]
    assert actions[-1] == ("export", "auditor-1")
    assert len(actions) == 3 and all(a["prev_hash"] and a["hash"] for a in data["audit_events"])
    # The record names ids and statuses: no seeded patient's PHI in it.
    assert find_phi(out.read_text().splitlines(), seeded_phi(seeded)) == []
    assert verify(seeded).ok


def test_cli_export_by_reference_to_stdout(app, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    result = app.test_cli_runner().invoke(args=["audit", "export", "rx-000003", "--actor", "a"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["prescription"]["reference"] == "rx-000003"
    assert data["status_history"] == [] and data["webhook_events"] == [] and data["dispatch"] is None
    assert [a["action"] for a in data["audit_events"]] == ["export"]


def test_cli_export_unknown_prescription_is_one_line(app, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    result = app.test_cli_runner().invoke(args=["audit", "export", "999999"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: no prescription 999999"]
    assert count(seeded) == 0
