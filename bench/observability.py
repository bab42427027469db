"""``python -m bench.observability``: what logging, auditing and key rotation cost.

1. A throwaway database (``bench.database``; default PostgreSQL ``erx_bench_obs``,
   ``BENCH_DB=sqlite`` for SQLite) is migrated and seeded.
2. Logging: ``--log-records`` records (a message with two args and three
   ``extra`` fields) through the service's handler (redaction filter + JSON
   formatter) into memory, against the same records through a plain
   ``logging.Formatter`` with no filter: microseconds per record.
3. Audit: ``--audit-rows`` calls of ``app.mechanisms.audit.record``, each in its own
   transaction as an API call would (latency percentiles), then ``verify`` over
   all of them (rows per second).
4. Keys: ``--prescribers`` prescribers with password and PIN under an old key,
   then ``rotate_credentials`` to a new key in batches of 100 (seconds).

Prints a Markdown table and writes ``bench/results/observability.json``.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import time
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import insert, select

from app.foundation.crypto import CredentialCipher
from app.foundation.db import Database, utcnow
from app.foundation.logs import configure_logging
from app.foundation.models import Clinic, Prescriber
from app.mechanisms.audit import record
from app.mechanisms.audit_keys import generate_private_key, parse_private_keys
from app.mechanisms.audit_sealer import seal_once, verify
from app.services.keys import rotate_credentials
from bench.database import BenchDatabase
from bench.report import fmt, machine, markdown_table, percentile, write_results
from scripts.stack import Stack, base_env


def _log_cost(records: int) -> tuple[float, float]:
    """Microseconds per record: (service handler, plain formatter)."""
    logger = logging.getLogger("bench.obs")
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level

    def run(handler: logging.Handler) -> float:
        root.handlers = [handler]
        started = time.perf_counter()
        for i in range(records):
            logger.info(
                "outbox %s attempt %d failed",
                i,
                3,
                extra={"outbox_id": i, "queue": "dispatch", "state": "pending"},
            )
        return (time.perf_counter() - started) / records * 1e6

    try:
        ours = configure_logging(stream=io.StringIO(), level="INFO")
        service_us = run(ours)
        plain = logging.StreamHandler(io.StringIO())
        plain.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        plain_us = run(plain)
    finally:
        root.handlers, root.level = saved_handlers, saved_level
    return service_us, plain_us


def _audit(db: Database, rows: int) -> dict[str, Any]:
    latencies = []
    for i in range(rows):
        started = time.perf_counter()
        with db.session() as session:
            record(
                session,
                actor=f"token-{i % 5}",
                role="support",
                action="read",
                prescription_id=i % 50 + 1,
                request_id=f"{i:032x}",
                client_addr="10.0.0.1",
                now=utcnow(),
            )
        latencies.append((time.perf_counter() - started) * 1000)
    keys = parse_private_keys((generate_private_key(),), origin="erx-connector.bench/audit")
    while seal_once(db, keys, origin="erx-connector.bench/audit").sealed:
        pass
    started = time.perf_counter()
    result = verify(db, keys, full=True, max_unsealed_age_s=1e12, record_mark=False)
    verify_s = time.perf_counter() - started
    assert result.ok and result.leaves_checked >= rows, result
    return {
        "rows": rows,
        "record_p50_ms": percentile(latencies, 50),
        "record_p99_ms": percentile(latencies, 99),
        "verify_s": verify_s,
        "verify_rows_per_s": rows / verify_s,
    }


def _rotation(db: Database, prescribers: int) -> dict[str, Any]:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    cipher = CredentialCipher([old])
    with db.session() as session:
        clinic_id = session.scalars(select(Clinic.id)).first()
        session.execute(
            insert(Prescriber),
            [
                {
                    "platform_prescriber_id": 800000 + i,
                    "name": f"Bench {i}",
                    "email": f"b{i}@bench.example.test",
                    "clinic_id": clinic_id,
                    "password_enc": cipher.encrypt(f"pw-{i}"),
                    "pin_enc": cipher.encrypt(f"{i:06d}"),
                }
                for i in range(prescribers)
            ],
        )
    started = time.perf_counter()
    report = rotate_credentials(db, [new, old], batch_size=100)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    rerun = rotate_credentials(db, [new, old], batch_size=100)
    rerun_s = time.perf_counter() - started
    return {
        "prescribers": report.prescribers,
        "rotated": report.rotated,
        "seconds": seconds,
        "rerun_rotated": rerun.rotated,
        "rerun_seconds": rerun_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-records", type=int, default=20_000)
    parser.add_argument("--audit-rows", type=int, default=2_000)
    parser.add_argument("--prescribers", type=int, default=1_000)
    args = parser.parse_args()

    os.environ.setdefault("BENCH_PG_DB", "erx_bench_obs")
    bench_db = BenchDatabase.from_env()
    bench_db.recreate()
    try:
        Stack(env=base_env(DATABASE_URL=bench_db.url, ERX_ENV="test")).prepare_database()
        db = Database(bench_db.url)
        try:
            service_us, plain_us = _log_cost(args.log_records)
            audit = _audit(db, args.audit_rows)
            rotation = _rotation(db, args.prescribers)
        finally:
            db.dispose()
    finally:
        bench_db.finish()

    print(f"database: {bench_db.label}\n")
    print(
        markdown_table(
            ["measure", "value"],
            [
                [
                    f"log record, service handler (redaction + JSON), {args.log_records:,} records",
                    fmt(service_us, 1, " µs"),
                ],
                ["log record, plain formatter, no filter", fmt(plain_us, 1, " µs")],
                [
                    f"audit.record in its own transaction, p50 / p99 ({audit['rows']:,} rows)",
                    f"{fmt(audit['record_p50_ms'], 2)} / {fmt(audit['record_p99_ms'], 2)} ms",
                ],
                ["audit verify", f"{fmt(audit['verify_rows_per_s'], 0)} rows/s"],
                [
                    f"keys rotate, {rotation['prescribers']:,} prescribers "
                    f"({rotation['rotated']:,} values), batches of 100",
                    fmt(rotation["seconds"], 2, " s"),
                ],
                ["keys rotate rerun (nothing to do)", fmt(rotation["rerun_seconds"], 2, " s")],
            ],
        )
    )
    path = write_results(
        "observability",
        {
            "database": bench_db.label,
            "machine": machine(),
            "log_us_per_record": {"service": service_us, "plain": plain_us},
            "audit": audit,
            "rotation": rotation,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
