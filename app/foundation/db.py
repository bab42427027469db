"""Database engine, sessions and the two portable SQL idioms the service relies on.

PostgreSQL (``postgresql+psycopg2://``) is production; SQLite is the embedded
default for the demo and local tests. Everything here works on both.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import psycopg2.extras
from sqlalchemy import Connection, Engine, column, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.schema import Table

from app.foundation.text_folding import register_sqlite_functions


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def make_engine(url: str, *, pool_size: int = 5, prepared_statements: bool = True) -> Engine:
    """Create the engine for ``url``.

    SQLite: the parent folder is created, and each connection gets WAL,
    foreign keys and a 10 s busy timeout so that the web process and several
    workers can share one file. PostgreSQL: a pool keeping ``pool_size``
    connections (up to 10 more on demand, closed when returned), recycled after
    30 minutes, with no pre-ping on checkout; idle connections are tested by
    TCP keepalives. With ``prepared_statements``, :func:`execute_prepared` runs
    its statements as server-side prepared statements (PostgreSQL's
    ``PREPARE``/``EXECUTE``, prepared once per connection); False behind a
    transaction-mode pooler, which does not keep a session's prepared statements.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy own transactions (pysqlite's implicit BEGIN is deferred and
            # would allow lost updates between workers); BEGIN IMMEDIATE below.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()
            register_sqlite_functions(dbapi_conn)  # erx_fold() for pharmacy search

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Take the write lock up front: claims and status moves are read-then-write.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No pre-ping: it costs a round trip on every checkout (the webhook hot path, every read).
    # A connection that died is discarded when it fails; callers answer 503 or retry.
    # Idle connections are tested by the kernel instead (TCP keepalives: no round trip on
    # checkout), so a peer that vanished is noticed while the connection sits in the pool.
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=10, pool_recycle=1800, connect_args=dict(_KEEPALIVES)
    )
    # json/jsonb values (the views' aggregated timelines) decoded by orjson: the same values as
    # json.loads, 2-3x faster (psycopg2's loader is process-wide; registering again is harmless).
    psycopg2.extras.register_default_json(globally=True, loads=orjson.loads)
    psycopg2.extras.register_default_jsonb(globally=True, loads=orjson.loads)
    if prepared_statements:
        _PREPARING.add(engine)
    return engine


# Engines made with prepared_statements (a set, not an engine-wide cursor hook: a hook on
# every statement cost the webhook receiver 6% of its CPU).
_PREPARING: weakref.WeakSet[Engine] = weakref.WeakSet()
_PLACEHOLDER = re.compile(r"%\(([^)]+)\)s")


@cache
def _prepared_form(statement: str) -> tuple[str, str, tuple[str, ...]]:
    """``(name, PREPARE text, parameter names in $n order)`` of one compiled statement's text.

    The name is a digest of the text, so one text is one prepared statement per connection
    whatever calls it. psycopg2's pyformat placeholders become ``$1``...; a name used twice
    is one parameter; a literal ``%`` (written ``%%`` for psycopg2) is restored, since the
    PREPARE is sent without parameters (psycopg2 then interpolates nothing).
    """
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in order:
            order.append(match.group(1))
        return f"${order.index(match.group(1)) + 1}"

    body = _PLACEHOLDER.sub(number, statement).replace("%%", "%")
    name = "erx_" + hashlib.sha256(statement.encode()).hexdigest()[:24]
    return name, f"PREPARE {name} AS {body}", tuple(order)


@dataclass(frozen=True)
class _Plan:
    name: str
    prepare: str
    execute: Any  # text("EXECUTE name(:a, ...)").columns(<the statement's typed columns>)
    defaults: dict[str, Any]  # values the statement binds itself (literals, count > 0)


_PLANS: dict[tuple[int, str], tuple[Any, _Plan]] = {}
_TEXTS: dict[str, str] = {}


def _plan(statement: Any, dialect: Any) -> _Plan:
    key = (id(statement), dialect.name)
    found = _PLANS.get(key)
    if found is not None and found[0] is statement:
        return found[1]
    compiled = statement.compile(dialect=dialect)
    name, prepare, order = _prepared_form(compiled.string)
    arguments = ", ".join(f":{p}" for p in order)
    columns = [column(c.key, c.type) for c in statement.selected_columns]
    execute = text(f"EXECUTE {name}({arguments})" if order else f"EXECUTE {name}").columns(*columns)
    defaults = {k: v for k, v in compiled.params.items() if v is not None}
    plan = _Plan(name, prepare, execute, defaults)
    _PLANS[key] = (statement, plan)  # the statement is kept, so its id is never reused
    _TEXTS[name] = compiled.string
    return plan


def execute_prepared(conn: Connection, statement: Any, params: Mapping[str, Any]) -> Any:
    """Run SELECT ``statement`` with ``params`` on ``conn``; return its result (rows by column name).

    On PostgreSQL, for an engine made with ``prepared_statements``
    (:func:`make_engine`, ``DB_PREPARED_STATEMENTS``), as a server-side prepared
    statement: ``PREPARE`` once per connection (the names are kept in the
    pool's per-connection ``info``, cleared when a connection is replaced),
    then ``EXECUTE name(...)``, whose rows are typed as ``statement``'s columns.
    Parsing, analysing and planning a view cost the server more than running
    it (EXPLAIN: 0.25 ms planning, 0.09 ms execution for one prescription).
    Elsewhere, ``conn.execute(statement, params)``. For statements built once
    (a module-level cache): each is planned once per process. Database errors
    propagate.
    """
    if conn.engine not in _PREPARING or conn.dialect.name != "postgresql":
        return conn.execute(statement, params)
    plan = _plan(statement, conn.dialect)
    prepared = conn.connection.info.setdefault("erx_prepared", set())
    if plan.name not in prepared:
        conn.exec_driver_sql(plan.prepare)
        prepared.add(plan.name)
    return conn.execute(plan.execute, {**plan.defaults, **params})


