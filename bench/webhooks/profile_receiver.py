"""``python -m bench.webhooks.profile_receiver``: where the receiver's CPU goes, in isolation.

No HTTP server and no load generator: the service's WSGI app (``create_app()``,
the same one gunicorn serves) and the reference receiver
(``bench/webhooks/reference.py``) are each called directly as WSGI callables,
``--requests`` signed ~1 KB status events per round (unique ids), one thread,
on a throwaway PostgreSQL database (``bench.database``: ``BENCH_PG_DB``, an
``erx_bench*`` name, dropped and created first, dropped at the end). Rounds
alternate which app goes first. Per request it reports:

* **app CPU** (``time.process_time`` of this process: the Python request path,
  SQLAlchemy and psycopg2 included, no HTTP parsing, identical for both apps);
* **DB CPU**: user+system CPU of the PostgreSQL backends serving this process's
  connections (read from ``/proc/<pid>/stat``; same machine only), i.e. what the
  INSERT + COMMIT cost the database. Background processes (WAL writer,
  checkpointer) are not included;

then, with ``--interleaved N``, N rounds in which the two apps are called in lockstep
(request i of each, alternating which goes first), the thread CPU of each call
summed per app: the least noisy comparison on a shared machine; with
``--profile``, cProfile's top functions (own time) for one round of
each app, and the DB CPU per INSERT + COMMIT of statement variants run with
psycopg2 alone (``--sql-variants``): the service's INSERT with and without
``RETURNING pg_notify``, the reference's, and the inbox table without its
secondary indexes, so that each column/index/notify can be priced on its own.

    BENCH_PG_DB=erx_bench_receiver .venv/bin/python -m bench.webhooks.profile_receiver \\
        --requests 20000 --rounds 3 --interleaved 3 --profile --sql-variants

Figures are CPU per request, not throughput: they do not depend on how many
cores the machine has, but a busy machine still inflates them (cache, frequency),
so compare the two apps within one run. Results in ``docs/benchmarks.md``
("Receiver CPU profile").
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import create_engine, text

from bench import procstat
from bench.database import BenchDatabase
from bench.webhooks.events import Target, event_body, run_tag, signature
from bench.webhooks.reference import TABLE as REFERENCE_TABLE
from bench.webhooks.reference import create_table
from scripts.stack import BIN, REPO_ROOT, WEBHOOK_SECRET, base_env

PATH = "/webhooks/platform"


def signed_requests(prefix: str, count: int) -> list[tuple[bytes, str]]:
    """``count`` (body, X-Signature) pairs of ``prescription.status_updated`` events, ids ``prefix`` + n."""
    now = time.time()
    ts = int(now)
    target = Target(token="SRXPROFILE0001", client_ref_id="rx-profile")
    out = []
    for i in range(count):
        body = event_body(f"{prefix}{i:010d}", target, "signed", "issued", now)
        out.append((body, signature(WEBHOOK_SECRET, ts, body)))
    return out


def environ_for(body: bytes, sig: str) -> dict[str, Any]:
    """A WSGI environ like gunicorn's for one POST (no HTTP parsing cost on either side)."""
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": PATH,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_X_SIGNATURE": sig,
        "HTTP_USER_AGENT": "profile_receiver",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def drive(app: Callable[..., Iterable[bytes]], requests: list[tuple[bytes, str]]) -> int:
    """Call ``app`` once per request; returns how many answered 200 (anything else is counted, not raised)."""
    ok = 0
    status_seen: list[str] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        status_seen.append(status)
        return lambda _data: None

    for body, sig in requests:
        result = app(environ_for(body, sig), start_response)
        try:
            for _chunk in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if status_seen.pop().startswith("200"):
            ok += 1
    return ok


