"""The audit trail: lock-free appends, the Merkle sealer, verify, export and the offline check."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from app.foundation.db import Database
from app.foundation.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditLeaf,
    DispatchOutbox,
    Prescription,
    WebhookInbox,
)
from app.mechanisms import history
from app.mechanisms.audit import (
    PLATFORM,
    Accessor,
    append_many,
    leaf_data,
    record,
    record_list,
    row_content,
    row_hash,
)
from app.mechanisms.audit_keys import SigningKey, checkpoint_text, parse_private_keys, sign_note
from app.mechanisms.audit_sealer import seal_once, verify
from app.mechanisms.merkle import root_of
from tests.support import audit_triggers_suspended, find_phi, seeded_phi
from tests.unit.test_webhook_receiver import clock, deliver, event_body  # noqa: F401 (clock: a fixture)

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC)
ORIGIN = "erx-connector.test/audit"
KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(1, 33))).decode()
KEYS: tuple[SigningKey, ...] = parse_private_keys((KEY_A,), origin=ORIGIN)
LONG = 1e9  # an unsealed-age limit no test row reaches


def add(
    db: Database,
    n: int = 1,
    *,
    prescription_id: int | None = 1,
    action: str = "read",
    at: datetime = T0,
) -> list[int]:
    ids = []
    with db.session() as session:
        for i in range(n):
            ids.append(
                record(
                    session,
                    actor=f"user-{i % 7}",
                    role="support",
                    action=action,
                    prescription_id=prescription_id,
                    request_id=f"rid-{i}",
                    client_addr="10.0.0.7",
                    now=at + timedelta(seconds=i),
                )
            )
    return ids


def seal(db: Database, keys: tuple[SigningKey, ...] = KEYS) -> int:
    return seal_once(db, keys, origin=ORIGIN, now=lambda: T0).sealed


def count(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


def tamper(db: Database, statement: str, **params: object) -> None:
    """Change the table behind the triggers' back (as a superuser could)."""
    with db.engine.begin() as conn, audit_triggers_suspended(conn):
        conn.execute(text(statement), params)


def problems(db: Database, keys: tuple[SigningKey, ...] = KEYS, **kwargs: object) -> list[str]:
    return list(
        verify(db, keys, full=True, max_unsealed_age_s=LONG, now=lambda: T0, **kwargs).problems
    )


def test_append_is_one_insert_and_reads_nothing(seeded: Database) -> None:
    statements: list[str] = []

    def seen(_conn, _cursor, statement, _params, _context, _many):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(seeded.engine, "before_cursor_execute", seen)
    try:
        with seeded.session() as session:
            append_many(
                session, PLATFORM, action="webhook-applied", prescription_ids=[1, 2, 3], now=T0
            )
            record(
                session,
                actor="a",
                role="support",
                action="read",
                prescription_id=4,
                request_id=None,
                client_addr=None,
                now=T0,
            )
    finally:
        event.remove(seeded.engine, "before_cursor_execute", seen)
    work = [s for s in statements if not s.startswith(("BEGIN", "COMMIT"))]
    assert len(work) == 2 and all(
        s.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS") for s in work
    )
    assert not any("lock" in s.lower() for s in statements)
    assert count(seeded) == 4


def test_sealed_rows_verify_and_the_mark_moves_on(seeded: Database) -> None:
    ids = add(seeded, 300)
    assert seal(seeded) == 300
    add(seeded, 5, at=T0 + timedelta(hours=1))
    assert seal(seeded) == 5 and seal(seeded) == 0
    report = verify(seeded, KEYS, max_unsealed_age_s=LONG, now=lambda: T0)
    assert report.ok and report.tree_size == 305 and report.from_size == 0
    add(seeded, 2)
    seal(seeded)
    again = verify(seeded, KEYS, max_unsealed_age_s=LONG, now=lambda: T0)
    assert again.ok and again.from_size == 305 and again.leaves_checked == 2
    with seeded.session() as session:
        leaves = session.execute(
            select(AuditLeaf.seq, AuditLeaf.event_id).order_by(AuditLeaf.seq)
        ).all()
        cps = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)).all()
    assert [e for _, e in leaves][:300] == ids and [s for s, _ in leaves] == list(range(307))
    assert [c.tree_size for c in cps] == [300, 305, 307]
    assert cps[0].note.startswith(f"{ORIGIN}\n300\n") and "\u2014 " + ORIGIN in cps[0].note


