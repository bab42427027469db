"""Shared fixtures: a migrated real database, seeded per test, and the Flask app.

PostgreSQL when ``DATABASE_URL`` is set (CI sets it; the database name must
contain "test" because every test empties it), SQLite in a temp folder otherwise.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, make_url, text

from app import create_app
from app.foundation.config import Settings
from app.foundation.db import Database
from app.foundation.models import Base
from app.services.seeding import run_seed_scripts
from tests.support import PRESCRIBER_SECRETS, FakeClock

__all__ = ["PRESCRIBER_SECRETS", "FakeClock", "bearer", "make_settings"]
from tests.support import audit_triggers_suspended

REPO = Path(__file__).resolve().parent.parent


def _postgres_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        return None
    parsed = make_url(url.replace("postgres://", "postgresql://", 1)).set(
        drivername="postgresql+psycopg2"
    )
    if "test" not in (parsed.database or ""):
        pytest.exit(
            f"refusing to run tests against database {parsed.database!r}: its name must contain 'test'"
        )
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        ).first()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = _postgres_url() or f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    cfg = Config(str(REPO / "alembic.ini"))
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    try:
        command.upgrade(cfg, "head")
    finally:
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous
    return url


@pytest.fixture(scope="session")
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def empty_database(database: Database) -> None:
    """Delete every row (children first); keeps the schema."""
    # audit_events refuses DELETE and TRUNCATE (append-only); tests may empty it.
    with database.engine.begin() as conn, audit_triggers_suspended(conn):
        if database.is_postgres:
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


def seed_database(database: Database) -> None:
    """Run the SQL seed scripts, as `flask seed` does."""
    run_seed_scripts(database.engine)


@pytest.fixture
def seeded(db: Database) -> Database:
    """The database emptied and seeded with reference data and 50 draft prescriptions."""
    empty_database(db)
    seed_database(db)
    return db


TEST_JWT_SECRET = secrets.token_urlsafe(32)


def make_settings(db_url: str, **overrides: object) -> Settings:
    """Test settings: development secrets, fast retries."""
    values: dict[str, object] = {
        "env": "test",
        "database_url": db_url,
        "dispatch_backoff_base_s": 0.05,
        "dispatch_backoff_cap_s": 0.5,
        "inbox_backoff_base_s": 0.05,
        "inbox_backoff_cap_s": 0.5,
        "worker_poll_s": 0.05,
        "erx_read_timeout_s": 2.0,
        # Fake platforms answer scripted replies in arrival order: one send at a time, so
        # each reply meets the prescription the test means. Threaded sends have their own
        # tests (tests/unit/test_dispatch_threads.py) and run in the worker processes.
        "worker_send_threads": 1,
        # Tests make many calls from one address within a minute; the rate-limit tests
        # (tests/unit/test_rate_limits.py) set low limits themselves.
        # Made per test run: no committed value ever verifies a token.
        "jwt_secret": TEST_JWT_SECRET,
        "rate_limit_search": "100000 per minute",
        "rate_limit_send": "100000 per minute",
        "rate_limit_auth_failures": "100000 per minute",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, mail_dir=str(tmp_path / "mail"))


@pytest.fixture
def app(settings: Settings, seeded: Database):  # type: ignore[no-untyped-def]
    application = create_app(settings, db=seeded)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def runner(app):  # type: ignore[no-untyped-def]
    """The CLI runner of ``app`` (flaskr's fixture trio: app, client, runner)."""
    return app.test_cli_runner()


@pytest.fixture
def with_credentials(app, runner):  # type: ignore[no-untyped-def]
    """Store the sandbox prescribers' credentials through the real CLI command."""
    for email, (password, pin) in PRESCRIBER_SECRETS.items():
        result = runner.invoke(
            args=["prescribers", "set-credentials", email],
            env={"ERX_PRESCRIBER_PASSWORD": password, "ERX_PRESCRIBER_PIN": pin},
        )
        assert result.exit_code == 0, result.output
    return app


def bearer(app, *, role: str, subject: str = "pt-0001", ttl_s: int = 3600) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """``Authorization`` header with a development JWT minted for ``app``'s settings and clock."""
    from app.interfaces.identity import mint_token

    svc = app.extensions["erx"]
    token = mint_token(svc.settings, role=role, subject=subject, ttl_s=ttl_s, now=svc.unix_time())
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth(app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A ``service`` caller's header (server to server: sends any prescription, sees its token)."""
    return bearer(app, role="service", subject="svc-tests")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log record of this process as JSON lines (app/foundation/logs.py) in a buffer.

    At DEBUG; restored afterwards.
    """
    from app.foundation.logs import configure_logging

    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    handler = configure_logging(stream=buffer, level="DEBUG")
    yield buffer
    root.removeHandler(handler)
    root.setLevel(level)
