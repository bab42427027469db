"""Statement budget of every audited GET endpoint, on PostgreSQL (skipped on SQLite).

The patient page polls the status resource and FHIR clients read timelines;
with the database one network hop away every statement is a round trip. The
budget: the view in ONE query, the audit INSERT, the COMMIT: at most 3
statements as the server sees them.

Counting rule. Every statement the driver sends is counted once, as the server
receives it: each cursor execute (``before_cursor_execute``); the ``BEGIN``
psycopg2 sends on its own before the first statement of a transaction (it does
not fold it into the statement: counted when a statement starts on a
connection that is neither in autocommit nor already in a transaction); the
``COMMIT``/``ROLLBACK`` of a transaction that is open (psycopg2 sends nothing
for one that is not, nor in autocommit), including the pool's reset on
check-in. No pool pre-ping exists (``app/db.py``); it would show as a
statement here.

The audit append is being rewritten to one plain INSERT (no lock, no read of
the previous row). The budget tests run the endpoints with that append (a
stand-in that writes one multi-row INSERT, replacing
:func:`app.read_access.append_read_audit`) and with
:data:`app.read_access.AUDIT_APPEND_IS_ONE_STATEMENT` set, so reads run in
driver autocommit: this is the shape the service takes once the new append is
merged. A second set of tests runs today's chained append unchanged and checks
what does not depend on it: the view is one query and nothing else but the
audit's own statements and the transaction's BEGIN/COMMIT is sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2.extensions
import pytest
from sqlalchemy import event, insert

from app import api, directory_api, fhir_api
from app.db import Database, utcnow
from app.models import AuditEvent
from tests.conftest import bearer

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
BUDGET = 3


class StatementLog:
    """The statements the server receives from ``db``'s engine while recording (see the module)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.statements: list[str] = []
        self.recording = False

    def _dbapi(self, conn: Any) -> Any:
        return conn.connection.dbapi_connection

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self.recording:
            return
        dbapi = self._dbapi(conn)
        if not dbapi.autocommit and dbapi.info.transaction_status == _IDLE:
            self.statements.append("BEGIN")
        self.statements.append(" ".join(statement.split()))

    def _end(self, word: str) -> Callable[..., None]:
        def listener(conn: Any, *args: Any) -> None:
            dbapi = self._dbapi(conn)
            if self.recording and not dbapi.autocommit and dbapi.info.transaction_status != _IDLE:
                self.statements.append(word)

        return listener

    def _reset(self, dbapi: Any, *args: Any) -> None:
        if self.recording and not dbapi.autocommit and dbapi.info.transaction_status != _IDLE:
            self.statements.append("ROLLBACK")

    def __enter__(self) -> StatementLog:
        engine = self.db.engine
        self._listeners = [
            (engine, "before_cursor_execute", self._before),
            (engine, "commit", self._end("COMMIT")),
            (engine, "rollback", self._end("ROLLBACK")),
            (engine.pool, "reset", self._reset),
        ]
        for target, name, fn in self._listeners:
            event.listen(target, name, fn)
        return self

    def __exit__(self, *exc: object) -> None:
        for target, name, fn in self._listeners:
            event.remove(target, name, fn)

    def record(self, call: Callable[[], Any]) -> tuple[Any, list[str]]:
        """Run ``call`` and return its result with the statements it sent."""
        self.statements = []
        self.recording = True
        try:
            result = call()
        finally:
            self.recording = False
        return result, list(self.statements)


def _kind(statement: str) -> str:
    upper = statement.upper()
    if upper in ("BEGIN", "COMMIT", "ROLLBACK"):
        return "transaction"
    if "PG_ADVISORY_XACT_LOCK" in upper or upper.startswith("SELECT AUDIT_EVENTS.HASH"):
        return "audit-chain"  # today's chained append: removed by the one-INSERT append
    if upper.startswith("INSERT INTO AUDIT_EVENTS"):
        return "audit-insert"
    if upper.startswith("SAVEPOINT") or upper.startswith("RELEASE SAVEPOINT"):
        return "savepoint"
    if upper.startswith("SELECT") or upper.startswith("WITH"):
        return "query"
    return "other"


@pytest.fixture
def statements(seeded: Database) -> Iterator[StatementLog]:
    if not seeded.is_postgres:
        pytest.skip("the statement budget is PostgreSQL's (round trips to a networked server)")
    with StatementLog(seeded) as log:
        yield log


