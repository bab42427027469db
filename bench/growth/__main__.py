"""``python -m bench.growth seed --database erx_bench_growth [--scale 1]``: grow a database.

The database (``erx_bench*`` only) is dropped and created, migrated and seeded as every
benchmark's (``Stack.prepare_database``), given the read benchmark's fixtures
(:mod:`bench.reads.fixtures`: the same patient, ids and timelines as the small database),
and then grown with ``INSERT ... SELECT generate_series`` in chunks of ``--chunk`` rows
(each its own transaction), at ``--scale`` 1:

* 100,000 patients (``gp-NNNNNNN``); 1,000,000 prescriptions (``gx-NNNNNNN``, dispensed, with
  a platform token ``GX<n>`` and one medicine line): 40% belong to 2,000 patients (200
  each: "some with hundreds"), 60% to the other 98,000 (about 6 each: "a handful");
* 5,000,000 history rows (five per prescription: queued, issued, signed, printed,
  dispensed; the webhook ones with event ids);
* 2,000,000 webhook inbox rows (processed, ``gin-N`` event ids, a 300-byte body);
* 10,000,000 audit rows. The audit table's columns are read from the database, so the
  seeder follows its schema: known columns get generated values, nullable unknown ones
  stay NULL, and an unknown NOT NULL column without a default stops the run naming it.

Then ``VACUUM ANALYZE``. Prints each step's rows and seconds. ``--scale 0.1`` grows a
tenth of everything (documented as such wherever its figures are used). The database is
kept: ``python -m bench.reads --growth-db NAME`` and ``BENCH_REUSE_DB=1 BENCH_PG_DB=NAME``
for ``bench.dispatch`` and ``bench/webhooks/run.sh`` run on it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, text

from bench.database import NAME_PATTERN, BenchDatabase, BenchDatabaseError
from bench.reads import fixtures
from scripts.stack import Stack, base_env

# Counts at --scale 1.
PATIENTS = 100_000
HEAVY_PATIENTS = 2_000
PRESCRIPTIONS = 1_000_000
HISTORY_PER_PRESCRIPTION = 5
INBOX = 2_000_000
AUDIT = 10_000_000


@dataclass(frozen=True)
class Plan:
    """Row counts of one growth run (``scale`` x the full counts)."""

    patients: int
    heavy: int
    prescriptions: int
    inbox: int
    audit: int

    @classmethod
    def at(cls, scale: float) -> Plan:
        """The counts at ``scale`` (0 < scale <= 1); ValueError otherwise."""
        if not 0 < scale <= 1:
            raise ValueError("--scale must be in (0, 1]")
        return cls(
            max(100, int(PATIENTS * scale)),
            max(10, int(HEAVY_PATIENTS * scale)),
            max(1000, int(PRESCRIPTIONS * scale)),
            max(1000, int(INBOX * scale)),
            max(1000, int(AUDIT * scale)),
        )


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size - 1, total)) for lo in range(1, total + 1, size)]


def _run(
    engine: Engine, label: str, total: int, chunk: int, sql: str, params: dict[str, Any]
) -> float:
    """Run ``sql`` (:lo, :hi) over 1..total in chunks, a transaction each; returns seconds."""
    started = time.monotonic()
    for lo, hi in _chunks(total, chunk):
        with engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            conn.execute(text(sql), {**params, "lo": lo, "hi": hi})
        print(f"   {label}: {hi:,} / {total:,} ({time.monotonic() - started:.0f} s)", flush=True)
    return time.monotonic() - started


PATIENTS_SQL = """
INSERT INTO patients (external_ref, region_code, first_name, last_name, gender, date_of_birth,
                      email, phone, address_line1, city, post_code, country)
SELECT 'gp-' || lpad(n::text, 7, '0'), CASE WHEN n % 3 = 0 THEN 'A' ELSE 'B' END, 'Grown',
       'Patient ' || n,
       CASE WHEN n % 2 = 0 THEN 'female' ELSE 'male' END, date '1950-01-01' + (n % 20000),
       NULL, NULL, n || ' Bench Street', 'Benchton', 'BX1 1AA', 'United Kingdom'
FROM generate_series(:lo, :hi) AS n ORDER BY n
"""

# Prescription n: 40% to the heavy patients (n % heavy), the rest spread over the others.
PRESCRIPTIONS_SQL = """
INSERT INTO prescriptions (reference, patient_id, prescriber_id, clinic_id, pharmacy_id, status,
                           platform_token, created_at, updated_at, last_event_at)
