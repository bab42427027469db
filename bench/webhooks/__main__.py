"""``python -m bench.webhooks`` (normally via ``bash bench/webhooks/run.sh``): the webhook receiver under wrk.

Measured, in one run, on loopback, against a throwaway database (``bench.database``):

1. Throughput and latency of ``POST /webhooks/platform`` on the service
   (``gunicorn -c gunicorn.conf.py wsgi:app``, started by ``Stack.start_service``)
   and on the REFERENCE receiver ``bench/webhooks/reference.py`` (HMAC verify +
   one INSERT + commit) under the SAME gunicorn settings (same conf file, same
   ``WEB_CONCURRENCY`` and ``GUNICORN_THREADS``), at 32 connections and at 1,
   ``--duration`` seconds each, in ``--rounds`` rounds that alternate which
   server goes first; medians are reported. wrk posts
   pre-signed ~1 KB events with unique ids (``post_signed.lua``).
   Targets: service rps >= 0.9 x reference rps, and p99 < 50 ms, at 32 connections.
2. Receipt -> history: real status events (signed/printed/dispensed) for
   prescriptions stored as ``issued`` with platform tokens, sent to the service
   while ``--inbox-workers`` ``flask --app app worker --no-dispatch`` processes
   run. Per event: ``webhook_inbox.processed_at - received_at``, p50 and p99
   over every event of the phase once the workers drained them. The worker
   stamps ``processed_at`` when its batch transaction starts, so this is a
   lower bound; a probe also polls a sample of ~300 events every 25 ms and
   reports when each was first visible as processed (its batch committed):
   an upper bound at most one poll late.

Prints Markdown tables and writes ``bench/results/webhooks.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import runpy
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench import procstat
from bench.database import BenchDatabase, bulk_seed_sql, run_sql
from bench.report import fmt, machine, markdown_table, percentile, preflight, ratio, write_results
from bench.webhooks.events import Target, run_tag, write_requests
from bench.webhooks.reference import TABLE as REFERENCE_TABLE
from bench.webhooks.reference import create_table
from scripts.stack import BIN, REPO_ROOT, WEBHOOK_SECRET, Stack, base_env, free_port, wait_http

HERE = Path(__file__).resolve().parent
LUA = HERE / "post_signed.lua"
WORK_DIR = REPO_ROOT / "instance" / "bench" / "webhooks"
LOG_DIR = REPO_ROOT / "instance" / "bench" / "logs" / "webhooks"
PATH = "/webhooks/platform"
RPS_RATIO_TARGET = 0.9
P99_TARGET_MS = 50.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase (default 10)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per server (default 3)")
    p.add_argument("--connections", default="32,1", help="comma-separated wrk connection counts (default 32,1)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds, alternating which server goes first; medians are reported (default 3)")
    p.add_argument("--inbox-workers", type=int, default=2, help="inbox workers in the history phases (default 2)")
    p.add_argument("--history-connections", default="32,1",
                   help="connection counts of the receipt->history phases ('' to skip; default 32,1)")
    p.add_argument("--max-rps", type=float, default=3000.0,
                   help="first guess of the highest rps, sizes the pre-signed request pools (default 3000)")
    p.add_argument("--drain-timeout", type=float, default=180.0,
                   help="seconds to wait for the workers to drain a history phase (default 180)")
    p.add_argument("--service-target", default="wsgi:app",
                   help=f"WSGI app in the service slot; '{REFERENCE_TARGET}' makes an A/A run that checks "
                        "the harness (ratio ~1 expected; receipt->history phases are skipped)")
    args = p.parse_args(argv)
    if args.service_target != "wsgi:app":
        args.history_connections = ""
    args.connections = [int(c) for c in str(args.connections).split(",") if c.strip()]
    args.history_connections = [int(c) for c in str(args.history_connections).split(",") if c.strip()]
    if not 1 <= args.duration <= 300 or not 0 <= args.warmup <= 60:
        p.error("--duration must be 1..300 s and --warmup 0..60 s")
    if not args.connections or not all(1 <= c <= 1024 for c in args.connections + args.history_connections):
        p.error("connection counts must be 1..1024")
    if not 1 <= args.rounds <= 5 or not 1 <= args.inbox_workers <= 8:
        p.error("--rounds must be 1..5 and --inbox-workers 1..8")
    return args


# -- servers ----------------------------------------------------------------------


def gunicorn_settings(env: dict[str, str]) -> dict[str, Any]:
    """What gunicorn.conf.py resolves to in ``env`` (workers, threads, worker class...)."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        conf = runpy.run_path(str(REPO_ROOT / "gunicorn.conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    keys = ("workers", "threads", "worker_class", "keepalive", "timeout", "accesslog", "loglevel")
    return {k: conf.get(k) for k in keys}