def backend_pids(engine: Any, dbname: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to ``dbname`` (this process is the only client)."""
    with engine.connect() as conn:
        me = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        rows = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": dbname}
        ).scalars()
        return [int(pid) for pid in rows if pid != me]


def pids_cpu(pids: Iterable[int]) -> float:
    """CPU seconds (user+system) of ``pids`` so far (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        stat = procstat._stat(pid)
        if stat is not None:
            total += stat[2]
    return total


def measure(
    name: str, app: Any, requests: list[tuple[bytes, str]], probe: Any, dbname: str
) -> dict[str, float]:
    """One round of ``app``: app CPU ms and DB backend CPU ms per request, wall rps."""
    drive(app, requests[:50])  # make sure the pool's connection exists before sampling backends
    pids = backend_pids(probe, dbname)
    db0, cpu0, wall0 = pids_cpu(pids), time.process_time(), time.perf_counter()
    ok = drive(app, requests[50:])
    cpu1, wall1, db1 = time.process_time(), time.perf_counter(), pids_cpu(pids)
    n = len(requests) - 50
    if ok != n:
        raise SystemExit(f"{name}: only {ok} of {n} requests answered 200")
    return {
        "app_ms": (cpu1 - cpu0) / n * 1000,
        "db_ms": (db1 - db0) / n * 1000,
        "rps": n / (wall1 - wall0),
    }


def interleaved(
    apps: dict[str, Any], requests: dict[str, list[tuple[bytes, str]]]
) -> dict[str, float]:
    """App CPU ms per request of each app, calling them in lockstep (request i of each, the order
    alternating), so that whatever else the machine does weighs on both alike. ``time.thread_time``
    around each call; the DB backends' CPU is not separated here (see :func:`measure`)."""
    names = list(apps)
    spent = dict.fromkeys(names, 0.0)
    count = min(len(r) for r in requests.values())
    for i in range(count):
        for name in names if i % 2 == 0 else reversed(names):
            t0 = time.thread_time()
            if drive(apps[name], requests[name][i : i + 1]) != 1:
                raise SystemExit(f"{name}: request {i} was not answered 200")
            spent[name] += time.thread_time() - t0
    return {name: spent[name] / count * 1000 for name in names}


def profile_top(app: Any, requests: list[tuple[bytes, str]], top: int) -> str:
    """cProfile one pass of ``requests`` through ``app``; the ``top`` functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    drive(app, requests)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


SQL_VARIANTS_TABLES = {
    # name -> (source table, indexes to drop on the copy, by the columns in their generated names)
    "inbox (as migrated)": ("webhook_inbox", ()),
    "inbox without ix_due, ix_platform_token": (
        "webhook_inbox",
        ("state_next_attempt_at", "platform_token"),
    ),
    "inbox without ix_platform_token": ("webhook_inbox", ("platform_token",)),
    "reference table": (REFERENCE_TABLE, ()),
}


def sql_variants(url: str, count: int, passes: int = 3) -> list[tuple[str, float]]:
    """DB backend CPU ms per INSERT + COMMIT for each statement/table variant (psycopg2 only), median of ``passes``."""
    import psycopg2

    dsn = url.replace("postgresql+psycopg2://", "postgresql://", 1)
    body = event_body(
        "x" * 24, Target("SRXPROFILE0001", "rx-profile"), "signed", "issued", time.time()
    )
    cols = (
        "event_id, event_type, platform_token, body, signature, state, attempts, next_attempt_at,"
        " last_error, received_at, processed_at, awaiting_prescription"
    )
    vals = (
        "%s, 'prescription.status_updated', 'SRXPROFILE0001', %s, 't=1,v1=ab', "
        "'pending', 0, now(), NULL, now(), NULL, false"
    )
    ref_cols = "event_id, event_type, platform_token, body, signature, state, attempts, next_attempt_at, received_at"
    ref_vals = "%s, 'prescription.status_updated', 'SRXPROFILE0001', %s, 't=1,v1=ab', 'pending', 0, now(), now()"
    results = []
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        conn.commit()
        cases: list[tuple[str, str]] = []
        for n, (label, (source, drop)) in enumerate(SQL_VARIANTS_TABLES.items()):
            copy = f"prof_variant_{n}"
            cur.execute(f"DROP TABLE IF EXISTS {copy}")
            cur.execute(f"CREATE TABLE {copy} (LIKE {source} INCLUDING ALL)")
            cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (copy,))
            for (index,) in cur.fetchall():
                if any(columns in index for columns in drop):
                    cur.execute(f"DROP INDEX {index}")
            conn.commit()
            if source == REFERENCE_TABLE:
                cases.append(
                    (
                        label + ": reference INSERT",
                        f"INSERT INTO {copy} ({ref_cols}) VALUES ({ref_vals}) ON CONFLICT DO NOTHING",
                    )
                )
            else:
                stmt = f"INSERT INTO {copy} ({cols}) VALUES ({vals}) ON CONFLICT DO NOTHING"
                cases.append((label + ": service INSERT", stmt))
                if not drop:
                    cases.append(
                        (
                            label + ": service INSERT RETURNING pg_notify",
                            stmt + " RETURNING pg_notify('erx_prof_nobody', '')",
                        )
                    )
        per_case: dict[str, list[float]] = {label: [] for label, _ in cases}
        for rnd in range(passes):
            # Several passes, alternating the order, each case on fresh ids; the median is reported.
            for k, (label, stmt) in enumerate(cases if rnd % 2 == 0 else list(reversed(cases))):
                for i in range(100):  # warm-up
                    cur.execute(stmt, (f"w{rnd}_{k}_{i}_{label}", body))
                    conn.commit()
                cpu0 = pids_cpu([pid])
                for i in range(count):
                    cur.execute(stmt, (f"m{rnd}_{i:09d}_{label}"[:100], body))
                    if cur.description:
                        cur.fetchall()
                    conn.commit()
                per_case[label].append((pids_cpu([pid]) - cpu0) / count * 1000)
        for label, values in per_case.items():
            values.sort()
            results.append((label, values[len(values) // 2]))
        for n in range(len(SQL_VARIANTS_TABLES)):
            cur.execute(f"DROP TABLE IF EXISTS prof_variant_{n}")
        conn.commit()
    finally:
        conn.close()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.webhooks.profile_receiver", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--requests", type=int, default=20000, help="requests per app per round (default 20000)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds, alternating which app goes first (default 3; 0: only --profile/--sql-variants)",
    )
    p.add_argument(
        "--interleaved",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also ROUNDS lockstep rounds: both apps called request by request (app CPU only)",
    )
    p.add_argument("--profile", action="store_true", help="also cProfile one round of each app")
    p.add_argument("--top", type=int, default=25, help="functions shown per profile (default 25)")
    p.add_argument(
        "--sql-variants", action="store_true", help="also price INSERT variants with psycopg2 alone"
    )
    args = p.parse_args(argv)

    bench_db = BenchDatabase.from_env()
    if bench_db.kind != "postgresql":
        print(
            "this profile needs PostgreSQL (it reads the backends' CPU from /proc)", file=sys.stderr
        )
        return 2
    bench_db.recreate()
    env = base_env(
        DATABASE_URL=bench_db.url,
        ERX_ENV="development",
        WEBHOOK_SECRETS=WEBHOOK_SECRET,
        LOG_LEVEL="INFO",
    )
    os.environ.update(
        {k: env[k] for k in ("DATABASE_URL", "ERX_ENV", "WEBHOOK_SECRETS", "LOG_LEVEL")}
    )
    subprocess.run(
        [str(BIN / "alembic"), "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    probe = create_engine(bench_db.url)
    try:
        create_table(probe)
        from app import create_app
        from bench.webhooks import reference

        apps = {"service": create_app(), "reference": reference.create_app()}
        tag = run_tag()
        rows: list[tuple[int, str, dict[str, float]]] = []
        for rnd in range(args.rounds):
            order = ("reference", "service") if rnd % 2 == 0 else ("service", "reference")
            for name in order:
                reqs = signed_requests(f"evt_{tag}_{rnd}{name[0]}_", args.requests + 50)
                with probe.begin() as conn:  # keep both tables small and alike between rounds
                    conn.execute(text("CHECKPOINT"))
                got = measure(name, apps[name], reqs, probe, bench_db.name)
                rows.append((rnd + 1, name, got))
                print(
                    f"round {rnd + 1} {name:9s} app CPU {got['app_ms']:.3f} ms/req  DB backend CPU "
                    f"{got['db_ms']:.3f} ms/req  {got['rps']:.0f} req/s (one thread)",
                    flush=True,
                )
        print("\n| round | app | app CPU ms/req | DB backend CPU ms/req | req/s, one thread |")
        print("|---:|---|---:|---:|---:|")
        for rnd, name, got in rows:
            print(
                f"| {rnd} | {name} | {got['app_ms']:.3f} | {got['db_ms']:.3f} | {got['rps']:.0f} |"
            )
        for name in ("reference", "service"):
            app_ms = sorted(g["app_ms"] for _, n, g in rows if n == name)
            db_ms = sorted(g["db_ms"] for _, n, g in rows if n == name)
            if not app_ms:
                continue
            print(
                f"| median | {name} | {app_ms[len(app_ms) // 2]:.3f} | {db_ms[len(db_ms) // 2]:.3f} | |"
            )
        if args.interleaved:
            print(
                "\n| lockstep round | reference app CPU ms/req | service app CPU ms/req | service / reference |"
            )
            print("|---:|---:|---:|---:|")
            ratios = []
            for rnd in range(args.interleaved):
                reqs = {
                    name: signed_requests(f"evt_{tag}_i{rnd}{name[0]}_", args.requests)
                    for name in apps
                }
                got = interleaved(apps, reqs)
                ratios.append(got["service"] / got["reference"])
                print(
                    f"| {rnd + 1} | {got['reference']:.3f} | {got['service']:.3f} | {ratios[-1]:.2f} |",
                    flush=True,
                )
            print(f"| median | | | {sorted(ratios)[len(ratios) // 2]:.2f} |")
        if args.profile:
            for name in ("service", "reference"):
                reqs = signed_requests(f"evt_{tag}_p{name[0]}_", min(args.requests, 5000))
                print(f"\n== cProfile, {name}, {len(reqs)} requests")
                print(profile_top(apps[name], reqs, args.top))
        if args.sql_variants:
            print(
                "\n| INSERT + COMMIT variant (psycopg2 alone) | DB backend CPU ms/insert |\n|---|---:|"
            )
            for label, ms in sql_variants(bench_db.url, args.requests // 4):
                print(f"| {label} | {ms:.3f} |")
    finally:
        probe.dispose()
        bench_db.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