def test_the_database_and_python_agree_on_every_leaf(seeded: Database) -> None:
    # Non-ASCII, quotes, backslashes, control characters and NULLs: PostgreSQL's LEAF_SQL
    # (verify) must equal app.mechanisms.audit.leaf_data (seal) byte for byte.
    with seeded.session() as session:
        record(
            session,
            actor='o\'brien "x"\t\u00e9\u4e2d\\',
            role="support",
            action="read",
            prescription_id=None,
            request_id=None,
            client_addr="::1",
            now=T0,
        )
        record(
            session,
            actor="a\x01\x1f\x7f/",
            role="patient",
            action="list",
            prescription_id=2**40,
            request_id="r" * 100,
            client_addr=None,
            now=T0.replace(microsecond=0),
        )
        record(
            session,
            actor="\\'",
            role="x",
            action="read",
            prescription_id=0,
            request_id="",
            client_addr="''",
            now=T0.replace(microsecond=120000),
        )
        for listed in ([3, 2**40, 1], []):
            record_list(
                session,
                Accessor(actor="o'b\\", role="patient", request_id=None, client_addr="::1"),
                action="list",
                prescription_ids=listed,
                now=T0,
            )
    seal(seeded)
    assert problems(seeded) == []


def test_leaf_data_is_quoted_and_unambiguous() -> None:
    def leaf(**overrides: object) -> bytes:
        values: dict = {
            "event_id": 7,
            "actor": "a",
            "role": "support",
            "action": "read",
            "prescription_id": 3,
            "occurred_at": T0,
            "request_id": None,
            "client_addr": "10.0.0.1",
        }
        return leaf_data(**{**values, **overrides})

    assert leaf() == (
        b"erx-audit-leaf/1,7,'a','support','read',3,2026-12-01 09:30:00.123456,NULL,'10.0.0.1'"
    )
    assert leaf(actor="o'b\\c", prescription_id=None, occurred_at=T0.replace(microsecond=0)) == (
        b"erx-audit-leaf/1,7,E'o''b\\\\c','support','read',NULL,2026-12-01 09:30:00,NULL,'10.0.0.1'"
    )
    # A row naming several prescriptions says so in its first field and ends with the list.
    assert leaf(prescription_id=None, prescription_ids=[3, 1, 2]) == (
        b"erx-audit-leaf/2,7,'a','support','read',NULL,2026-12-01 09:30:00.123456,NULL,"
        b"'10.0.0.1','{3,1,2}'"
    )
    assert leaf(prescription_id=None, prescription_ids=[]).endswith(b",'{}'")
    assert leaf(prescription_id=None, prescription_ids=[]) != leaf(prescription_id=None)
    # A comma inside a field cannot pass for a field boundary.
    assert leaf(actor="a','support") != leaf(actor="a", role="support','support")
    assert leaf(occurred_at="2026-12-01T09:30:00.120000Z") == leaf(
        occurred_at=T0.replace(microsecond=120000)
    )


def test_a_changed_row_is_reported(seeded: Database) -> None:
    ids = add(seeded, 10)
    seal(seeded)
    tamper(seeded, "UPDATE audit_events SET actor = 'mallory' WHERE id = :id", id=ids[4])
    assert problems(seeded) == [f"audit row {ids[4]} (leaf 4) was changed after it was sealed"]


def test_a_changed_list_is_reported(seeded: Database) -> None:
    add(seeded, 3)
    with seeded.session() as session:
        listed = record_list(session, PLATFORM, action="list", prescription_ids=[1, 2, 3], now=T0)
    seal(seeded)
    assert problems(seeded) == []
    # Dropping a prescription from what a list showed is a change like any other.
    if seeded.is_postgres:
        tamper(
            seeded, "UPDATE audit_events SET prescription_ids = '{1,3}' WHERE id = :id", id=listed
        )
    else:
        tamper(
            seeded, "UPDATE audit_events SET prescription_ids = '[1,3]' WHERE id = :id", id=listed
        )
    assert problems(seeded) == [f"audit row {listed} (leaf 3) was changed after it was sealed"]