@dataclass
class Server:
    name: str
    url: str
    pid: int
    log: Path


REFERENCE_TARGET = "bench.webhooks.reference:app"


def start_server(stack: Stack, name: str, port: int, workers: int, *, service_target: str = "wsgi:app") -> Server:
    """Start ``service`` (with Stack.start_service) or ``reference``: the same gunicorn command
    line, conf file and settings; only the WSGI target differs.

    ``service_target`` other than ``wsgi:app`` is for checking the harness itself: with
    the reference in both slots (an A/A run) the ratio must come out near 1.
    """
    if name == "service" and service_target == "wsgi:app":
        stack.start_service(port=port, workers=workers)
    else:
        proc = stack._spawn(
            name,
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", REFERENCE_TARGET if name == "reference" else service_target],
            {"BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers)},
        )
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
    return Server(name, f"http://127.0.0.1:{port}", stack.procs[name].pid, LOG_DIR / f"{name}.log")


# -- one wrk run ----------------------------------------------------------------------


@dataclass
class Phase:
    server: str
    connections: int
    duration_s: float
    prefix: str
    pool: int
    wrk: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    rows_stored: int | None = None
    cpu_busy_pct: float | None = None
    other_cpu_pct: float | None = None
    steal_pct: float | None = None

    @property
    def rps(self) -> float:
        return self.wrk["requests"] / (self.wrk["duration_us"] / 1e6)

    def as_json(self) -> dict[str, Any]:
        w = self.wrk
        ok = w["requests"] - w["errors_status"]
        return {
            "server": self.server,
            "connections": self.connections,
            "duration_s": round(w["duration_us"] / 1e6, 3),
            "requests": w["requests"],
            "non_2xx": w["errors_status"],
            "socket_errors": {k: w[f"errors_{k}"] for k in ("connect", "read", "write", "timeout")},
            "rps": round(self.rps, 1),
            "latency_ms": {
                "mean": round(w["latency_mean_us"] / 1000, 2),
                "p50": round(w["latency_p50_us"] / 1000, 2),
                "p90": round(w["latency_p90_us"] / 1000, 2),
                "p99": round(w["latency_p99_us"] / 1000, 2),
                "p99.9": round(w["latency_p999_us"] / 1000, 2),
                "max": round(w["latency_max_us"] / 1000, 2),
            },
            "rows_stored": self.rows_stored,
            "rows_match_2xx": self.rows_stored is not None and self.rows_stored >= ok,
            "request_pool": self.pool,
            "pool_wrapped": w["wrapped"],
            "cpu_ms_per_request": {k: round(v / max(w["requests"], 1) * 1000, 3) for k, v in self.cpu.items()},
            "machine_cpu_busy_pct": _round(self.cpu_busy_pct, 1),
            # Busy CPU not used by the server, PostgreSQL, wrk or the inbox workers:
            # another program competing for the machine during the phase.
            "other_cpu_pct": _round(self.other_cpu_pct, 1),
            # CPU the hypervisor gave to other guests during the phase (shared VM noise).
            "steal_pct": _round(self.steal_pct, 1),
        }


def run_wrk(
    server: Server, *, connections: int, duration: float, requests_file: Path, log_name: str,
    extra_pids: list[int] | None = None,
) -> tuple[dict[str, Any], dict[str, float], dict[str, float | None]]:
    """Run wrk once; returns (BENCH_JSON of post_signed.lua, CPU seconds by party, machine
    percentages: ``busy``, ``other`` (busy not explained by the parties) and ``steal``)."""
    threads = min(connections, 2)
    cmd = [
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s", "--timeout", "10s",
        "--latency", "-s", str(LUA), server.url + PATH, "--", str(requests_file), str(threads),
    ]
    cpu_before = {
        "server": procstat.tree_cpu([server.pid]),
        "postgres": procstat.named_cpu("postgres"),
        "inbox_workers": procstat.tree_cpu(extra_pids or []),
    }
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, total0, steal0 = procstat.machine_busy()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, check=False)
    busy1, total1, steal1 = procstat.machine_busy()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {
        "server": procstat.tree_cpu([server.pid]) - cpu_before["server"],
        "postgres": procstat.named_cpu("postgres") - cpu_before["postgres"],
        "wrk": (children_after.ru_utime + children_after.ru_stime)
        - (children_before.ru_utime + children_before.ru_stime),
    }
    if extra_pids:
        cpu["inbox_workers"] = procstat.tree_cpu(extra_pids) - cpu_before["inbox_workers"]
    (LOG_DIR / f"wrk-{log_name}.txt").write_text(" ".join(cmd) + "\n\n" + out.stdout + out.stderr)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    machine_pct: dict[str, float | None] = {"busy": None, "other": None, "steal": None}
    if total1 > total0:
        span = total1 - total0
        machine_pct = {
            "busy": 100.0 * (busy1 - busy0) / span,
            "other": max(0.0, 100.0 * ((busy1 - busy0) - sum(cpu.values())) / span),
            "steal": 100.0 * (steal1 - steal0) / span,
        }
    return json.loads(line.split(" ", 1)[1]), cpu, machine_pct