SELECT 'gx-' || lpad(n::text, 7, '0'),
       :pbase + CASE WHEN n % 10 < 4 THEN n % :heavy ELSE :heavy + n % (:patients - :heavy) END + 1,
       :prescriber, :clinic, :pharmacy, 'dispensed', 'GX' || n,
       now() - make_interval(mins => (n % 1000000)::int),
       now() - make_interval(mins => (n % 1000000)::int - 300),
       now() - make_interval(mins => (n % 1000000)::int - 300)
FROM generate_series(:lo, :hi) AS n ORDER BY n
"""

MEDICINES_SQL = """
INSERT INTO prescription_medicines (prescription_id, position, vpid, description, quantity,
                                    directions)
SELECT :rbase + n, 1, m.vpid, m.description, m.default_qty, m.default_directions
FROM generate_series(:lo, :hi) AS n JOIN medicines m ON m.seq_no = n % 16 + 1 ORDER BY n
"""

HISTORY_SQL = """
INSERT INTO prescription_status_history (prescription_id, from_status, to_status, occurred_at,
                                         received_at, source, event_id)
SELECT :rbase + n, s.from_status, s.to_status,
       now() - make_interval(mins => (n % 1000000)::int - 60 * s.k),
       now() - make_interval(mins => (n % 1000000)::int - 60 * s.k), s.source,
       CASE WHEN s.source = 'webhook' THEN 'gevt-' || n || '-' || s.k END
FROM generate_series(:lo, :hi) AS n
CROSS JOIN (VALUES (0, 'draft', 'queued', 'api'), (1, 'queued', 'issued', 'service'),
                   (2, 'issued', 'signed', 'webhook'), (3, 'signed', 'printed', 'webhook'),
                   (4, 'printed', 'dispensed', 'webhook')) AS s(k, from_status, to_status, source)
ORDER BY n, s.k
"""

INBOX_SQL = """
INSERT INTO webhook_inbox (event_id, event_type, platform_token, body, signature, state, attempts,
                           next_attempt_at, received_at, processed_at, awaiting_prescription)
SELECT 'gin-' || n, 'prescription.status_changed', 'GX' || (n % :prescriptions + 1),
       convert_to('{"id":"gin-' || n || '","type":"prescription.status_changed","data":{"token":"GX'
                  || (n % :prescriptions + 1) || '","status":"signed","padding":"'
                  || repeat('x', 180) || '"}}',
                  'UTF8'),
       't=1700000000,v1=' || md5(n::text) || md5((n + 1)::text), 'processed', 1,
       now() - make_interval(mins => (n % 1000000)::int),
       now() - make_interval(mins => (n % 1000000)::int),
       now() - make_interval(mins => (n % 1000000)::int), false