def _one_insert_append(session: Any, action: str, prescription_ids: Any) -> None:
    # Stand-in for the one-INSERT append: every id of the read in ONE statement, no lock, no read.
    ids = list(prescription_ids)
    now = utcnow()
    rows = [
        {
            "actor": "budget-test",
            "role": "service",
            "action": action,
            "prescription_id": pid,
            "occurred_at": now,
            "request_id": None,
            "client_addr": None,
            "prev_hash": uuid.uuid4().hex * 2,
            "hash": uuid.uuid4().hex * 2,
        }
        for pid in ids
    ]
    if rows:
        session.execute(insert(AuditEvent).values(rows))


@pytest.fixture
def one_insert_append(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (api, directory_api, fhir_api):
        monkeypatch.setattr(module, "append_read_audit", _one_insert_append)
        monkeypatch.setattr(module, "AUDIT_APPEND_IS_ONE_STATEMENT", True)


def _reads(app: Any) -> dict[str, tuple[str, dict[str, str]]]:
    patient = bearer(app, role="patient", subject="pt-0001")
    support = bearer(app, role="support", subject="support-1")
    service = bearer(app, role="service", subject="svc-1")
    return {
        "read-as-patient": ("/api/v1/prescriptions/1", patient),
        "read-as-support": ("/api/v1/prescriptions/1", support),
        "read-by-reference": ("/api/v1/prescriptions/rx-000001", support),
        "lookup-by-reference": ("/api/v1/prescriptions?reference=rx-000001", service),
        "lookup-finding-nothing": ("/api/v1/prescriptions?platform_token=nothing", service),
        "list-of-50": ("/api/v1/me/prescriptions?per_page=50", patient),
        "fhir-read": ("/fhir/R4/MedicationRequest/1-1", patient),
        "fhir-search": ("/fhir/R4/MedicationRequest?patient=pt-0001", patient),
        "fhir-history": ("/fhir/R4/MedicationRequest/1-1/_history", support),
    }


READS = [
    "read-as-patient",
    "read-as-support",
    "read-by-reference",
    "lookup-by-reference",
    "lookup-finding-nothing",
    "list-of-50",
    "fhir-read",
    "fhir-search",
    "fhir-history",
]


def _get(
    client: Any, statements: StatementLog, name: str, extra: dict[str, str] | None = None
) -> tuple[Any, list[str]]:
    url, headers = _reads(client.application)[name]
    client.get(url, headers=headers)  # warm: first use compiles statements, fills caches
    return statements.record(lambda: client.get(url, headers=headers | (extra or {})))


@pytest.mark.parametrize("name", READS)
def test_every_audited_read_is_within_the_budget(
    client: Any, statements: StatementLog, one_insert_append: None, name: str
) -> None:
    response, sent = _get(client, statements, name)

    assert response.status_code == 200, response.get_data(as_text=True)
    kinds = [_kind(s) for s in sent]
    assert kinds.count("query") == 1, sent  # the view (and the caller's patient row) in ONE query
    assert kinds.count("audit-insert") == 1, sent  # every id of the read in one audit INSERT
    assert len(sent) <= BUDGET, sent


def test_a_304_is_within_the_budget_and_audited(
    client: Any, statements: Any, one_insert_append: Any
) -> None:
    url, headers = _reads(client.application)["read-as-patient"]
    etag = client.get(url, headers=headers).headers["ETag"]

    response, sent = statements.record(
        lambda: client.get(url, headers=headers | {"If-None-Match": etag})
    )

    assert response.status_code == 304 and response.get_data() == b""
    assert [_kind(s) for s in sent] == ["query", "audit-insert"], sent


@pytest.mark.parametrize("name", READS)
def test_with_todays_chained_append_the_view_is_still_one_query(
    client: Any, statements: Any, name: str
) -> None:
    response, sent = _get(client, statements, name)

    assert response.status_code == 200, response.get_data(as_text=True)
    kinds = [_kind(s) for s in sent]
    assert kinds.count("query") == 1, sent
    # Nothing but the view, the audit's own statements and one transaction around them.
    assert set(kinds) <= {"query", "audit-chain", "audit-insert", "transaction"}, sent
    assert kinds.count("transaction") == 2 and kinds[0] == "transaction" and sent[-1] == "COMMIT", (
        sent
    )


@pytest.mark.parametrize(
    ("url", "role"),
    [
        ("/fhir/R4/Patient/pt-0001", "patient"),
        ("/fhir/R4/Practitioner/1", "patient"),
        ("/fhir/R4/Organization/1", "support"),
    ],
)
def test_fhir_reference_reads_are_one_statement(
    client: Any, statements: Any, url: str, role: str
) -> None:
    headers = bearer(client.application, role=role, subject="pt-0001")
    client.get(url, headers=headers)

    response, sent = statements.record(lambda: client.get(url, headers=headers))

    assert response.status_code == 200, response.get_data(as_text=True)
    assert [_kind(s) for s in sent] == ["query"], sent