def test_record_list_refuses_what_is_not_an_id(seeded: Database) -> None:
    with seeded.session() as session, pytest.raises(ValueError, match="whole numbers"):
        record_list(session, PLATFORM, action="list", prescription_ids=[1, None], now=T0)  # type: ignore[list-item]
    assert count(seeded) == 0


def test_a_removed_row_is_reported(seeded: Database) -> None:
    ids = add(seeded, 10)
    seal(seeded)
    tamper(seeded, "DELETE FROM audit_events WHERE id = :id", id=ids[7])
    assert problems(seeded) == [f"audit row {ids[7]} (leaf 7) was removed after it was sealed"]


def test_an_inserted_row_is_reported(seeded: Database) -> None:
    ids = add(seeded, 3)
    seal(seeded)
    # A row slipped in behind the sealer: an id (and on PostgreSQL a transaction) it has passed.
    with seeded.engine.begin() as conn:
        conn.execute(
            insert(AuditEvent).values(
                id=ids[0] - 1 if ids[0] > 1 else 0,
                actor="mallory",
                role="support",
                action="read",
                prescription_id=1,
                occurred_at=T0,
                txid=1 if seeded.is_postgres else None,
            )
        )
    found = problems(seeded)
    assert len(found) == 1 and "is not in the sealed tree but the sealer passed it" in found[0]


def test_a_rewritten_leaf_breaks_the_signed_checkpoint(seeded: Database) -> None:
    ids = add(seeded, 4)
    seal(seeded)
    # Row and leaf rewritten together: the stored tree no longer has the signed root.
    with seeded.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_leaves SET leaf_hash = :h WHERE seq = 1"), {"h": b"\x11" * 32}
        )
    found = problems(seeded)
    assert f"audit row {ids[1]} (leaf 1) was changed after it was sealed" in found
    assert any("root is not the tree of the sealed rows" in p for p in found)


def test_an_old_unsealed_tail_is_reported(seeded: Database) -> None:
    add(seeded, 2)
    seal(seeded)
    add(seeded, 1, at=T0 - timedelta(minutes=5))
    found = list(verify(seeded, KEYS, max_unsealed_age_s=60, now=lambda: T0).problems)
    assert found == ["unsealed audit rows: the oldest is 300 s old (limit 60 s)"]
    seal(seeded)
    assert verify(seeded, KEYS, max_unsealed_age_s=60, now=lambda: T0).ok


def _store_checkpoint(db: Database, *, size: int, root: bytes, key: SigningKey) -> int:
    note = sign_note(checkpoint_text(origin=ORIGIN, size=size, root=root, at=T0), key)
    with db.session() as session:
        cp = AuditCheckpoint(
            tree_size=size, root_hash=root, signed_at=T0, key_id=key.key_id_hex, note=note
        )
        session.add(cp)
        session.flush()
        return cp.id


def test_a_forked_checkpoint_is_reported(seeded: Database) -> None:
    add(seeded, 6)
    seal(seeded)
    # Validly signed, but over other leaves: a log that shows different histories to different readers.
    fork = _store_checkpoint(
        seeded, size=6, root=root_of([bytes([i]) * 32 for i in range(6)]), key=KEYS[0]
    )
    found = problems(seeded)
    assert (
        f"checkpoint {fork} (size 6): root is not the tree of the sealed rows (a fork, or leaves rewritten)"
        in found
    )
    assert any(p.startswith(f"checkpoint {fork} does not extend checkpoint") for p in found)


def test_a_checkpoint_with_a_bad_signature_is_reported(seeded: Database) -> None:
    add(seeded, 2)
    seal(seeded)
    stranger = parse_private_keys((base64.b64encode(b"\x09" * 32).decode(),), origin=ORIGIN)[0]
    with seeded.session() as session:
        root = bytes(session.scalars(select(AuditCheckpoint.root_hash)).one())
    bad = _store_checkpoint(seeded, size=2, root=root, key=stranger)
    assert problems(seeded) == [
        f"checkpoint {bad}: signature does not verify with any audit public key"
    ]


