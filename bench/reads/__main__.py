"""``python -m bench.reads``: audited reads against ``GET /api/v1/regions``, database near or far.

What runs (PostgreSQL, loopback only, every loop bounded by time):

1. A throwaway database (``erx_bench_reads``; ``BENCH_PG_DB`` changes it) is migrated and
   seeded with the SQL seed scripts, then :mod:`bench.reads.fixtures` gives patient pt-0001
   50 prescriptions, each with a pharmacy, a platform token, a dispatch row and a timeline
   of five history rows.
2. A delay proxy (``bench/latency_proxy.py``, its own process) forwards to PostgreSQL adding
   ``--delay-ms`` (0.5) each way: the database one network hop away.
3. One service per target, as deployed: ``gunicorn -c gunicorn.conf.py wsgi:app`` with
   ``--workers`` (4) workers, ``DATABASE_URL`` pointing at PostgreSQL (``direct``) or at the
   proxy (``proxy``); with ``--growth-db`` also at the grown database (``growth``,
   ``growth-proxy``: ``python -m bench.growth seed`` built it).
4. One patient token (``flask --app app tokens mint --role patient --sub pt-0001``) for
   every request: ``single`` (``GET /api/v1/prescriptions/<id>``, the patient's 50 ids in
   turn: one audit row each), ``list`` (``GET /api/v1/me/prescriptions?per_page=50``: 50
   prescriptions, one audit row naming them), ``fhir``
   (``GET /fhir/R4/MedicationRequest?patient=pt-0001``) and the reference ``regions``
   (``GET /api/v1/regions``: reads the database, no audit).
5. ``--rounds`` rounds; in each, every target, every connection count (``--connections``
   32,1) and every request in an order that rotates per round, ``--duration`` s of wrk after
   ``--warmup`` s unmeasured. Between loads it waits for the database's sessions to go idle.
   A thread samples ``pg_stat_activity`` every ``--sample-ms`` (50) ms
   (:mod:`bench.reads.lockwatch`): sessions waiting on a ``Lock`` (advisory included) or
   ``LWLock``, per load.
6. When the service has the audit sealer (``--sealer auto``, the default), one
   ``flask --app app audit seal --loop`` runs on the small database (through the proxy when a
   proxied target is measured) and every load reports the lag from append to sealed of the
   audit rows it appended (:mod:`bench.reads.sealer`).

Every load is printed as it ends; the tables show every round: requests per second, p50 and
p99, the ratio to ``regions`` in the same round, target and connection count, and (with
``--growth-db``) the ratio grown / small. Writes ``bench/results/reads.json`` (``--name``)
and, with ``--plot PATH``, a PNG (``python -m bench.reads.plot``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine

from bench import latency_proxy, procstat
from bench.database import NAME_PATTERN, BenchDatabase
from bench.reads import fixtures, sealer
from bench.reads.lockwatch import LockWatch
from bench.report import fmt, machine, markdown_table, percentile, preflight, ratio, write_results
from bench.webhooks.harness import HARNESS_APP_NAME, CpuMeter, gunicorn_settings, stop_process
from scripts.stack import BIN, REPO_ROOT, Stack, base_env, free_port, wait_http

LOG_DIR = REPO_ROOT / "instance" / "bench" / "logs" / "reads"
LUA = REPO_ROOT / "bench" / "reads" / "get_paths.lua"
REQUESTS = ("single", "list", "fhir", "regions")
REFERENCE = "regions"
TARGETS = ("direct", "proxy", "growth", "growth-proxy")
# Issue targets at 1 ms round trip (the proxy at 0.5 ms each way).
RATIO_TARGETS = {"single": 0.8, "list": 0.3}
P50_TARGETS_MS = {"single": 5.0, "list": 8.0}
GROWTH_LIMIT = 1.2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see ``--help``); exits with a usage error on bad values."""
    p = argparse.ArgumentParser(prog="python -m bench.reads", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument(
        "--duration", type=float, default=10.0, help="seconds of wrk per load (default 10)"
    )
    p.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds before each load (1)"
    )
    p.add_argument("--connections", default="32,1", help="wrk connection counts (default 32,1)")
    p.add_argument(
        "--delay-ms",
        type=float,
        default=0.5,
        help="delay the proxy adds in EACH direction, ms (default 0.5: a 1 ms round trip)",
    )
    p.add_argument(
        "--targets",
        default=None,
        help="comma-separated of direct,proxy,growth,growth-proxy (default direct,proxy; "
        "with --growth-db direct,growth)",
    )
    p.add_argument(
        "--requests",
        default=None,
        help="comma-separated of single,list,fhir,regions (default single,list,regions; with "
        "--growth-db all four); regions, the reference, is always measured",
    )
    p.add_argument(
        "--growth-db",
        default=None,
        help="an erx_bench* database built by `python -m bench.growth seed` (kept as it is)",
    )
    p.add_argument(
        "--workers", type=int, default=4, help="gunicorn workers per service (default 4)"
    )
    p.add_argument(
        "--sample-ms", type=float, default=50.0, help="pg_stat_activity sampling period (50)"
    )
    p.add_argument(
        "--sealer",
        choices=("auto", "on", "off"),
        default="auto",
        help="run the audit sealer on the small database and measure its lag (auto: when the "
        "service has one)",
    )
    p.add_argument(
        "--name", default=None, help="results file name (default reads, or reads-growth)"
    )
    p.add_argument("--plot", default=None, help="draw a PNG of the ratios and p50s to this path")
    args = p.parse_args(argv)
    try:
        args.connections = [int(c) for c in str(args.connections).split(",") if c.strip()]
    except ValueError:
        p.error("--connections takes whole numbers, e.g. 32,1")
    if not args.connections or not all(1 <= c <= 512 for c in args.connections):
        p.error("connection counts must be 1..512")
    if not 1 <= args.rounds <= 9 or not 1 <= args.duration <= 300 or not 0 <= args.warmup <= 60:
        p.error(
            "--rounds must be 1..9, --duration 1..300 s, --warmup 0..60 s (whole seconds for wrk)"
        )
    if (
        not 0 < args.delay_ms <= 100
        or not 1 <= args.workers <= 16
        or not 10 <= args.sample_ms <= 1000
    ):
        p.error("--delay-ms must be in (0, 100], --workers 1..16 and --sample-ms 10..1000")
    if args.growth_db is not None and not NAME_PATTERN.match(args.growth_db):
        p.error("--growth-db must be an erx_bench* database")
    growth = args.growth_db is not None
    default_targets = "direct,growth" if growth else "direct,proxy"
    args.targets = _names(
        p, default_targets if args.targets is None else args.targets, TARGETS, "--targets"
    )
    if any(t.startswith("growth") for t in args.targets) and not growth:
        p.error("the growth targets need --growth-db")
    default_requests = "single,list,fhir,regions" if growth else "single,list,regions"
    args.requests = _names(
        p, default_requests if args.requests is None else args.requests, REQUESTS, "--requests"
    )
    if REFERENCE not in args.requests:
        args.requests.append(REFERENCE)
    args.name = args.name or ("reads-growth" if growth else "reads")
    return args