def stored_rows(engine: Any, table: str, prefix: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(
            text(f"SELECT count(*) FROM {table} WHERE event_id LIKE :p"), {"p": prefix + "%"}
        ).scalar())


class Runner:
    """Runs phases against the servers with pools of unique pre-signed events."""

    def __init__(
        self, args: argparse.Namespace, engine: Any, stack: Stack, servers: dict[str, Server], *, workers: int
    ) -> None:
        self.args = args
        self.workers = workers
        self.restarts: list[str] = []
        self.stack = stack
        self.engine = engine
        self.servers = servers
        self.tag = run_tag()
        self.seq = 0
        self.best_rps: dict[int, float] = {}
        self.service_rps: dict[int, float] = {}
        self.fake_targets = [Target(f"SRXFAKE{i:08d}", f"rx-fake-{i:06d}") for i in range(4000)]

    def pool_size(self, connections: int, duration: float) -> int:
        """Requests to pre-sign: 1.5 x the best rate seen at ``connections``, never below the guess."""
        floor = self.args.max_rps if connections >= 8 else self.args.max_rps / 3
        guess = max(self.best_rps.get(connections, 0.0), floor)
        return int(math.ceil(guess * 1.5 * duration)) + 500

    def next_prefix(self, code: str) -> str:
        self.seq += 1
        return f"evt_{self.tag}{code}{self.seq:03d}_"

    def phase(
        self, server_name: str, connections: int, duration: float, *, code: str,
        targets: list[Target] | None = None, extra_pids: list[int] | None = None, pool: int | None = None,
        on_start: Any = None,
    ) -> Phase:
        """One wrk run; ``on_start(prefix, pool)`` is called just before wrk starts."""
        for attempt in (1, 2):
            server = self._alive(server_name, "before")
            size = pool or self.pool_size(connections, duration)
            if attempt == 2:
                size *= 2
            prefix = self.next_prefix(code)
            path = WORK_DIR / f"{prefix}.req"
            write_requests(path, prefix=prefix, count=size, targets=targets or self.fake_targets,
                           secret=WEBHOOK_SECRET)
            if on_start is not None:
                on_start(prefix, size)
            try:
                wrk, cpu, pct = run_wrk(
                    server, connections=connections, duration=duration, requests_file=path,
                    log_name=f"{server_name}-c{connections}-{code}{self.seq:03d}", extra_pids=extra_pids,
                )
            finally:
                path.unlink(missing_ok=True)
            result = Phase(server_name, connections, duration, prefix, size, wrk, cpu,
                           cpu_busy_pct=pct["busy"], other_cpu_pct=pct["other"], steal_pct=pct["steal"])
            # Rows are counted after wrk stopped: requests still in flight then may add a few.
            reference_app = server_name == "reference" or self.args.service_target == REFERENCE_TARGET
            table = REFERENCE_TABLE if reference_app else "webhook_inbox"
            result.rows_stored = stored_rows(self.engine, table, prefix)
            if code != "W":  # a cold server's warm-up says little about the pool needed
                self.best_rps[connections] = max(self.best_rps.get(connections, 0.0), result.rps)
            if code == "M" and server_name == "service":
                self.service_rps[connections] = result.rps
            proc = self.stack.procs[server_name]
            if proc.poll() is not None:
                # Not ours: something else signalled the server (see its log). Redo the phase once.
                print(f"   the {server_name} server exited ({proc.returncode}) during the phase: "
                      "restarting it and running the phase again", flush=True)
                continue
            if not wrk["wrapped"] or targets is not None:
                return result
            print(f"   request pool of {size} ran out at {result.rps:.0f} rps: running the phase again", flush=True)
        return result

    def _alive(self, name: str, when: str) -> Server:
        """The server ``name``, restarted on its port (once per phase) if it has exited."""
        proc = self.stack.procs[name]
        if proc.poll() is None:
            return self.servers[name]
        port = int(self.servers[name].url.rsplit(":", 1)[1])
        self.restarts.append(f"{name} exited ({proc.returncode}) {when} a phase; restarted")
        self.servers[name] = start_server(self.stack, name, port, self.workers,
                                          service_target=self.args.service_target)
        return self.servers[name]


