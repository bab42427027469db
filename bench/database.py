"""The throwaway database every benchmark runs on, and the SQL helpers around it.

PostgreSQL (production) by default: database ``erx_bench`` on 127.0.0.1:5432,
user ``postgres`` (trust auth), dropped and created at the start of a run and
dropped at the end (``BENCH_KEEP_DB=1`` keeps it). ``BENCH_DB=sqlite`` uses
``instance/bench/erx_bench.sqlite3`` instead. Only names that start with
``erx_bench`` are ever created or dropped: anything else is refused.
``BENCH_REUSE_DB=1`` runs on the database as it is (neither dropped nor created:
e.g. the grown database of ``python -m bench.growth seed``); it must exist.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from app.services.seeding import bulk_prescriptions_sql
from app.services.seeding import execute_sql_script as run_sql  # noqa: F401 - re-exported for the benchmarks
from scripts.stack import REPO_ROOT

NAME_PATTERN = re.compile(r"^erx_bench[a-z0-9_]{0,40}$")
SQLITE_PATH = REPO_ROOT / "instance" / "bench" / "erx_bench.sqlite3"


class BenchDatabaseError(RuntimeError):
    """The benchmark database cannot be used (bad name, server down...)."""


@dataclass(frozen=True)
class BenchDatabase:
    """Where the benchmark's data lives: ``kind`` is ``postgresql`` or ``sqlite``."""

    kind: str
    name: str
    url: str
    reuse: bool = False

    @classmethod
    def from_env(cls) -> BenchDatabase:
        """``BENCH_DB`` (postgresql|sqlite), ``BENCH_PG_DB`` (erx_bench*), ``BENCH_PG_PORT``."""
        kind = os.environ.get("BENCH_DB", "postgresql").strip().lower()
        if kind == "sqlite":
            return cls("sqlite", SQLITE_PATH.name, f"sqlite:///{SQLITE_PATH}")
        if kind not in ("postgresql", "postgres", "pg"):
            raise BenchDatabaseError("BENCH_DB must be postgresql or sqlite")
        name = os.environ.get("BENCH_PG_DB", "erx_bench").strip()
        if not NAME_PATTERN.match(name):
            raise BenchDatabaseError(
                f"refusing database {name!r}: benchmarks only create and drop erx_bench* databases"
            )
        port = int(os.environ.get("BENCH_PG_PORT", "5432"))
        reuse = os.environ.get("BENCH_REUSE_DB", "") in ("1", "true", "yes")
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{name}"
        return cls("postgresql", name, url, reuse)

    @property
    def label(self) -> str:
        """What the reports print: ``PostgreSQL 15.x (erx_bench)`` or ``SQLite``."""
        return self.kind if self.kind == "sqlite" else f"postgresql ({self.name})"

    def _admin(self):  # type: ignore[no-untyped-def]
        port = self.url.rsplit(":", 1)[1].split("/", 1)[0]
        return create_engine(
            f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres",
            isolation_level="AUTOCOMMIT",
        )

    def server_version(self) -> str:
        """The database engine's version string (for the report)."""
        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                if self.kind == "sqlite":
                    return "SQLite " + str(conn.exec_driver_sql("select sqlite_version()").scalar())
                return "PostgreSQL " + str(conn.exec_driver_sql("show server_version").scalar())
        finally:
            engine.dispose()

    def recreate(self) -> None:
        """Drop the benchmark database if it exists, then create it empty.

        With ``reuse`` (``BENCH_REUSE_DB=1``) nothing is dropped: raises BenchDatabaseError
        when the database does not exist.
        """
        if self.reuse:
            if not self.exists():
                raise BenchDatabaseError(f"BENCH_REUSE_DB=1 but {self.name} does not exist")
            return
        self.drop()
        if self.kind == "sqlite":
            SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
            return
        assert NAME_PATTERN.match(self.name)
        admin = self._admin()
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        except Exception as exc:  # noqa: BLE001 - say what to check, then stop
            raise BenchDatabaseError(
                f"cannot create {self.name} on 127.0.0.1 ({type(exc).__name__}): is PostgreSQL running "
                "with trust auth for user postgres? Or run with BENCH_DB=sqlite."
            ) from exc
        finally:
            admin.dispose()

    def exists(self) -> bool:
        """Whether the PostgreSQL database exists (SQLite: whether the file does)."""
        if self.kind == "sqlite":
            return SQLITE_PATH.exists()
        admin = self._admin()
        try:
            with admin.connect() as conn:
                return (
                    conn.execute(
                        text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": self.name}
                    ).scalar()
                    is not None
                )
        finally:
            admin.dispose()

    def drop(self) -> None:
        """Drop the benchmark database (only ever ``erx_bench*`` or the bench SQLite file)."""
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
            return
        assert NAME_PATTERN.match(self.name)
        admin = self._admin()
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        finally:
            admin.dispose()

    def finish(self) -> None:
        """Drop the database at the end of a run unless ``BENCH_KEEP_DB=1`` or ``reuse``."""
        if self.reuse:
            return
        if os.environ.get("BENCH_KEEP_DB", "") not in ("1", "true", "yes"):
            self.drop()


def bulk_seed_sql(total: int) -> str:
    """The bulk seed with its one count set to ``total`` (references have 6 digits).

    Prescription n is ``rx-`` + n zero-padded to 6 digits, patient pt-((n-1) % 24 + 1):
    patients pt-0001..pt-0016 are Region B, so 2/3 of the rows are Region B.
    """
    if not 0 < total < 1_000_000:
        raise ValueError("the seed's references have 6 digits: total must be below 1,000,000")
    return bulk_prescriptions_sql(total)


def seed_total_for_region_b(count: int) -> int:
    """The seed total that yields at least ``count`` Region B prescriptions (16 of every 24)."""
    full, rest = divmod(count, 16)
    return full * 24 + rest
