"""Running the SQL seed scripts (``scripts/seed/*.sql``) on PostgreSQL or SQLite.

The scripts are plain portable SQL so that ``psql -f`` runs them too; this is
the one place the service (``flask seed``), the tests and the benchmarks run them.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from app.foundation.config import REPO_ROOT

SEED_DIR = REPO_ROOT / "scripts" / "seed"
BULK_SCRIPT = SEED_DIR / "002_test_prescriptions.sql"
BULK_COUNT_CLAUSE = "params(total) AS (SELECT 50)"


def seed_scripts() -> list[Path]:
    """Return the seed scripts in the order they run (by file name)."""
    return sorted(SEED_DIR.glob("*.sql"))


def bulk_prescriptions_sql(count: int) -> str:
    """Return the bulk generator with its one count changed to ``count`` (>= 1)."""
    sql = BULK_SCRIPT.read_text(encoding="utf-8")
    if BULK_COUNT_CLAUSE not in sql:
        raise RuntimeError(f"{BULK_SCRIPT.name} no longer contains {BULK_COUNT_CLAUSE!r}")
    return sql.replace(BULK_COUNT_CLAUSE, f"params(total) AS (SELECT {int(count)})")


def execute_sql_script(engine: Engine, sql: str) -> None:
    """Execute a multi-statement SQL script in one transaction; all or nothing."""
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "sqlite":
            raw.driver_connection.executescript(f"BEGIN;\n{sql}\nCOMMIT;")
        else:
            with raw.cursor() as cur:
                cur.execute(sql)
            raw.commit()
    except Exception:
        raw.rollback()
        raise
    finally:
        raw.close()


def run_seed_scripts(engine: Engine, *, reference_only: bool = False) -> list[str]:
    """Run every seed script (or just the reference data); returns the names run."""
    scripts = seed_scripts()[:1] if reference_only else seed_scripts()
    for script in scripts:
        execute_sql_script(engine, script.read_text(encoding="utf-8"))
    return [script.name for script in scripts]


BULK_PHARMACIES_SCRIPT = SEED_DIR / "bulk" / "pharmacies.sql"
BULK_PHARMACIES_CLAUSE = "params(total) AS (SELECT 12000)"


def bulk_pharmacies_sql(count: int = 12000) -> str:
    """Return scripts/seed/bulk/pharmacies.sql generating ``count`` (>= 1) pharmacies.

    Not part of :func:`run_seed_scripts` (the benchmark and its tests load it);
    run the result with :func:`execute_sql_script`.
    """
    sql = BULK_PHARMACIES_SCRIPT.read_text(encoding="utf-8")
    if BULK_PHARMACIES_CLAUSE not in sql:
        raise RuntimeError(
            f"{BULK_PHARMACIES_SCRIPT.name} no longer contains {BULK_PHARMACIES_CLAUSE!r}"
        )
    return sql.replace(BULK_PHARMACIES_CLAUSE, f"params(total) AS (SELECT {int(count)})")
