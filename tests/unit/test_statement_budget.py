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
check-in. No pool pre-ping exists (``app/foundation/db.py``); it would show as a
statement here. A view statement runs as a server-side prepared statement
(``EXECUTE``, one round trip, counted as the statement it runs); its ``PREPARE``
is sent once per pooled connection for the connection's life, not per request,
and is not counted.

The audit append is one plain INSERT (no lock, no read of another row:
:func:`app.interfaces.access_audit.append_read_audit`), so reads run in driver
autocommit: the view SELECT and the audit INSERT, two statements. A plain GET of
one prescription sends them as ONE statement (the audit INSERT a data-modifying
CTE beside the view, :func:`app.services.prescription_reads.find_row`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg2.extensions
import pytest
from sqlalchemy import event

from app.foundation.db import Database, prepared_statement_text
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
        if statement.startswith("PREPARE erx_"):
            return  # once per pooled connection and view, not per request (see the module)
        # A prepared statement is sent as EXECUTE name(...); name it by its text.
        if statement.startswith("EXECUTE erx_"):
            statement = prepared_statement_text(statement[8:].split("(")[0]) or statement
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
    if "PG_ADVISORY" in upper:
        return "lock"
    if upper.startswith("INSERT INTO AUDIT_EVENTS"):
        return "audit-insert"
    if upper.startswith("SAVEPOINT") or upper.startswith("RELEASE SAVEPOINT"):
        return "savepoint"
    if upper.startswith("WITH") and "INSERT INTO AUDIT_EVENTS" in upper:
        return "view-and-audit"  # the view and its audit row in one statement
    if upper.startswith("SELECT") or upper.startswith("WITH"):
        return "query"
    return "other"


@pytest.fixture
def statements(seeded: Database) -> Iterator[StatementLog]:
    if not seeded.is_postgres:
        pytest.skip("the statement budget is PostgreSQL's (round trips to a networked server)")
    with StatementLog(seeded) as log:
        yield log


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

# Plain GETs whose view and audit row are one statement (a data-modifying CTE): one round trip.
ONE_STATEMENT = {"read-as-patient", "read-as-support", "read-by-reference", "list-of-50"}


def _get(
    client: Any, statements: StatementLog, name: str, extra: dict[str, str] | None = None
) -> tuple[Any, list[str]]:
    url, headers = _reads(client.application)[name]
    client.get(url, headers=headers)  # warm: first use compiles statements, fills caches
    return statements.record(lambda: client.get(url, headers=headers | (extra or {})))


@pytest.mark.parametrize("name", READS)
def test_every_audited_read_is_within_the_budget(
    client: Any, statements: StatementLog, name: str
) -> None:
    response, sent = _get(client, statements, name)

    assert response.status_code == 200, response.get_data(as_text=True)
    kinds = [_kind(s) for s in sent]
    if name in ONE_STATEMENT:
        assert kinds == ["view-and-audit"], sent
    else:
        assert kinds.count("query") == 1, (
            sent
        )  # the view (and the caller's patient row) in ONE query
        assert kinds.count("audit-insert") == 1, sent  # every id of the read in one audit INSERT
    assert "lock" not in kinds, sent  # no advisory lock on any read
    assert len(sent) <= BUDGET, sent


def test_a_304_is_within_the_budget_and_audited(client: Any, statements: Any) -> None:
    url, headers = _reads(client.application)["read-as-patient"]
    etag = client.get(url, headers=headers).headers["ETag"]

    response, sent = statements.record(
        lambda: client.get(url, headers=headers | {"If-None-Match": etag})
    )

    assert response.status_code == 304 and response.get_data() == b""
    assert [_kind(s) for s in sent] == ["query", "audit-insert"], sent


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


def test_a_read_refused_records_nothing_in_its_one_statement(
    client: Any, statements: Any, seeded: Database
) -> None:
    from sqlalchemy import func, select

    from app.foundation.models import AuditEvent

    other = bearer(client.application, role="patient", subject="pt-0002")
    client.get("/api/v1/prescriptions/1", headers=other)
    with seeded.session() as session:
        before = session.scalar(select(func.count()).select_from(AuditEvent))

    response, sent = statements.record(lambda: client.get("/api/v1/prescriptions/1", headers=other))

    with seeded.session() as session:
        after = session.scalar(select(func.count()).select_from(AuditEvent))
    assert response.status_code == 404
    assert [_kind(s) for s in sent] == ["view-and-audit"], sent
    assert after == before  # another patient's prescription: not shown, so not recorded