def _names(p: argparse.ArgumentParser, raw: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    names = [x.strip() for x in raw.split(",") if x.strip()]
    unknown = sorted(set(names) - set(allowed))
    if unknown or not names:
        p.error(f"{flag} takes {','.join(allowed)}; unknown: {','.join(unknown) or '(none given)'}")
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Target:
    """One running service: ``name``, its database, where it listens, its gunicorn pid."""

    name: str
    database: str
    url: str
    pid: int
    proxied: bool


def request_paths(request: str, fx: fixtures.ReadFixtures) -> list[str]:
    """The paths wrk takes in turn for ``request``."""
    if request == "single":
        return [f"/api/v1/prescriptions/{i}" for i in fx.prescription_ids]
    if request == "list":
        return ["/api/v1/me/prescriptions?per_page=50"]
    if request == "fhir":
        return [f"/fhir/R4/MedicationRequest?patient={fx.patient}"]
    return ["/api/v1/regions"]


def run_wrk(
    url: str, paths: list[str], *, connections: int, duration: float, token: str, log_name: str
) -> dict[str, Any]:
    """One wrk load; returns its summary (rps, latency in ms, errors). RuntimeError if wrk fails."""
    threads = min(connections, 2)
    # wrk takes whole seconds only.
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
        "-s",
        str(LUA),
        url,
        "--",
        *paths,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    # The log leaves the token out: a bench token, but tokens are never written down.
    (LOG_DIR / f"{log_name}.txt").write_text(
        " ".join(
            c if not c.startswith("Authorization") else "Authorization: Bearer ..." for c in cmd
        )
        + "\n\n"
        + out.stdout
        + out.stderr
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    import json

    w = json.loads(line.split(" ", 1)[1])
    seconds = w["duration_us"] / 1e6
    return {
        "requests": w["requests"],
        "duration_s": round(seconds, 3),
        "rps": round(w["requests"] / seconds, 1) if seconds else None,
        "errors_status": w["errors_status"],
        "socket_errors": {k: w[f"errors_{k}"] for k in ("connect", "read", "write", "timeout")},
        "latency_ms": {
            k: round(w[f"latency_{k}_us"] / 1000, 2) for k in ("p50", "p90", "p99", "p999", "max")
        },
    }


class Bench:
    """One run: services, the token, the lock watcher and every load's results."""

    def __init__(
        self,
        args: argparse.Namespace,
        stack: Stack,
        watch: LockWatch,
        token: str,
        fx: fixtures.ReadFixtures,
        engines: dict[str, Engine],
        sealed_db: str | None = None,
    ) -> None:
        self.args, self.stack, self.watch, self.token, self.fx = args, stack, watch, token, fx
        self.engines = engines
        self.sealed_db = sealed_db
        self.loads: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.warnings: list[str] = []

    def settle(self, database: str, timeout_s: float = 30.0) -> float:
        """Wait until no session of ``database`` runs a statement; returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.watch.active_sessions(database) == 0:
                return time.monotonic() - started
            time.sleep(0.1)
        self.warnings.append(f"{database}: sessions still active {timeout_s:g} s after a load")
        return time.monotonic() - started

    def load(
        self,
        target: Target,
        request: str,
        connections: int,
        rnd: int,
        position: int,
        proxy_pid: int | None,
    ) -> dict[str, Any]:
        """Warm-up, then one measured wrk load with lock sampling and CPU accounting."""
        a = self.args
        paths = request_paths(request, self.fx)
        tag = f"r{rnd}-{target.name}-c{connections}-{request}"
        if a.warmup > 0:
            run_wrk(
                target.url,
                paths,
                connections=connections,
                duration=a.warmup,
                token=self.token,
                log_name=f"{tag}-warmup",
            )
        waited = self.settle(target.database)
        meter = CpuMeter(self.engines[target.database], target.pid)
        proxy0 = procstat.cpu_by_pid([proxy_pid]) if proxy_pid else {}
        sealing = target.database == self.sealed_db
        floor = sealer.top_id(self.engines[target.database]) if sealing else 0
        scans0 = table_scans(self.engines[target.database])
        meter.start()
        self.watch.begin(target.database)
        try:
            w = run_wrk(
                target.url,
                paths,
                connections=connections,
                duration=a.duration,
                token=self.token,
                log_name=tag,
            )
        finally:
            tally = self.watch.end()
        usage = meter.stop()
        # Approximate: a busy backend publishes its table counters about once a second.
        scans = scan_deltas(scans0, table_scans(self.engines[target.database]), w["requests"])
        lag = sealer.lag(self.engines[target.database], floor) if sealing else None
        proxy_cpu = None
        if proxy_pid:
            proxy1 = procstat.cpu_by_pid([proxy_pid])
            proxy_cpu = round(proxy1.get(proxy_pid, 0.0) - proxy0.get(proxy_pid, 0.0), 3)
        n = max(w["requests"], 1)
        entry = {
            "round": rnd,
            "position": position,
            "target": target.name,
            "database": target.database,
            "proxied": target.proxied,
            "request": request,
            "connections": connections,
            **w,
            "locks": tally.as_json(),
            "settled_before_s": round(waited, 2),
            "cpu_ms_per_request": {
                "server": round((usage["cpu_s"]["server"] or 0) / n * 1000, 3),
                "postgres": round((usage["cpu_s"]["postgres"] or 0) / n * 1000, 3),
                "proxy": None if proxy_cpu is None else round(proxy_cpu / n * 1000, 3),
            },
            "machine_pct": usage["machine_pct"],
            "sealer_lag": lag,
            "seq_scans": scans,
        }
        if w["errors_status"] or any(w["socket_errors"].values()):
            self.failures.append(
                f"{tag}: {w['errors_status']} answers >= 400, socket errors {w['socket_errors']}"
            )
        self.loads.append(entry)
        lat, lk = w["latency_ms"], entry["locks"]
        print(
            f"== round {rnd} {target.name:12s} c={connections:<3d} {request:8s} "
            f"{fmt(w['rps'], 1):>8s} req/s  p50 {lat['p50']:8.2f} ms  p99 {lat['p99']:8.2f} ms  "
            f"lock waits: {lk['samples_with_lock_wait']}/{lk['samples']} samples "
            f"(advisory {lk['samples_with_advisory_wait']}, max "
            f"{lk['max_sessions_waiting']} sessions)  busy {entry['machine_pct']['busy']}% "
            f"steal {entry['machine_pct']['steal']}%"
            + (
                f"  seq scans of {scans[0]['table']}: {scans[0]['rows_read_per_request']:,.0f} "
                "rows/request"
                if scans and scans[0]["rows_read_per_request"] >= 1000
                else ""
            )
            + (
                f"  sealer lag p50 {lag['p50_ms']} p99 {lag['p99_ms']} ms "
                f"({lag['unsealed']} unsealed)"
                if lag and lag["rows"]
                else ""
            )
            + (
                ""
                if not (w["errors_status"] or any(w["socket_errors"].values()))
                else f"  ** {w['errors_status']} errors **"
            ),
            flush=True,
        )
        return entry

    def run(self, targets: list[Target], proxy_pid: int | None) -> None:
        """Every round: targets, connection counts and requests, the order rotating per round."""
        a = self.args
        for rnd in range(1, a.rounds + 1):
            order_t = _rotate(targets, rnd - 1)
            for target in order_t:
                for connections in a.connections:
                    for position, request in enumerate(_rotate(a.requests, rnd - 1), start=1):
                        self.load(
                            target,
                            request,
                            connections,
                            rnd,
                            position,
                            proxy_pid if target.proxied else None,
                        )


def table_scans(engine: Engine) -> dict[str, tuple[int, int, int]]:
    """Per table of the database: (sequential scans, rows they read, index scans) so far."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) FROM pg_stat_user_tables"
        ).all()
    return {str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def scan_deltas(
    before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]], requests: int
) -> list[dict[str, Any]]:
    """Tables read by sequential scan during a load, most rows first, per request.

    A read whose cost grows with the data shows here as thousands of rows per request read
    from one table: the table that lacks the index.
    """
    n = max(requests, 1)
    out = []
    for table, (seq, tup, idx) in after.items():
        seq0, tup0, idx0 = before.get(table, (0, 0, 0))
        if tup - tup0 > 0:
            out.append(
                {
                    "table": table,
                    "seq_scans_per_request": round((seq - seq0) / n, 2),
                    "rows_read_per_request": round((tup - tup0) / n, 1),
                    "index_scans_per_request": round((idx - idx0) / n, 2),
                }
            )
    return sorted(out, key=lambda x: -x["rows_read_per_request"])[:3]