def prepared_statement_text(name: str) -> str | None:
    """The statement text behind the prepared statement ``name`` (``erx_...``), or None:
    for logs and statement counts that see only ``EXECUTE name(...)``."""
    return _TEXTS.get(name)


# libpq's TCP keepalive options (https://www.postgresql.org/docs/15/libpq-connect.html):
# first probe after 60 s idle, then every 10 s, dead after 3 unanswered probes.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 60,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class Database:
    """The engine and a session factory for one database URL.

    ``pool_size``: connections the pool keeps (PostgreSQL); at least one per
    thread that holds a session at once (e.g. ``WORKER_SEND_THREADS`` + 1).
    ``prepared_statements``: see :func:`make_engine` (``DB_PREPARED_STATEMENTS``).
    """

    def __init__(self, url: str, *, pool_size: int = 5, prepared_statements: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, prepared_statements=prepared_statements)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        """True when the backend is PostgreSQL (``SKIP LOCKED`` is available)."""
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Yield a session in one transaction: committed on success, rolled back on error."""
        with self.sessionmaker() as session, session.begin():
            yield session

    @contextmanager
    def read_session(self, *, autocommit: bool = True) -> Iterator[Session]:
        """Yield a session for a read and its audit row, in as few round trips as the driver allows.

        PostgreSQL with ``autocommit``: psycopg2's client-side autocommit flag
        (no round trip) is set for the block, so each statement commits on its
        own and no ``BEGIN``/``COMMIT`` is sent: a read (one SELECT) plus a
        one-INSERT audit append is two round trips, and the INSERT has
        committed before the answer is sent. Only for blocks whose writes are
        each one statement: nothing spans two statements. Without
        ``autocommit``, and on SQLite, this is :meth:`session` (one
        transaction). The flag is cleared before the connection returns to the
        pool. Errors propagate.
        """
        if not (autocommit and self.is_postgres):
            with self.session() as session:
                yield session
            return
        with self.engine.connect() as conn:
            dbapi_conn = conn.connection.dbapi_connection
            dbapi_conn.autocommit = True  # type: ignore[union-attr]
            try:
                with Session(bind=conn, expire_on_commit=False) as session:
                    yield session
                    session.commit()  # flushes pending rows; psycopg2 sends no COMMIT in autocommit
            finally:
                if not dbapi_conn.closed:  # type: ignore[union-attr]  # invalidated on a disconnect
                    dbapi_conn.autocommit = False  # type: ignore[union-attr]

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


@contextmanager
def single_statement(engine: Engine) -> Iterator[Any]:
    """Yield a Connection on which each statement commits on its own (PostgreSQL: driver autocommit).

    For a write that is ONE statement (the webhook receipt's INSERT): psycopg2
    otherwise sends ``BEGIN`` before the statement and ``COMMIT`` after it, three
    round trips where one does; in autocommit the server commits the statement
    when it completes (atomically, before ``execute`` returns), so an answer
    sent after it still follows the commit. psycopg2's ``autocommit`` flag is a
    client-side switch (no round trip), set for the block and cleared before
    the connection goes back to the pool; SQLAlchemy's own
    ``isolation_level="AUTOCOMMIT"`` option is not used because resetting it on
    check-in costs a ``SET default_transaction_isolation`` round trip.
    SQLite (and any other driver) gets an ordinary ``engine.begin()`` block.
    Errors propagate as SQLAlchemy raises them.
    """
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        dbapi_conn = conn.connection.dbapi_connection
        dbapi_conn.autocommit = True  # type: ignore[union-attr]
        try:
            yield conn
        finally:
            if not dbapi_conn.closed:  # type: ignore[union-attr]  # invalidated on a disconnect
                dbapi_conn.autocommit = False  # type: ignore[union-attr]


def insert_ignore(session: Session, table: Table, values: Mapping[str, Any]) -> bool:
    """INSERT ``values`` into ``table`` unless a unique key already holds them.

    Returns True when a row was inserted, False when it was a duplicate. Uses
    ``ON CONFLICT DO NOTHING`` on both PostgreSQL and SQLite, so concurrent
    duplicates never raise and never write twice.
    """
    stmt = insert_ignore_statement(session.get_bind().dialect.name, table)
    result = session.execute(stmt, dict(values))
    return bool(result.rowcount)


_INSERT_IGNORE: dict[tuple[str, str], Any] = {}


def insert_ignore_statement(dialect: str, table: Table) -> Any:
    """Return the reusable ``INSERT ... ON CONFLICT DO NOTHING`` for ``table`` on ``dialect``.

    Built once per (dialect, table); execute it with a dict of values, so no
    statement is built per call on the hot paths (webhook ingest, history).
    """
    stmt = _INSERT_IGNORE.get((dialect, table.name))
    if stmt is None:
        builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = _INSERT_IGNORE[(dialect, table.name)] = builder(table).on_conflict_do_nothing()
    return stmt