FROM generate_series(:lo, :hi) AS n ORDER BY n
"""

# Values for the audit table's columns by name, as SQL over n (the row number) and the
# prescription id base; the table's other columns must be nullable or have a default.
AUDIT_COLUMNS: dict[str, str] = {
    "actor": "'token-' || (n % 5000)",
    "role": "(ARRAY['patient', 'support', 'service', 'operator'])[n % 4 + 1]",
    "action": "(ARRAY['read', 'list', 'read', 'webhook-applied', 'send'])[n % 5 + 1]",
    "prescription_id": ":rbase + n % :prescriptions + 1",
    "prescription_ids": "ARRAY[:rbase + n % :prescriptions + 1]",
    "occurred_at": "now() - make_interval(secs => (:audit - n)::double precision / 10)",
    "request_id": "md5(n::text)",
    "client_addr": "'10.0.' || (n % 250) || '.' || (n % 200)",
    "prev_hash": "md5('p' || n) || md5('q' || n)",
    "hash": "md5('h' || n) || md5('i' || n)",
    "detail": "NULL",
}


# The hash chain of the first audit trail: filled only while the schema requires it (once
# the columns are nullable, appends leave them NULL and a sealer covers the rows instead).
CHAIN_COLUMNS = ("prev_hash", "hash")


def audit_insert_sql(engine: Engine) -> tuple[str, list[str]]:
    """The INSERT for the audit table as its schema stands; returns (sql, columns filled).

    Raises BenchDatabaseError naming a NOT NULL column without a default that the seeder
    has no value for.
    """
    with engine.connect() as conn:
        cols = conn.execute(
            text(
                "SELECT column_name, is_nullable, column_default, data_type"
                " FROM information_schema.columns WHERE table_name = 'audit_events'"
                " AND table_schema = current_schema() ORDER BY ordinal_position"
            )
        ).all()
    if not cols:
        raise BenchDatabaseError("no audit_events table")
    names, values = [], []
    for name, nullable, default, data_type in cols:
        if name in CHAIN_COLUMNS and nullable == "YES":
            continue  # rows appended the way the service appends now: no chain hashes
        if name in AUDIT_COLUMNS and not (name == "prescription_ids" and data_type != "ARRAY"):
            names.append(name)
            values.append(AUDIT_COLUMNS[name])
        elif nullable == "NO" and default is None:
            raise BenchDatabaseError(
                f"audit_events.{name} is NOT NULL and the seeder has no value for it"
            )
    sql = (
        f"INSERT INTO audit_events ({', '.join(names)}) SELECT {', '.join(values)}"
        " FROM generate_series(:lo, :hi) AS n ORDER BY n"
    )
    return sql, names


class IndexesDropped:
    """Drop a table's secondary indexes and unique constraints for a bulk load, rebuild them after.

    A sorted build of an index over millions of random hashes takes seconds; inserting the
    same keys one by one into the live index takes many minutes. The primary key stays.
    What is rebuilt is exactly what was there (``pg_get_indexdef``/``pg_get_constraintdef``).
    """

    def __init__(self, engine: Engine, table: str) -> None:
        self.engine, self.table = engine, table
        self.constraints: list[tuple[str, str]] = []
        self.indexes: list[tuple[str, str]] = []

    def __enter__(self) -> IndexesDropped:
        with self.engine.begin() as conn:
            self.constraints = [
                (r[0], r[1])
                for r in conn.execute(
                    text(
                        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                        " WHERE conrelid = CAST(:t AS regclass) AND contype = 'u'"
                    ),
                    {"t": self.table},
                )
            ]
            self.indexes = [
                (r[0], r[1])
                for r in conn.execute(
                    text(
                        "SELECT CAST(indexrelid AS regclass)::text, pg_get_indexdef(indexrelid)"
                        " FROM pg_index WHERE indrelid = CAST(:t AS regclass) AND NOT indisprimary"
                        " AND indexrelid NOT IN (SELECT conindid FROM pg_constraint"
                        " WHERE conrelid = CAST(:t AS regclass))"
                    ),
                    {"t": self.table},
                )
            ]
            for name, _ in self.constraints:
                conn.execute(text(f'ALTER TABLE {self.table} DROP CONSTRAINT "{name}"'))
            for name, _ in self.indexes:
                conn.execute(text(f"DROP INDEX {name}"))
        return self

    def __exit__(self, *_exc: object) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")
            for name, definition in self.constraints:
                conn.execute(text(f'ALTER TABLE {self.table} ADD CONSTRAINT "{name}" {definition}'))
            for _, definition in self.indexes:
                conn.exec_driver_sql(definition)


def _scalar(engine: Engine, sql: str, params: dict[str, Any] | None = None) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params or {}).scalar()


def seed(
    database: str, *, scale: float, chunk: int, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Build the grown database ``database``; returns the row counts and seconds per step.

    Raises BenchDatabaseError (bad name, PostgreSQL down, an audit column it cannot fill).
    """
    if not NAME_PATTERN.match(database):
        raise BenchDatabaseError(f"refusing database {database!r}: only erx_bench* databases")
    plan = Plan.at(scale)
    db = BenchDatabase(
        "postgresql", database, f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"
    )
    started = time.monotonic()
    db.recreate()
    Stack(env=base_env(DATABASE_URL=db.url, ERX_ENV="development")).prepare_database()
    engine = create_engine(db.url)
    steps: dict[str, float] = {}
    try:
        fixtures.load(engine)
        audit_sql, audit_cols = audit_insert_sql(engine)
        echo(f"== growing {database} at scale {scale:g}: {plan}; audit columns {audit_cols}")
        with engine.connect() as conn:
            clinic = conn.execute(text("SELECT min(id) FROM clinics")).scalar()
            prescriber = conn.execute(text("SELECT min(id) FROM prescribers")).scalar()
            pharmacy = conn.execute(
                text("SELECT min(id) FROM pharmacies WHERE branch_id IS NOT NULL")
            ).scalar()
        steps["patients"] = _run(engine, "patients", plan.patients, chunk, PATIENTS_SQL, {})
        pbase = int(
            _scalar(engine, "SELECT min(id) - 1 FROM patients WHERE external_ref LIKE 'gp-%'")
        )
        span = int(
            _scalar(
                engine, "SELECT max(id) - min(id) + 1 FROM patients WHERE external_ref LIKE 'gp-%'"
            )
        )
        if span != plan.patients:
            raise BenchDatabaseError(
                f"grown patients' ids are not contiguous ({span} for {plan.patients})"
            )
        common = {
            "pbase": pbase,
            "heavy": plan.heavy,
            "patients": plan.patients,
            "prescriptions": plan.prescriptions,
            "clinic": clinic,
            "prescriber": prescriber,
            "pharmacy": pharmacy,
            "audit": plan.audit,
        }
        steps["prescriptions"] = _run(
            engine, "prescriptions", plan.prescriptions, chunk, PRESCRIPTIONS_SQL, common
        )
        rbase = int(
            _scalar(engine, "SELECT min(id) - 1 FROM prescriptions WHERE reference LIKE 'gx-%'")
        )
        span = int(
            _scalar(
                engine,
                "SELECT max(id) - min(id) + 1 FROM prescriptions WHERE reference LIKE 'gx-%'",
            )
        )
        if span != plan.prescriptions:
            raise BenchDatabaseError(f"grown prescriptions' ids are not contiguous ({span})")
        common["rbase"] = rbase
        steps["medicines"] = _run(
            engine, "medicine lines", plan.prescriptions, chunk, MEDICINES_SQL, common
        )
        for step, table, label, total, size, sql in (
            (
                "history",
                "prescription_status_history",
                "history rows (x5)",
                plan.prescriptions,
                max(1, chunk // 5),
                HISTORY_SQL,
            ),
            ("inbox", "webhook_inbox", "inbox rows", plan.inbox, chunk, INBOX_SQL),
            ("audit", "audit_events", "audit rows", plan.audit, chunk, audit_sql),
        ):
            t0 = time.monotonic()
            with IndexesDropped(engine, table):
                steps[step] = _run(engine, label, total, size, sql, common)
            steps[f"{step}_with_index_builds"] = time.monotonic() - t0
        t0 = time.monotonic()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        steps["vacuum_analyze"] = time.monotonic() - t0
        with engine.connect() as conn:
            counts = {
                t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() or 0)
                for t in (
                    "patients",
                    "prescriptions",
                    "prescription_medicines",
                    "prescription_status_history",
                    "webhook_inbox",
                    "audit_events",
                )
            }
            size = conn.execute(
                text("SELECT pg_size_pretty(pg_database_size(current_database()))")
            ).scalar()
    finally:
        engine.dispose()
    result = {
        "database": database,
        "scale": scale,
        "plan": plan.__dict__,
        "counts": counts,
        "size": size,
        "seconds": {k: round(v, 1) for k, v in steps.items()},
        "total_s": round(time.monotonic() - started, 1),
    }
    echo(f"== {database}: {counts}, {size}, {result['total_s']} s")
    return result


def main(argv: list[str] | None = None) -> int:
    """``seed``: build the grown database; exits 2 with a one-line cause on bad input."""
    p = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("seed", help="drop, create and grow the database")
    s.add_argument(
        "--database",
        default="erx_bench_growth",
        help="an erx_bench* name (default erx_bench_growth)",
    )
    s.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the full counts, (0, 1] (default 1)"
    )
    s.add_argument(
        "--chunk",
        type=int,
        default=1_000_000,
        help="rows per INSERT transaction (default 1,000,000)",
    )
    args = p.parse_args(argv)
    if not 0 < args.scale <= 1 or not 1000 <= args.chunk <= 10_000_000:
        p.error("--scale must be in (0, 1] and --chunk 1,000..10,000,000")
    if not NAME_PATTERN.match(args.database):
        p.error("--database must be an erx_bench* name")
    try:
        result = seed(args.database, scale=args.scale, chunk=args.chunk)
    except BenchDatabaseError as exc:
        print(f"bench.growth: {exc}", file=sys.stderr)
        return 2
    from bench.report import write_results

    write_results(f"growth-seed-{args.database}", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