def _rotate(items: list[Any], k: int) -> list[Any]:
    k %= max(len(items), 1)
    return list(items[k:]) + list(items[:k])


def start_service(stack: Stack, name: str, database_url: str, workers: int) -> tuple[str, int]:
    """Start ``gunicorn -c gunicorn.conf.py wsgi:app`` on a free port; (url, pid) once healthy."""
    port = free_port()
    proc = stack._spawn(  # noqa: SLF001 - the stack's one way to start and log a process
        name,
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
        {
            "BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(workers),
            "DATABASE_URL": database_url,
            "PGAPPNAME": f"erx-bench-{name}",
        },
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc, timeout_s=90)
    return f"http://127.0.0.1:{port}", proc.pid


def calibrate(url: str, proxied_url: str, count: int = 300) -> dict[str, float | None]:
    """``SELECT 1`` round trip p50 (ms), directly and through the proxy: what it adds, idle."""
    out: dict[str, float | None] = {}
    for label, u in (("direct", url), ("proxy", proxied_url)):
        engine = create_engine(u, connect_args={"application_name": HARNESS_APP_NAME})
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
                times = []
                for _ in range(count):
                    t0 = time.perf_counter()
                    conn.exec_driver_sql("SELECT 1").scalar()
                    times.append((time.perf_counter() - t0) * 1000)
        finally:
            engine.dispose()
        p50 = percentile(times, 50)
        out[f"{label}_p50_ms"] = None if p50 is None else round(p50, 3)
    return out


