"""The read views as server-side prepared statements (``app.foundation.db.execute_prepared``).

Parsing and planning a view cost the server more CPU than running it, so the
views ask to be prepared once per connection and then sent as ``EXECUTE``.
These tests hold what that must not change: the answer, the audit row, a
connection that is replaced, and ``DB_PREPARED_STATEMENTS=false`` for a
transaction-mode pooler.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from app import create_app
from app.foundation.config import ConfigError, load_settings
from app.foundation.db import Database, _prepared_form
from app.foundation.models import AuditEvent
from tests.conftest import bearer


def test_the_prepared_form_numbers_each_parameter_once_and_restores_percent() -> None:
    statement = "SELECT a FROM t WHERE b = %(key)s AND c LIKE 'x%%' AND d = %(key)s LIMIT %(n)s"

    name, prepare, order = _prepared_form(statement)

    assert (
        prepare
        == f"PREPARE {name} AS SELECT a FROM t WHERE b = $1 AND c LIKE 'x%' AND d = $1 LIMIT $2"
    )
    assert order == ("key", "n")
    assert _prepared_form(statement)[0] == name != _prepared_form(statement + " ")[0]


def test_the_setting_reads_true_or_false_and_refuses_anything_else(monkeypatch: Any) -> None:
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "false")
    assert load_settings().db_prepared_statements is False
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "sometimes")
    with pytest.raises(ConfigError, match="DB_PREPARED_STATEMENTS"):
        load_settings()


def _postgres(seeded: Database) -> None:
    if not seeded.is_postgres:
        pytest.skip("prepared statements are PostgreSQL's")


def _sent(db: Database) -> tuple[list[str], Any]:
    sent: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(db.engine, "before_cursor_execute", listener)
    return sent, listener


def _audit_rows(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def test_a_read_is_sent_as_execute_and_answers_and_audits_as_before(
    seeded: Database, settings: Any
) -> None:
    _postgres(seeded)
    prepared = create_app(settings, db=Database(seeded.url))
    plain = create_app(settings, db=Database(seeded.url, prepared_statements=False))
    headers = bearer(prepared, role="patient", subject="pt-0001")
    urls = ("/api/v1/prescriptions/1", "/api/v1/me/prescriptions?per_page=50")
    answers = {}
    for name, app in (("prepared", prepared), ("plain", plain)):
        db = app.extensions["erx"].db
        sent, listener = _sent(db)
        before = _audit_rows(seeded)
        client = app.test_client()
        answers[name] = [client.get(url, headers=headers) for url in (*urls, urls[0])]
        event.remove(db.engine, "before_cursor_execute", listener)
        assert _audit_rows(seeded) == before + 3  # every read recorded, prepared or not
        executed = [s for s in sent if s.startswith("EXECUTE erx_")]
        prepares = [s for s in sent if s.startswith("PREPARE erx_")]
        if name == "prepared":
            assert len(executed) == 3, sent
            assert len(prepares) == 2, sent  # the third read reuses the connection's statement
        else:
            assert executed == prepares == [], sent
        with db.engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar()
        assert (count > 0) == (name == "prepared")
    for a, b in zip(answers["prepared"], answers["plain"], strict=True):
        assert a.status_code == b.status_code == 200
        assert a.get_json() == b.get_json()


def test_a_replaced_connection_prepares_again(seeded: Database, settings: Any) -> None:
    _postgres(seeded)
    db = Database(seeded.url, pool_size=1)
    app = create_app(settings, db=db)
    headers = bearer(app, role="support", subject="support-1")
    client = app.test_client()
    assert client.get("/api/v1/prescriptions/1", headers=headers).status_code == 200

    db.engine.dispose()  # every pooled connection closed: their prepared statements are gone

    again = client.get("/api/v1/prescriptions/1", headers=headers)
    assert again.status_code == 200 and again.get_json()["id"] == 1