def test_key_rotation_old_checkpoints_verify_with_the_old_key(seeded: Database) -> None:
    old = KEYS
    rotated = parse_private_keys((KEY_B, KEY_A), origin=ORIGIN)
    add(seeded, 3)
    seal(seeded, old)
    add(seeded, 3)
    seal(seeded, rotated)  # the newest key signs from now on
    with seeded.session() as session:
        key_ids = session.scalars(select(AuditCheckpoint.key_id).order_by(AuditCheckpoint.id)).all()
    assert key_ids == [old[0].key_id_hex, rotated[0].key_id_hex]
    assert problems(seeded, rotated) == []
    dropped = problems(seeded, rotated[:1])
    assert len(dropped) == 1 and "signature does not verify" in dropped[0]


def test_rows_chained_before_the_sealer_are_sealed_first_and_their_chain_checked(
    seeded: Database,
) -> None:
    prev = "0" * 64
    with seeded.engine.begin() as conn:
        for i in range(3):
            content = row_content(
                actor="old",
                role="support",
                action="read",
                prescription_id=i,
                occurred_at=T0,
                request_id=None,
                client_addr=None,
                prev_hash=prev,
            )
            h = row_hash(content)
            conn.execute(
                insert(AuditEvent).values(
                    actor="old",
                    role="support",
                    action="read",
                    prescription_id=i,
                    occurred_at=T0,
                    prev_hash=prev,
                    hash=h,
                    txid=None,
                )
            )
            prev = h
    add(seeded, 2)
    assert seal(seeded) == 5
    assert problems(seeded) == []
    tamper(
        seeded,
        "UPDATE audit_events SET prev_hash = :p WHERE prescription_id = 1 AND actor = 'old'",
        p="e" * 64,
    )
    found = problems(seeded)
    assert any(p.startswith("pre-sealer hash chain broken at row") for p in found)