def summarise(loads: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Per target and connection count: each request's rps, p50 and ratio to regions, per round."""
    out: dict[str, Any] = {}
    for target in args.targets:
        for conns in args.connections:
            key = f"{target}/c{conns}"
            rows: dict[str, Any] = {}
            for request in args.requests:
                mine = sorted(
                    (
                        x
                        for x in loads
                        if x["target"] == target
                        and x["connections"] == conns
                        and x["request"] == request
                    ),
                    key=lambda x: x["round"],
                )
                ref = {
                    x["round"]: x
                    for x in loads
                    if x["target"] == target
                    and x["connections"] == conns
                    and x["request"] == REFERENCE
                }
                ratios = [
                    ratio(x["rps"], ref[x["round"]]["rps"]) if x["round"] in ref else None
                    for x in mine
                ]
                rows[request] = {
                    "rps_per_round": [x["rps"] for x in mine],
                    "p50_ms_per_round": [x["latency_ms"]["p50"] for x in mine],
                    "p99_ms_per_round": [x["latency_ms"]["p99"] for x in mine],
                    "ratio_to_regions_per_round": [
                        None if r is None else round(r, 3) for r in ratios
                    ],
                    "ratio_to_regions_median": _median(ratios),
                    "p50_ms_median": _median([x["latency_ms"]["p50"] for x in mine]),
                    "samples_with_lock_wait": sum(
                        x["locks"]["samples_with_lock_wait"] for x in mine
                    ),
                    "samples_with_advisory_wait": sum(
                        x["locks"]["samples_with_advisory_wait"] for x in mine
                    ),
                    "samples_with_row_or_advisory_wait": sum(
                        x["locks"].get("samples_with_row_or_advisory_wait", 0) for x in mine
                    ),
                    "samples": sum(x["locks"]["samples"] for x in mine),
                }
            out[key] = rows
    return out


def growth_comparison(
    loads: list[dict[str, Any]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Grown vs small per round and request: small/grown rps and grown/small p50 (want <= 1.2)."""
    pairs = [("growth", "direct"), ("growth-proxy", "proxy")]
    out = []
    for grown, small in pairs:
        if grown not in args.targets or small not in args.targets:
            continue
        for conns in args.connections:
            for request in args.requests:

                def pick(t: str, c: int = conns, r: str = request) -> dict[int, dict[str, Any]]:
                    return {
                        x["round"]: x
                        for x in loads
                        if x["target"] == t and x["connections"] == c and x["request"] == r
                    }

                g, s = pick(grown), pick(small)
                rounds = sorted(set(g) & set(s))
                rps = [ratio(s[r]["rps"], g[r]["rps"]) for r in rounds]  # small / grown: cost grows
                p50 = [ratio(g[r]["latency_ms"]["p50"], s[r]["latency_ms"]["p50"]) for r in rounds]
                med_rps, med_p50 = _median(rps), _median(p50)
                out.append(
                    {
                        "pair": f"{grown} vs {small}",
                        "connections": conns,
                        "request": request,
                        "small_over_grown_rps_per_round": [
                            None if v is None else round(v, 3) for v in rps
                        ],
                        "grown_over_small_p50_per_round": [
                            None if v is None else round(v, 3) for v in p50
                        ],
                        "small_over_grown_rps_median": med_rps,
                        "grown_over_small_p50_median": med_p50,
                        "within": (
                            med_rps is not None
                            and med_rps <= GROWTH_LIMIT
                            and med_p50 is not None
                            and med_p50 <= GROWTH_LIMIT
                        ),
                    }
                )
    return out


def targets_met(
    summary: dict[str, Any], args: argparse.Namespace, loads: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The issue's targets at the proxied round trip, against this run's medians."""
    out = []
    rtt = 2 * args.delay_ms
    for target in ("proxy", "growth-proxy"):
        for request, want in RATIO_TARGETS.items():
            row = summary.get(f"{target}/c32", {}).get(request)
            if row:
                med = row["ratio_to_regions_median"]
                out.append(
                    {
                        "target": f"{target}, {rtt:g} ms round trip, 32 conns: "
                        f"{request} / regions >= {want}",
                        "measured": med,
                        "per_round": row["ratio_to_regions_per_round"],
                        "met": med is not None and med >= want,
                    }
                )
        for request, want in P50_TARGETS_MS.items():
            row = summary.get(f"{target}/c1", {}).get(request)
            if row:
                med = row["p50_ms_median"]
                out.append(
                    {
                        "target": f"{target}, {rtt:g} ms round trip, 1 client: "
                        f"{request} p50 <= {want:g} ms",
                        "measured": med,
                        "per_round": row["p50_ms_per_round"],
                        "met": med is not None and med <= want,
                    }
                )
    lags = [
        x
        for x in loads or []
        if x.get("sealer_lag") and x["sealer_lag"]["rows"] and x["connections"] >= 32
    ]
    if lags:
        worst = max(x["sealer_lag"]["p99_ms"] or 0.0 for x in lags)
        out.append(
            {
                "target": "sealing lag p99 <= 1 s under the 32-connection loads (worst load)",
                "measured": f"{worst:.0f} ms",
                "per_load": [x["sealer_lag"]["p99_ms"] for x in lags],
                "met": worst <= 1000 and not any(x["sealer_lag"]["lower_bound"] for x in lags),
            }
        )
    heavy = sum(
        r["samples_with_row_or_advisory_wait"] for rows in summary.values() for r in rows.values()
    )
    waits = sum(r["samples_with_lock_wait"] for rows in summary.values() for r in rows.values())
    samples = sum(r["samples"] for rows in summary.values() for r in rows.values())
    out.append(
        {
            "target": "no session waits on an advisory or row lock (a heavyweight Lock but extend), "
            f"sampled every {args.sample_ms:g} ms",
            "measured": f"{heavy} of {samples} samples",
            "met": heavy == 0,
        }
    )
    out.append(
        {
            "target": "(not a target) samples with any wait, WAL flush (LWLock:WALWrite) and "
            "table extension (Lock:extend) included",
            "measured": f"{waits} of {samples} samples",
            "met": None,
        }
    )
    return out


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    v = percentile(present, 50)
    return None if v is None else round(v, 3)


def print_report(data: dict[str, Any]) -> None:
    """Markdown: every load, then the medians and the targets."""
    m, cal = data["machine"], data["calibration"]
    print(
        f"\nRead benchmark: {data['database']}, {m['cpus']} CPUs ({m['cpu_model']}), "
        f"commit {m['git_commit']}, gunicorn {data['gunicorn']['workers']} workers x "
        f"{data['gunicorn']['threads']} threads, proxy {data['settings']['delay_ms']:g} ms "
        "each way "
        f"(idle SELECT 1 p50: direct {cal.get('direct_p50_ms')} ms, "
        f"proxied {cal.get('proxy_p50_ms')} ms)\n"
    )
    rows = []
    for x in sorted(
        data["loads"], key=lambda x: (x["target"], -x["connections"], x["round"], x["position"])
    ):
        lk = x["locks"]
        rows.append(
            [
                x["target"],
                x["connections"],
                x["round"],
                x["request"],
                fmt(x["rps"], 1),
                fmt(x["latency_ms"]["p50"], 2),
                fmt(x["latency_ms"]["p99"], 1),
                fmt(x["ratio_to_regions"], 3) if x.get("ratio_to_regions") is not None else "",
                f"{lk['samples_with_lock_wait']}/{lk['samples']} "
                f"({lk['samples_with_advisory_wait']} adv.)",
                fmt(lk["mean_sessions_waiting"], 2),
                f"{fmt(x['cpu_ms_per_request']['server'], 2)} / "
                f"{fmt(x['cpu_ms_per_request']['postgres'], 2)}",
                f"{fmt(x['machine_pct']['busy'], 0)}% / {fmt(x['machine_pct']['steal'], 0)}%",
            ]
        )
    print(
        markdown_table(
            [
                "target",
                "conns",
                "round",
                "request",
                "req/s",
                "p50 ms",
                "p99 ms",
                "/ regions",
                "samples with a lock wait",
                "mean sessions waiting",
                "CPU ms/req server / PG",
                "busy / steal",
            ],
            rows,
        )
    )
    print()
    print(
        markdown_table(
            ["target", "request", "ratio to regions per round", "median", "p50 ms per round"],
            [
                [
                    k,
                    r,
                    ", ".join(fmt(v, 3) for v in row["ratio_to_regions_per_round"]),
                    f"**{fmt(row['ratio_to_regions_median'], 3)}**",
                    ", ".join(fmt(v, 2) for v in row["p50_ms_per_round"]),
                ]
                for k, rows_ in data["summary"].items()
                for r, row in rows_.items()
                if r != REFERENCE
            ],
        )
    )
    if data.get("growth"):
        print()
        print(
            markdown_table(
                [
                    "pair",
                    "conns",
                    "request",
                    "small/grown req/s per round",
                    "grown/small p50 per round",
                    "medians",
                    f"within {GROWTH_LIMIT}x",
                ],
                [
                    [
                        g["pair"],
                        g["connections"],
                        g["request"],
                        ", ".join(fmt(v, 3) for v in g["small_over_grown_rps_per_round"]),
                        ", ".join(fmt(v, 3) for v in g["grown_over_small_p50_per_round"]),
                        f"{fmt(g['small_over_grown_rps_median'], 3)} / "
                        f"{fmt(g['grown_over_small_p50_median'], 3)}",
                        "yes" if g["within"] else "**NO**",
                    ]
                    for g in data["growth"]
                ],
            )
        )
    print()
    print(
        markdown_table(
            ["target", "measured", "met"],
            [
                [
                    t["target"],
                    t["measured"],
                    "-" if t["met"] is None else "yes" if t["met"] else "**NO**",
                ]
                for t in data["targets"]
            ],
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0, 1 when a load failed, 2 when wrk is missing."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed: `apt-get install wrk` (Debian package wrk), then re-run",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("BENCH_PG_DB", "erx_bench_reads")
    bench_db = BenchDatabase.from_env()
    if bench_db.kind != "postgresql":
        print("bench.reads measures PostgreSQL only (BENCH_DB=postgresql)", file=sys.stderr)
        return 2
    wall = time.monotonic()
    busy_before = procstat.busy_pct()
    preflight(busy_before)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for old in LOG_DIR.glob("*"):
        old.unlink()
    env = base_env(DATABASE_URL=bench_db.url, ERX_ENV="development")
    gconf = gunicorn_settings({**env, "WEB_CONCURRENCY": str(args.workers)})
    small_needed = any(not t.startswith("growth") for t in args.targets)
    if small_needed:
        bench_db.recreate()
    stack = Stack(env=env, log_dir=LOG_DIR)
    engines: dict[str, Engine] = {}
    proxy = None
    results: dict[str, Any] = {}
    try:
        if small_needed:
            stack.prepare_database()
        urls = {bench_db.name: bench_db.url}
        if args.growth_db:
            urls[args.growth_db] = bench_db.url.rsplit("/", 1)[0] + "/" + args.growth_db
        for name, url in urls.items():
            engines[name] = create_engine(url, connect_args={"application_name": HARNESS_APP_NAME})
        fx = None
        for name in urls:
            if name == bench_db.name and not small_needed:
                continue
            fx_here = fixtures.load(engines[name])
            if fx is not None and fx_here != fx:
                raise RuntimeError(
                    f"{name} holds other fixture ids than the small database: rebuild it"
                )
            fx = fx_here
        if fx is None:
            raise RuntimeError("no database to measure")
        primary = bench_db.name if small_needed else str(args.growth_db)
        proxy, proxy_port = latency_proxy.start_process(
            5432, rtt_ms=2 * args.delay_ms, cwd=REPO_ROOT
        )
        pg_port = int(bench_db.url.rsplit(":", 1)[1].split("/", 1)[0])
        if pg_port != 5432:
            raise RuntimeError("the proxy forwards to 127.0.0.1:5432; BENCH_PG_PORT must be 5432")
        targets = []
        for t in args.targets:
            database = args.growth_db if t.startswith("growth") else bench_db.name
            url = urls[database]
            proxied = t.endswith("proxy")
            if proxied:
                url = url.replace(":5432/", f":{proxy_port}/")
            svc_url, pid = start_service(stack, f"service-{t}", url, args.workers)
            targets.append(Target(t, database, svc_url, pid, proxied))
        sealed_db = None
        use_sealer = args.sealer == "on" or (args.sealer == "auto" and sealer.available())
        if use_sealer and small_needed:
            sealer_url = urls[bench_db.name]
            if any(t.proxied and t.database == bench_db.name for t in targets):
                sealer_url = sealer_url.replace(":5432/", f":{proxy_port}/")
            proc = stack._spawn(  # noqa: SLF001 - the stack's one way to start and log a process
                "sealer",
                [str(BIN / "flask"), "--app", "app", "audit", "seal", "--loop"],
                {"DATABASE_URL": sealer_url, "PGAPPNAME": "erx-bench-sealer"},
            )
            time.sleep(3.0)
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the audit sealer exited with {proc.returncode}; see {LOG_DIR}/sealer.log"
                )
            sealed_db = bench_db.name
        results["sealer"] = {
            "running_on": sealed_db,
            "through_proxy": bool(sealed_db)
            and any(t.proxied and t.database == sealed_db for t in targets),
        }
        results["calibration"] = calibrate(
            urls[primary], urls[primary].replace(":5432/", f":{proxy_port}/")
        )
        token = stack.flask(
            "tokens", "mint", "--role", "patient", "--sub", fx.patient, "--ttl", "3600"
        ).strip()
        watch = LockWatch(
            engines[primary], app_name=HARNESS_APP_NAME, interval_s=args.sample_ms / 1000
        )
        watch.start()
        bench = Bench(args, stack, watch, token, fx, engines, sealed_db)
        try:
            print(
                f"== read benchmark: targets {','.join(args.targets)}, requests "
                f"{','.join(args.requests)}, connections {args.connections}, {args.rounds} rounds "
                f"of {args.duration:g} s, proxy "
                f"{args.delay_ms:g} ms each way; idle SELECT 1 p50 {results['calibration']}",
                flush=True,
            )
            bench.run(targets, proxy.pid)
        finally:
            watch.stop()
        db_version = bench_db.server_version() if small_needed else "PostgreSQL"
    finally:
        for name in list(stack.procs):
            stop_process(stack, name)
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        for engine in engines.values():
            engine.dispose()
        if small_needed:
            bench_db.finish()
    for x in bench.loads:
        ref = next(
            (
                y
                for y in bench.loads
                if y["target"] == x["target"]
                and y["round"] == x["round"]
                and y["connections"] == x["connections"]
                and y["request"] == REFERENCE
            ),
            None,
        )
        x["ratio_to_regions"] = None if ref is None else _round(ratio(x["rps"], ref["rps"]))
    summary = summarise(bench.loads, args)
    growth = growth_comparison(bench.loads, args)
    data = {
        "benchmark": "reads",
        "database": db_version,
        "databases": {"small": bench_db.name if small_needed else None, "growth": args.growth_db},
        "machine": machine(busy_before_pct=busy_before),
        "gunicorn": gconf,
        "settings": {k: v for k, v in vars(args).items() if k != "plot"},
        **results,
        "lock_sampler_error": watch.error,
        "loads": bench.loads,
        "summary": summary,
        "growth": growth,
        "targets": targets_met(summary, args, bench.loads),
        "failures": bench.failures,
        "warnings": bench.warnings,
        "wall_s": round(time.monotonic() - wall, 1),
    }
    path = write_results(args.name, data)
    print_report(data)
    print(f"\nresults: {path.relative_to(REPO_ROOT)}  (wall {data['wall_s']} s)")
    if args.plot:
        from bench.reads import plot

        plot.main([str(path), args.plot])
    if bench.failures:
        print("\n** FAILED LOADS: " + "; ".join(bench.failures) + " **", file=sys.stderr)
        return 1
    return 0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


if __name__ == "__main__":
    sys.exit(main())
