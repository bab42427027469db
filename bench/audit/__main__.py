"""``python -m bench.audit``: audit sealing lag, ``audit verify`` time, offline export check.

PostgreSQL only, in its own database (default ``erx_audit_bench`` on the local
server; ``--url`` to change), migrated to head and emptied first. Phases
(``--phases``, default all):

``lag``
    Appends audit rows at a steady ``--rate`` (300/s) for ``--duration`` (20) s
    from ``--appenders`` threads, each row in its own transaction, while one
    sealer process (``flask --app app audit seal --loop``) runs. Lag of a row =
    ``signed_at`` of the first checkpoint that covers it minus its
    ``occurred_at`` (both taken from the database rows). Prints p50/p99/max.
``verify``
    Seeds ``--rows`` rows set-based (``INSERT ... SELECT generate_series``), seals
    them set-based (leaf hashes by the same SQL ``audit verify`` uses, tree nodes
    and one signed checkpoint from app.merkle), then times
    ``app.audit_sealer.verify(full=True)``, the work of ``flask --app app audit verify --full``.
``export``
    Exports one prescription's rows (``--export-rows``, spread over the seeded log)
    and times the offline check (``docs/audit_verify_export.py``): in process
    (``check()``, median of 20) and as a subprocess (interpreter start included).

Every figure is printed with the command line; nothing is written to ``docs/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]
DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/erx_audit_bench"
BENCH_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
ORIGIN = "erx-connector.bench/audit"


def prepare(url: str) -> None:
    """Create the database if missing, migrate it to head, empty the audit tables."""
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        ).first():
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("SET LOCAL session_replication_role = replica")
        )  # past the append-only triggers
        conn.execute(
            text(
                "TRUNCATE audit_events, audit_leaves, audit_tree_nodes, audit_checkpoints, "
                "audit_seal_state RESTART IDENTITY"
            )
        )
    engine.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def phase_lag(url: str, *, rate: float, duration: float, appenders: int) -> dict[str, float]:
    from app.audit import record
    from app.db import Database

    prepare(url)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "AUDIT_SIGNING_KEYS": BENCH_KEY,
        "AUDIT_LOG_ORIGIN": ORIGIN,
        "ERX_ENV": "development",
    }
    sealer = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "audit", "seal", "--loop"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = Database(url, pool_size=appenders + 1)
    per_thread = rate / appenders
    waited = time.monotonic()
    with db.engine.connect() as conn:  # appends start once the sealer holds its lease
        while not conn.execute(
            text("SELECT count(*) FROM audit_seal_state WHERE holder IS NOT NULL")
        ).scalar():
            if time.monotonic() - waited > 300 or sealer.poll() is not None:
                raise SystemExit("the sealer did not start")
            time.sleep(0.1)
            conn.rollback()
    start = time.monotonic()

    def appender(k: int) -> None:
        n = 0
        while True:
            due = start + (n + k / appenders) / per_thread
            if due - start > duration:
                return
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            with db.session() as session:
                record(
                    session,
                    actor=f"bench-{k}",
                    role="service",
                    action="read",
                    prescription_id=n,
                    request_id=None,
                    client_addr=None,
                    now=datetime.now(UTC),
                )
            n += 1

    threads = [threading.Thread(target=appender, args=(k,)) for k in range(appenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(2.0)  # the last rows get sealed
    sealer.terminate()
    sealer.wait(timeout=30)
    with db.engine.connect() as conn:
        rows = (
            conn.execute(
                text(
                    "SELECT extract(epoch FROM (SELECT min(c.signed_at) FROM audit_checkpoints c "
                    "  WHERE c.tree_size > l.seq) - e.occurred_at) "
                    "FROM audit_leaves l JOIN audit_events e ON e.id = l.event_id"
                )
            )
            .scalars()
            .all()
        )
        total = conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
        span = conn.execute(
            text("SELECT extract(epoch FROM max(occurred_at) - min(occurred_at)) FROM audit_events")
        ).scalar_one()
    db.dispose()
    lags = [float(x) for x in rows if x is not None]
    return {
        "rows": total,
        "sealed": len(lags),
        "p50_s": round(percentile(lags, 0.50), 3),
        "p99_s": round(percentile(lags, 0.99), 3),
        "max_s": round(max(lags), 3),
        "rate_per_s": rate,
        "achieved_rate_per_s": round(total / float(span), 1) if span else 0.0,
        "duration_s": duration,
    }


def bulk_seal(url: str) -> int:
    """Seal every row at once: leaves by SQL, nodes and one checkpoint in Python (app.merkle)."""
    from app.audit_keys import checkpoint_text, parse_private_keys, sign_note
    from app.audit_sealer import LEAF_SQL, NODE_LEVEL_STEP
    from app.merkle import HASH_SIZE, Frontier, root_of

    key = parse_private_keys((BENCH_KEY,), origin=ORIGIN)[0]
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO audit_leaves (seq, event_id, leaf_hash) SELECT e.id - 1, e.id, {LEAF_SQL} "
                "FROM audit_events e ORDER BY e.id"
            )
        )
        size = conn.execute(text("SELECT count(*) FROM audit_leaves")).scalar_one()
        frontier = Frontier()
        level_rows: dict[int, list[bytes]] = {}
        chunk = 1 << 16
        for lo in range(0, size, chunk):
            blob = bytes(
                conn.execute(
                    text(
                        "SELECT string_agg(leaf_hash, ''::bytea ORDER BY seq) FROM audit_leaves "
                        "WHERE seq >= :lo AND seq < :hi"
                    ),
                    {"lo": lo, "hi": lo + chunk},
                ).scalar_one()
            )
            leaves = [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]
            for leaf in leaves:
                frontier.append(leaf)
            below = leaves
            level = NODE_LEVEL_STEP
            while len(below) >= 1 << NODE_LEVEL_STEP:
                span = 1 << NODE_LEVEL_STEP
                nodes = [
                    root_of(below[i : i + span]) for i in range(0, len(below) - span + 1, span)
                ]
                level_rows.setdefault(level, []).extend(nodes)
                below = nodes
                level += NODE_LEVEL_STEP
        for level, hashes in level_rows.items():
            conn.execute(
                text("INSERT INTO audit_tree_nodes (level, idx, hash) VALUES (:l, :i, :h)"),
                [{"l": level, "i": i, "h": h} for i, h in enumerate(hashes)],
            )
        at = datetime.now(UTC)
        root = frontier.root()
        note = sign_note(checkpoint_text(origin=ORIGIN, size=size, root=root, at=at), key)
        conn.execute(
            text(
                "INSERT INTO audit_checkpoints (tree_size, root_hash, signed_at, key_id, note) "
                "VALUES (:s, :r, :t, :k, :n)"
            ),
            {"s": size, "r": root, "t": at, "k": key.key_id_hex, "n": note},
        )
        xmax = conn.execute(
            text("SELECT (pg_snapshot_xmax(pg_current_snapshot())::text)::bigint")
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO audit_seal_state (id, horizon, upto, pending_xids, last_event_id, tree_size, frontier, "
                "drain_after) VALUES (1, :x, :x, '', :s, :s, :f, 0)"
            ),
            {"x": xmax, "s": size, "f": frontier.to_bytes()},
        )
        conn.execute(text("ANALYZE audit_events"))
        conn.execute(text("ANALYZE audit_leaves"))
        conn.execute(text("ANALYZE audit_tree_nodes"))
    engine.dispose()
    return size


def seed(url: str, rows: int, *, export_rows: int) -> None:
    """``rows`` audit rows set-based; prescription 1 gets ``export_rows`` of them, spread out."""
    prepare(url)
    every = max(1, rows // max(1, export_rows))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_events (actor, role, action, prescription_id, occurred_at, request_id, client_addr) "
                "SELECT 'user-' || (g % 997), 'support', 'read', "
                "  CASE WHEN g % :every = 0 THEN 1 ELSE 2 + g % 100000 END, "
                "  timestamptz '2026-12-01 00:00:00+00' + g * interval '1 millisecond', "
                "  'rid-' || g, '10.0.' || (g % 256) || '.' || (g % 250) "
                "FROM generate_series(1, :n) AS g"
            ),
            {"n": rows, "every": every},
        )
    engine.dispose()


def phase_verify(url: str, *, rows: int, export_rows: int) -> dict[str, float]:
    from app.audit_keys import parse_private_keys
    from app.audit_sealer import verify
    from app.db import Database

    t0 = time.monotonic()
    seed(url, rows, export_rows=export_rows)
    seeded_s = time.monotonic() - t0
    t0 = time.monotonic()
    size = bulk_seal(url)
    sealed_s = time.monotonic() - t0
    keys = parse_private_keys((BENCH_KEY,), origin=ORIGIN)
    db = Database(url)
    t0 = time.monotonic()
    report = verify(db, keys, full=True, max_unsealed_age_s=1e12, record_mark=False)
    verify_s = time.monotonic() - t0
    db.dispose()
    if not report.ok:
        raise SystemExit(f"verify found problems: {report.problems[:3]}")
    return {
        "rows": size,
        "seed_s": round(seeded_s, 1),
        "bulk_seal_s": round(sealed_s, 1),
        "verify_full_s": round(verify_s, 1),
        "leaves_checked": report.leaves_checked,
    }


def phase_export(url: str, out: Path) -> dict[str, float]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "AUDIT_SIGNING_KEYS": BENCH_KEY,
        "AUDIT_LOG_ORIGIN": ORIGIN,
        "ERX_ENV": "development",
    }
    engine = create_engine(url)
    with (
        engine.begin() as conn
    ):  # the export needs a prescription row (seed reference data if missing)
        has = conn.execute(text("SELECT count(*) FROM prescriptions WHERE id = 1")).scalar_one()
    engine.dispose()
    if not has:
        subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app", "seed"],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
    t0 = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "app",
            "audit",
            "export",
            "1",
            "--out",
            str(out),
            "--actor",
            "bench",
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    export_s = time.monotonic() - t0
    spec = importlib.util.spec_from_file_location(
        "audit_verify_export", REPO / "docs" / "audit_verify_export.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    data = json.loads(out.read_text())
    vkey = data["public_keys"][0]["vkey"]
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        problems, checked = module.check(json.loads(out.read_text()), [vkey])
        times.append(time.perf_counter() - t0)
        if problems:
            raise SystemExit(f"offline check failed: {problems[:3]}")
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, str(REPO / "docs" / "audit_verify_export.py"), str(out), "--vkey", vkey],
        check=True,
        capture_output=True,
    )
    sub_s = time.monotonic() - t0
    return {
        "rows_proven": checked,
        "tree_size": data["checkpoint"]["tree_size"],
        "export_cli_s": round(export_s, 2),
        "check_in_process_ms": round(statistics.median(times) * 1000, 1),
        "check_subprocess_ms": round(sub_s * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="audit log benchmarks (PostgreSQL)")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--phases", default="lag,verify,export")
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--appenders", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--export-rows", type=int, default=50)
    args = parser.parse_args(argv)
    if "test" in make_url(args.url).database or not make_url(args.url).drivername.startswith(
        "postgresql"
    ):
        raise SystemExit("bench.audit needs its own PostgreSQL database (not a test one)")
    print("command:", " ".join([sys.executable, "-m", "bench.audit", *(argv or sys.argv[1:])]))
    phases = args.phases.split(",")
    if "lag" in phases:
        print(
            "lag:",
            json.dumps(
                phase_lag(
                    args.url, rate=args.rate, duration=args.duration, appenders=args.appenders
                )
            ),
            flush=True,
        )
    if "verify" in phases:
        print(
            "verify:",
            json.dumps(phase_verify(args.url, rows=args.rows, export_rows=args.export_rows)),
            flush=True,
        )
    if "export" in phases:
        print(
            "export:",
            json.dumps(phase_export(args.url, Path("/tmp") / "erx-audit-bench-export.json")),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