def test_cli_verify_ok_and_one_line_per_problem(app, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    runner = app.test_cli_runner()
    ids = add(seeded, 4, at=datetime.now(UTC))
    # (The first use of the development key logs a warning once: look at the last line.)
    assert (
        runner.invoke(args=["audit", "seal"]).output.strip().splitlines()[-1]
        == "sealed 4 rows: tree size 4"
    )
    ok = runner.invoke(args=["audit", "verify", "--full"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip() == "audit log ok: 4 sealed rows, 4 checked from leaf 0, 1 checkpoints"
    tamper(seeded, "UPDATE audit_events SET role = 'patient' WHERE id = :id", id=ids[1])
    tamper(seeded, "DELETE FROM audit_events WHERE id = :id", id=ids[2])
    bad = runner.invoke(args=["audit", "verify", "--full"])
    assert bad.exit_code == 1
    assert [line for line in bad.output.strip().splitlines() if not line.startswith("{")] == [
        f"audit verify: audit row {ids[1]} (leaf 1) was changed after it was sealed",
        f"audit verify: audit row {ids[2]} (leaf 2) was removed after it was sealed",
    ]


def test_cli_public_keys(app) -> None:  # type: ignore[no-untyped-def]
    result = app.test_cli_runner().invoke(args=["audit", "public-keys"])
    assert result.exit_code == 0
    [key] = json.loads(result.output[result.output.index("{\n") :])["keys"]
    assert key["algorithm"] == "ed25519" and len(base64.b64decode(key["public_key"])) == 32
    assert key["vkey"].startswith(f"{key['name']}+{key['key_id']}+")


def run_offline_check(path: Path, *vkeys: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(REPO / "docs" / "audit_verify_export.py"), str(path)]
    for v in vkeys:
        args += ["--vkey", v]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_an_export_verifies_offline_and_a_doctored_one_does_not(
    app, seeded: Database, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    runner = app.test_cli_runner()
    add(seeded, 5, prescription_id=3)
    add(seeded, 40, prescription_id=4)  # other rows around it: real proofs, not a one-leaf tree
    with seeded.session() as session:  # a list that showed it among others, and one that did not
        record_list(session, PLATFORM, action="list", prescription_ids=[4, 3, 5], now=T0)
        record_list(session, PLATFORM, action="list", prescription_ids=[4, 5], now=T0)
    add(seeded, 1, prescription_id=3)
    assert runner.invoke(args=["audit", "seal"]).exit_code == 0
    out = tmp_path / "export.json"
    assert (
        runner.invoke(
            args=["audit", "export", "rx-000003", "--out", str(out), "--actor", "auditor"]
        ).exit_code
        == 0
    )
    listed = runner.invoke(args=["audit", "public-keys"]).output
    vkey = json.loads(listed[listed.index("{\n") :])["keys"][0]["vkey"]
    good = run_offline_check(out, vkey)
    assert good.returncode == 0, good.stderr
    assert (
        "7 sealed rows proven against checkpoint" in good.stdout
        and "1 not yet sealed" in good.stdout
    )

    data = json.loads(out.read_text())
    assert [(r["prescription_id"], r["prescription_ids"]) for r in data["audit_events"][5:]] == [
        (None, [4, 3, 5]),
        (3, None),
        (3, None),  # the export's own row, not yet sealed
    ]
    dropped = json.loads(out.read_text())
    dropped["audit_events"][5]["prescription_ids"] = [4, 5, 3]  # the list as shown, reordered
    reordered = tmp_path / "reordered.json"
    reordered.write_text(json.dumps(dropped))
    assert run_offline_check(reordered, vkey).returncode == 1
    data["audit_events"][2]["actor"] = "someone-else"
    doctored = tmp_path / "doctored.json"
    doctored.write_text(json.dumps(data))
    bad = run_offline_check(doctored, vkey)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        f"audit export: audit row {data['audit_events'][2]['id']}: not included in checkpoint "
        f"{data['checkpoint']['id']} as exported"
    )
    stranger = parse_private_keys((base64.b64encode(b"\x07" * 32).decode(),), origin=ORIGIN)[0]
    wrong_key = run_offline_check(out, stranger.vkey)
    assert wrong_key.returncode == 1 and "signature does not verify" in wrong_key.stderr


def test_record_rolls_back_with_the_callers_transaction(seeded: Database) -> None:
    with pytest.raises(RuntimeError), seeded.session() as session:
        record(
            session,
            actor="a",
            role="support",
            action="read",
            prescription_id=1,
            request_id=None,
            client_addr=None,
            now=T0,
        )
        raise RuntimeError("caller failed")
    assert count(seeded) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action": "peek"},
        {"now": datetime(2026, 1, 1)},
        {"actor": ""},
        {"role": "x" * 33},
        {"request_id": "r" * 101},
    ],
    ids=["unknown-action", "naive-time", "no-actor", "long-role", "long-request-id"],
)
def test_record_refuses_bad_input(seeded: Database, kwargs: dict) -> None:
    values = {
        "actor": "a",
        "role": "support",
        "action": "read",
        "prescription_id": 1,
        "request_id": None,
        "client_addr": None,
        "now": T0,
        **kwargs,
    }
    with pytest.raises(ValueError), seeded.session() as session:
        record(session, **values)
    assert count(seeded) == 0


def test_update_and_delete_are_refused(seeded: Database) -> None:
    add(seeded, 2)
    for statement in ("UPDATE audit_events SET actor = 'someone-else'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError) as caught, seeded.engine.begin() as conn:
            conn.execute(text(statement))
        assert "append-only" in str(caught.value.orig)
    assert count(seeded) == 2


def test_truncate_is_refused_on_postgresql(seeded: Database) -> None:
    if not seeded.is_postgres:
        pytest.skip("TRUNCATE is PostgreSQL's")
    add(seeded, 1)
    with pytest.raises(DBAPIError) as caught, seeded.engine.begin() as conn:
        conn.execute(text("TRUNCATE audit_events"))
    assert "append-only" in str(caught.value.orig)
    assert count(seeded) == 1


# -- CLI export ---------------------------------------------------------------------------


@pytest.mark.usefixtures("clock")
def test_cli_export_writes_the_prescriptions_complete_record(
    app, client, seeded: Database, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    token = "SRXTEST0000001"
    with seeded.session() as session:
        rx = session.scalars(
            select(Prescription).where(Prescription.reference == "rx-000001")
        ).one()
        other = session.scalars(
            select(Prescription).where(Prescription.reference == "rx-000002")
        ).one()
        rx_id, other_id = rx.id, other.id
        history.record(
            session, [history.Change(rx, history.local(rx, "queued", source="api", now=T0))]
        )
        session.add(
            DispatchOutbox(
                prescription_id=rx.id,
                flow="erx",
                state="done",
                attempts=1,
                next_attempt_at=T0,
                created_at=T0,
                updated_at=T0,
            )
        )
        rx.platform_token, rx.status = token, "issued"
    body = event_body("evt_export_1", token=token)
    assert deliver(client, body).status_code == 200
    assert deliver(client, event_body("evt_other", token="SRXOTHER0000002")).status_code == 200
    add(seeded, 2, prescription_id=rx_id)
    add(seeded, 1, prescription_id=other_id)
    seal(seeded)

    out = tmp_path / "export.json"
    result = app.test_cli_runner().invoke(
        args=["audit", "export", str(rx_id), "--out", str(out), "--actor", "auditor-1"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"exported prescription {rx_id} to {out}: 1 transitions, 1 webhook events, 3 audit rows"
    )
    data = json.loads(out.read_text())
    assert data["format"] == "erx-audit-export/3"
    assert data["prescription"]["id"] == rx_id and data["prescription"]["reference"] == "rx-000001"
    assert data["prescription"]["platform_token"] == token
    assert [h["to_status"] for h in data["status_history"]] == ["queued"]
    assert data["dispatch"]["state"] == "done" and data["dispatch"]["attempts"] == 1
    [event] = data["webhook_events"]
    assert event["event_id"] == "evt_export_1" and event["body"].encode() == body
    with seeded.session() as session:
        stored = session.scalars(
            select(WebhookInbox).where(WebhookInbox.event_id == "evt_export_1")
        ).one()
        assert event["id"] == stored.id
    actions = [(a["action"], a["actor"]) for a in data["audit_events"]]
    assert actions[-1] == ("export", "auditor-1")
    assert len(actions) == 3
    # The two earlier rows are sealed (with a proof), the export's own row not yet.
    assert [a["sealed"] for a in data["audit_events"]] == [True, True, False]
    assert data["checkpoint"]["tree_size"] == 3 and data["public_keys"][0]["algorithm"] == "ed25519"
    # The record names ids and statuses: no seeded patient's PHI in it.
    assert find_phi(out.read_text().splitlines(), seeded_phi(seeded)) == []
    seal(seeded)
    assert verify(seeded, KEYS, max_unsealed_age_s=1e9).ok


def test_cli_export_by_reference_to_stdout(app, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    result = app.test_cli_runner().invoke(args=["audit", "export", "rx-000003", "--actor", "a"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["prescription"]["reference"] == "rx-000003"
    assert (
        data["status_history"] == [] and data["webhook_events"] == [] and data["dispatch"] is None
    )
    assert [a["action"] for a in data["audit_events"]] == ["export"]


def test_cli_export_unknown_prescription_is_one_line(app, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    result = app.test_cli_runner().invoke(args=["audit", "export", "999999"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: no prescription 999999"]
    assert count(seeded) == 0


def test_signing_keys_production_needs_them_and_bad_ones_are_named_by_position() -> None:
    from app.foundation.config import Settings
    from app.mechanisms.audit_keys import AuditKeyError, signing_keys

    with pytest.raises(AuditKeyError, match="AUDIT_SIGNING_KEYS is required in production"):
        signing_keys(Settings(env="production", jwt_secret="x" * 40))
    with pytest.raises(AuditKeyError, match="entry 2 is not a 32-byte Ed25519 key") as caught:
        signing_keys(Settings(audit_signing_keys=(KEY_A, base64.b64encode(b"short").decode())))
    assert KEY_A not in str(caught.value)
    newest_first = signing_keys(
        Settings(audit_signing_keys=(KEY_B, KEY_A), audit_log_origin=ORIGIN)
    )
    assert [k.key_id_hex for k in newest_first] == [
        k.key_id_hex for k in parse_private_keys((KEY_B, KEY_A), origin=ORIGIN)
    ]
    dev = signing_keys(Settings())
    assert (
        len(dev) == 1 and dev[0].public == signing_keys(Settings())[0].public
    )  # all processes agree