# -- receipt -> history ---------------------------------------------------------------------


def issued_targets(engine: Any, count: int) -> list[Target]:
    """Add ``count`` prescriptions with the bulk seed, store them as issued with tokens, return them."""
    with engine.connect() as conn:
        existing = int(conn.execute(text("SELECT count(*) FROM prescriptions WHERE reference LIKE 'rx-%'")).scalar())
    run_sql(engine, bulk_seed_sql(existing + count))
    with engine.begin() as conn:
        pharmacy = conn.execute(text("SELECT min(id) FROM pharmacies WHERE branch_id IS NOT NULL")).scalar()
        conn.execute(
            text(
                "UPDATE prescriptions SET status = 'issued', pharmacy_id = :ph,"
                " platform_token = 'SRXB' || CAST(id AS VARCHAR(20))"
                " WHERE status = 'draft' AND platform_token IS NULL AND reference LIKE 'rx-%'"
            ),
            {"ph": pharmacy},
        )
        rows = conn.execute(
            text(
                "SELECT platform_token, reference FROM prescriptions WHERE status = 'issued'"
                " AND platform_token LIKE 'SRXB%' ORDER BY id DESC"
            )
        ).all()
    return [Target(token, ref) for token, ref in rows[:count]]


def wait_worker_ready(stack: Stack, names: list[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    for name in names:
        log = stack.log_dir / f"{name}.log"
        while time.monotonic() < deadline:
            if stack.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {stack.procs[name].returncode}; see {log}")
            if log.exists() and "worker started" in log.read_text(errors="replace"):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{name} did not start within {timeout_s} s")


def drain(engine: Any, prefix: str, timeout_s: float) -> tuple[float, bool]:
    """Wait until no event of ``prefix`` is pending; returns (seconds waited, drained)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with engine.connect() as conn:
            pending = conn.execute(
                text("SELECT count(*) FROM webhook_inbox WHERE event_id LIKE :p AND state = 'pending'"),
                {"p": prefix + "%"},
            ).scalar()
        if not pending:
            return time.monotonic() - started, True
        time.sleep(0.25)
    return time.monotonic() - started, False


def history_latency(engine: Any, prefix: str) -> dict[str, Any]:
    """Receipt -> history row (processed_at - received_at) for every event of ``prefix``."""
    from sqlalchemy import func, select

    from app.models import StatusHistory, WebhookInbox

    with engine.connect() as conn:
        rows = conn.execute(
            select(WebhookInbox.state, WebhookInbox.received_at, WebhookInbox.processed_at)
            .where(WebhookInbox.event_id.like(prefix + "%"))
        ).all()
        history_rows = conn.execute(
            select(func.count()).select_from(StatusHistory).where(StatusHistory.event_id.like(prefix + "%"))
        ).scalar()
    states: dict[str, int] = {}
    lat_ms = []
    for state, received, processed in rows:
        states[state] = states.get(state, 0) + 1
        if state == "processed" and processed is not None:
            lat_ms.append((processed - received).total_seconds() * 1000)
    window = None
    if rows:
        first = min(r[1] for r in rows)
        last = max((r[2] for r in rows if r[2] is not None), default=None)
        window = (last - first).total_seconds() if last else None
    return {
        "events_stored": len(rows),
        "states": states,
        "history_rows": int(history_rows or 0),
        "receipt_to_history_ms": {
            "p50": _round(percentile(lat_ms, 50)),
            "p90": _round(percentile(lat_ms, 90)),
            "p99": _round(percentile(lat_ms, 99)),
            "max": _round(max(lat_ms) if lat_ms else None),
        },
        "worker_throughput_per_s": round(len(lat_ms) / window, 1) if window else None,
    }


class VisibilityProbe:
    """When does a sample of events become visible as processed, i.e. when did its batch commit?

    ``processed_at`` is stamped by the inbox worker at the START of the batch
    transaction that appends the history rows (webhooks/processing.py), so
    ``processed_at - received_at`` is a lower bound of receipt -> history. This
    probe polls a sample of event ids every ``interval_s`` on its own connection;
    an event first seen processed by a query that started at T was committed
    before T and after the previous query started: T - received_at is an upper
    bound, at most one interval late. Loopback, bounded by ``stop()`` and ``timeout_s``.
    """

    def __init__(self, engine: Any, *, interval_s: float = 0.025, timeout_s: float = 600.0) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.visible: dict[str, tuple[Any, Any]] = {}  # event_id -> (received_at, visible_at)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0

    def start(self, event_ids: list[str]) -> None:
        self._thread = threading.Thread(target=self._run, args=(list(event_ids),), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self, unseen: list[str]) -> None:
        from datetime import UTC, datetime

        from sqlalchemy import select

        from app.models import WebhookInbox

        deadline = time.monotonic() + self.timeout_s
        with self.engine.connect() as conn:
            while unseen and not self._stop.is_set() and time.monotonic() < deadline:
                started = time.time()
                rows = conn.execute(
                    select(WebhookInbox.event_id, WebhookInbox.received_at).where(
                        WebhookInbox.event_id.in_(unseen), WebhookInbox.state != "pending"
                    )
                ).all()
                conn.rollback()  # a fresh snapshot for the next poll
                self.polls += 1
                if rows:
                    at = datetime.fromtimestamp(started, UTC)
                    for event_id, received_at in rows:
                        self.visible[event_id] = (received_at, at)
                    seen = {r[0] for r in rows}
                    unseen = [e for e in unseen if e not in seen]
                self._stop.wait(max(0.0, self.interval_s - (time.time() - started)))

    def summary(self) -> dict[str, Any]:
        lat_ms = [(at - received).total_seconds() * 1000 for received, at in self.visible.values()]
        return {
            "sampled_events_seen": len(lat_ms),
            "poll_interval_ms": self.interval_s * 1000,
            "polls": self.polls,
            "p50": _round(percentile(lat_ms, 50)),
            "p90": _round(percentile(lat_ms, 90)),
            "p99": _round(percentile(lat_ms, 99)),
            "max": _round(max(lat_ms) if lat_ms else None),
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def median(values: list[float]) -> float | None:
    """The median (mean of the two middle values for an even count)."""
    return percentile(values, 50)


def summary(phases: list[Phase]) -> dict[str, Any]:
    """Median figures over the rounds of one server at one connection count."""
    js = [p.as_json() for p in phases]

    def med(get: Any) -> float | None:
        return _round(median([get(j) for j in js]), 2)

    return {
        "rounds": len(js),
        "rps": med(lambda j: j["rps"]),
        "latency_ms": {k: med(lambda j, k=k: j["latency_ms"][k]) for k in ("p50", "p90", "p99")},
        "requests": sum(j["requests"] for j in js),
        "non_2xx": sum(j["non_2xx"] for j in js),
        "cpu_ms_per_request": {
            k: med(lambda j, k=k: j["cpu_ms_per_request"].get(k, 0.0)) for k in ("server", "postgres", "wrk")
        },
        "machine_cpu_busy_pct": med(lambda j: j["machine_cpu_busy_pct"] or 0.0),
        "other_cpu_pct": med(lambda j: j["other_cpu_pct"] or 0.0),
        "steal_pct": med(lambda j: j["steal_pct"] or 0.0),
    }


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: run `bash bench/webhooks/run.sh`, which installs it", file=sys.stderr)
        return 2
    wall = time.monotonic()
    bench_db = BenchDatabase.from_env()
    busy_before = procstat.busy_pct()
    preflight(busy_before)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for old in list(LOG_DIR.glob("*.log")) + list(LOG_DIR.glob("*.txt")):
        old.unlink()
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    env = base_env(DATABASE_URL=bench_db.url, ERX_ENV="development", WEBHOOK_SECRETS=WEBHOOK_SECRET)
    gconf = gunicorn_settings(env)
    print(f"== webhook benchmark: database {bench_db.label}, gunicorn {gconf['workers']} workers x "
          f"{gconf['threads']} threads ({gconf['worker_class']}) for both servers", flush=True)
    bench_db.recreate()
    stack = Stack(env=env, log_dir=LOG_DIR)
    engine = probe_engine = None
    phases: list[Phase] = []
    history: list[dict[str, Any]] = []
    restarts: list[str] = []
    try:
        from app.db import make_engine

        stack.prepare_database()
        engine = make_engine(bench_db.url)
        # The probe only reads: a plain engine, so that on SQLite it never takes the
        # write lock (the app's engine begins every transaction IMMEDIATE).
        probe_engine = create_engine(bench_db.url, connect_args={"timeout": 10} if bench_db.kind == "sqlite" else {})
        create_table(engine)
        db_version = bench_db.server_version()
        servers = {
            name: start_server(stack, name, free_port(), int(gconf["workers"]), service_target=args.service_target)
            for name in ("service", "reference")
        }
        runner = Runner(args, engine, stack, servers, workers=int(gconf["workers"]))
        restarts = runner.restarts

        for name in ("reference", "service"):
            if args.warmup > 0:
                print(f"== warm-up {name} ({args.warmup:g} s)", flush=True)
                runner.phase(name, max(args.connections), args.warmup, code="W")
        for rnd in range(args.rounds):
            for conns in args.connections:
                # Alternate who goes first, so that order effects (a checkpoint or an autovacuum
                # left behind by the previous phase, a noisy neighbour) fall on both alike.
                order = ("reference", "service") if rnd % 2 == 0 else ("service", "reference")
                for name in order:
                    result = runner.phase(name, conns, args.duration, code="M")
                    phases.append(result)
                    print(f"== round {rnd + 1} {name:9s} c={conns:<3d} {result.rps:8.1f} rps  "
                          f"p50 {result.wrk['latency_p50_us'] / 1000:6.2f} ms  "
                          f"p99 {result.wrk['latency_p99_us'] / 1000:6.2f} ms  "
                          f"non-2xx {result.wrk['errors_status']}", flush=True)

        if args.history_connections:
            # Free the CPU the idle reference holds, and drop the events of the measured
            # phases (fake tokens, never processed) so the workers see only this phase's.
            stack.procs["reference"].terminate()
            stack.procs["reference"].wait(20)
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM webhook_inbox"))
            names = [f"inbox-worker-{i + 1}" for i in range(args.inbox_workers)]
            for name in names:
                stack.start_worker(name, "--no-dispatch")
            wait_worker_ready(stack, names)
            worker_pids = [stack.procs[n].pid for n in names]
            for conns in args.history_connections:
                pool = runner.pool_size(conns, args.duration)
                targets = issued_targets(engine, int(math.ceil(pool / 3)))
                print(f"== receipt->history: service c={conns} with {len(names)} inbox workers, "
                      f"{len(targets)} issued prescriptions", flush=True)
                probe = VisibilityProbe(probe_engine, timeout_s=args.duration + args.drain_timeout + 30)
                # What wrk will send: the service's own rate, a little lower with workers running.
                expected = int(0.9 * runner.service_rps.get(conns, args.max_rps) * args.duration)

                def start_probe(prefix: str, size: int, probe: VisibilityProbe = probe, expected: int = expected) -> None:
                    # About 300 events spread over what wrk will send (it sends the lines in order).
                    span = max(1, min(size, expected))
                    step = max(1, span // 300)
                    probe.start([f"{prefix}{i:010d}" for i in range(0, span, step)])

                result = runner.phase("service", conns, args.duration, code="H", targets=targets,
                                      extra_pids=worker_pids, pool=len(targets) * 3, on_start=start_probe)
                waited, drained = drain(engine, result.prefix, args.drain_timeout)
                time.sleep(0.2)  # one more poll after the last commit
                probe.stop()
                latency = history_latency(engine, result.prefix)
                latency["receipt_to_commit_sampled_ms"] = probe.summary()
                entry = {
                    "connections": conns,
                    "inbox_workers": len(names),
                    "load": result.as_json(),
                    "drain_after_load_s": round(waited, 2),
                    "drained": drained,
                    **latency,
                }
                history.append(entry)
                lat, seen = latency["receipt_to_history_ms"], latency["receipt_to_commit_sampled_ms"]
                print(f"   {result.rps:.1f} rps while processing; receipt->history (processed_at) p50 {lat['p50']} ms, "
                      f"p99 {lat['p99']} ms; seen committed (sample of {seen['sampled_events_seen']}) p50 "
                      f"{seen['p50']} ms, p99 {seen['p99']} ms; drained {waited:.1f} s after the load", flush=True)
    finally:
        stack.stop()
        for eng in (engine, probe_engine):
            if eng is not None:
                eng.dispose()
        bench_db.finish()
        shutil.rmtree(WORK_DIR, ignore_errors=True)

    return report(args, gconf, db_version, phases, history, time.monotonic() - wall, busy_before, restarts)


def report(
    args: argparse.Namespace, gconf: dict[str, Any], db_version: str, phases: list[Phase],
    history: list[dict[str, Any]], wall_s: float, busy_before: float | None, restarts: list[str],
) -> int:
    by_key: dict[tuple[str, int], list[Phase]] = {}
    for p in phases:
        by_key.setdefault((p.server, p.connections), []).append(p)
    comparisons = []
    rows = []
    sqlite = db_version.startswith("SQLite")  # no separate database server to account
    for conns in args.connections:
        refs, svcs = by_key[("reference", conns)], by_key[("service", conns)]
        ref, svc = summary(refs), summary(svcs)
        rps_ratio = ratio(svc["rps"], ref["rps"])
        p99_ratio = ratio(svc["latency_ms"]["p99"], ref["latency_ms"]["p99"])
        per_round = [round(s_.rps / r_.rps, 3) for r_, s_ in zip(refs, svcs, strict=True)]
        comparisons.append({
            "connections": conns,
            "reference": ref,
            "service": svc,
            "rps_ratio_service_over_reference": round(rps_ratio, 3) if rps_ratio else None,
            "rps_ratio_per_round": per_round,
            "p99_ratio_service_over_reference": round(p99_ratio, 3) if p99_ratio else None,
            "rounds": [p.as_json() for p in refs + svcs],
        })
        for name, sm in (("reference", ref), ("service", svc)):
            cpu = sm["cpu_ms_per_request"]
            rows.append([
                name, conns, f"{sm['requests']:,}", fmt(sm["rps"], 0), fmt(sm["latency_ms"]["p50"], 1),
                fmt(sm["latency_ms"]["p99"], 1), sm["non_2xx"], fmt(cpu["server"], 2),
                "in server" if sqlite else fmt(cpu["postgres"], 2),
                f"{fmt(sm['other_cpu_pct'], 0, '%')} / {fmt(sm['steal_pct'], 0, '%')}",
            ])
        rows.append(["**service / reference**", conns, "",
                     f"**{fmt(rps_ratio, 2)}x** ({', '.join(f'{r:.2f}' for r in per_round)})", "",
                     f"{fmt(p99_ratio, 2)}x", "", fmt(ratio(svc['cpu_ms_per_request']['server'],
                                                           ref['cpu_ms_per_request']['server']), 2, "x"),
                     "", ""])

    c32 = next((c for c in comparisons if c["connections"] == 32), comparisons[0])
    targets = [
        {
            "target": f"service rps >= {RPS_RATIO_TARGET} x reference rps at {c32['connections']} connections",
            "measured": c32["rps_ratio_service_over_reference"],
            "met": (c32["rps_ratio_service_over_reference"] or 0) >= RPS_RATIO_TARGET,
        },
        {
            "target": f"service p99 < {P99_TARGET_MS:g} ms at {c32['connections']} connections",
            "measured": c32["service"]["latency_ms"]["p99"],
            "met": (c32["service"]["latency_ms"]["p99"] or 1e9) < P99_TARGET_MS,
            "reference_p99_ms": c32["reference"]["latency_ms"]["p99"],
        },
    ]
    valid = all(
        p.as_json()["pool_wrapped"] == 0 and p.as_json()["rows_match_2xx"] and p.wrk["errors_status"] == 0
        for p in phases
    )
    result = {
        "benchmark": "webhooks",
        "database": db_version,
        "machine": machine(busy_before_pct=busy_before),
        "gunicorn": gconf,
        "settings": {
            "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
            "connections": args.connections, "history_connections": args.history_connections,
            "inbox_workers": args.inbox_workers, "body_bytes": 1024,
        },
        "comparisons": comparisons,
        "targets": targets,
        "receipt_to_history": history,
        "service_target": args.service_target,
        "server_restarts": restarts,
        "valid": valid,
        "wall_s": round(wall_s, 1),
    }
    name = "webhooks" + ("-sqlite" if sqlite else "") + ("" if args.service_target == "wsgi:app" else "-aa")
    path = write_results(name, result)

    print()
    print(f"Webhook receiver: ~1 KB signed events, unique ids, {args.rounds} x {args.duration:g} s per server and "
          f"connection count (medians), {db_version}, {result['machine']['cpus']} CPUs, gunicorn "
          f"{gconf['workers']} workers x {gconf['threads']} threads ({gconf['worker_class']}) for both servers")
    print()
    print(markdown_table(
        ["server", "conns", "requests", "req/s", "p50 ms", "p99 ms", "non-2xx",
         "server CPU ms/req", "DB CPU ms/req", "other load / steal"],
        rows,
    ))
    print()
    print(markdown_table(
        ["target", "measured", "met"],
        [[t["target"], fmt(t["measured"], 3 if "rps" in t["target"] else 1)
          + (f" (reference: {fmt(t['reference_p99_ms'], 1)} ms)" if "reference_p99_ms" in t else ""),
          "yes" if t["met"] else "**NO**"] for t in targets],
    ))
    if history:
        print()
        print(markdown_table(
            ["load on the service", "inbox workers", "req/s during", "events", "processed", "history rows",
             "processed_at - received_at p50 / p99 ms", "seen committed p50 / p99 ms (sample)",
             "worker events/s", "drain after load s"],
            [[f"{h['connections']} conns, {args.duration:g} s", h["inbox_workers"], fmt(h["load"]["rps"], 0),
              h["events_stored"], h["states"].get("processed", 0), h["history_rows"],
              f"{fmt(h['receipt_to_history_ms']['p50'], 0)} / {fmt(h['receipt_to_history_ms']['p99'], 0)}",
              f"{fmt(h['receipt_to_commit_sampled_ms']['p50'], 0)} / {fmt(h['receipt_to_commit_sampled_ms']['p99'], 0)}"
              f" ({h['receipt_to_commit_sampled_ms']['sampled_events_seen']})",
              fmt(h["worker_throughput_per_s"], 0), fmt(h["drain_after_load_s"], 1)] for h in history],
        ))
    print()
    print(f"results: {path.relative_to(REPO_ROOT)}  (wall {result['wall_s']} s)"
          + ("" if valid else "  ** INVALID RUN: see non-2xx / wrapped pools / missing rows in the JSON **"))
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
