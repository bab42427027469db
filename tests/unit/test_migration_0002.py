"""Migration 0002 converts stored rows: webhook bodies to bytes, the typed waiting flag, the token name.

Runs on a database of its own (a temp SQLite file; with ``DATABASE_URL`` on
PostgreSQL, a sibling database named ``<name>_migration``), upgrades to 0001,
writes rows as the old code did, upgrades to head, checks, and downgrades.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import IntegrityError

REPO = Path(__file__).resolve().parents[2]
BODY = '{"id":"evt_old","data":{"prescription":{"id":"SRXOLD","note":"caf\u00e9"}}}'
T = "2026-11-20 10:00:00+00:00"


@pytest.fixture
def migration_url(tmp_path: Path) -> Iterator[str]:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        yield f"sqlite:///{tmp_path / 'migration.sqlite3'}"
        return
    parsed = make_url(url.replace("postgres://", "postgresql://", 1)).set(
        drivername="postgresql+psycopg2"
    )
    name = f"{parsed.database}_migration"
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield parsed.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def migrate(url: str, action: str, revision: str) -> None:
    cfg = Config(str(REPO / "alembic.ini"))
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    try:
        getattr(command, action)(cfg, revision)
    finally:
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous


def test_0002_converts_existing_rows_and_downgrades(migration_url: str) -> None:
    migrate(migration_url, "upgrade", "0001")
    engine = create_engine(migration_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO webhook_inbox (event_id, event_type, prescription_token, body, state, attempts,"
                " next_attempt_at, last_error, received_at) VALUES"
                " ('evt_old', 'prescription.status_updated', 'SRXOLD', :body, 'dead', 8, :t,"
                " 'unknown_prescription', :t),"
                " ('evt_other', 'prescription.status_updated', 'SRXOTHER', '{}', 'dead', 1, :t, 'not_json', :t)"
            ),
            {"body": BODY, "t": T},
        )
    migrate(migration_url, "upgrade", "head")
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "SELECT event_id, body, signature, awaiting_prescription, platform_token"
                " FROM webhook_inbox ORDER BY event_id"
            )
        ).all()
    old, other = rows
    assert bytes(old.body) == BODY.encode("utf-8")  # the text as the UTF-8 bytes it was
    assert old.signature is None  # not known for rows stored before 0002
    assert bool(old.awaiting_prescription) is True and bool(other.awaiting_prescription) is False
    assert old.platform_token == "SRXOLD"

    with engine.begin() as conn:
        conn.execute(text("INSERT INTO regions (code, name, flow) VALUES ('B', 'Region B', 'erx')"))
    # The partial unique index replaces lifecycle_step: a lifecycle status once, local statuses repeat.
    _history_rows_behave(engine)

    migrate(migration_url, "downgrade", "0001")
    with engine.begin() as conn:
        body = conn.execute(
            text("SELECT body FROM webhook_inbox WHERE event_id = 'evt_old'")
        ).scalar_one()
        token = conn.execute(
            text("SELECT prescription_token FROM webhook_inbox WHERE event_id = 'evt_old'")
        ).scalar_one()
    assert body == BODY and token == "SRXOLD"
    engine.dispose()


def _history_rows_behave(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO clinics (display_id, platform_id, name) VALUES ('201334', 994, 'C')")
        )
        conn.execute(
            text(
                "INSERT INTO prescribers (platform_prescriber_id, name, email, clinic_id)"
                " VALUES (5531, 'Dr', 'dr@example.test', 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO patients (external_ref, region_code, first_name, last_name, gender, date_of_birth,"
                " address_line1, city, post_code, country) VALUES ('p1', 'B', 'A', 'B', 'female', '1980-01-01',"
                " 'x', 'y', 'z', 'UK')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO prescriptions (reference, patient_id, prescriber_id, clinic_id, status, created_at)"
                " VALUES ('rx-1', 1, 1, 1, 'issued', :t)"
            ),
            {"t": T},
        )
    insert = text(
        "INSERT INTO prescription_status_history (prescription_id, to_status, occurred_at, received_at, source)"
        " VALUES (1, :to, :t, :t, 'service')"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"to": "queued", "t": T})
        conn.execute(insert, {"to": "queued", "t": T})  # local statuses may repeat
        conn.execute(insert, {"to": "issued", "t": T})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"to": "issued", "t": T})
