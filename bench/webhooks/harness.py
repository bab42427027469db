"""The webhook benchmark's moving parts: server slots, wrk, CPU accounting, targets, the history watcher.

Every server slot runs ``gunicorn -c gunicorn.conf.py <target>`` with the same
environment, so only the WSGI app differs between slots. A slot's server is
started fresh for each round and stopped after it (one server
instance can sit 10-20% off another for its whole life).
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import procstat
from bench.database import bulk_seed_sql, run_sql
from bench.webhooks.events import Target
from bench.webhooks.stats import advance_floor
from scripts.stack import BIN, REPO_ROOT, Stack, free_port, wait_http

HERE = Path(__file__).resolve().parent
LUA = HERE / "post_signed.lua"
PATH = "/webhooks/platform"
HARNESS_APP_NAME = "erx-bench-harness"

# slot -> (WSGI target, extra environment). The reference and its copy are the
# same program: their ratio is the A/A band of the run.
SLOTS: dict[str, tuple[str, dict[str, str]]] = {
    "service": ("wsgi:app", {}),
    "reference": ("bench.webhooks.reference:app", {}),
    "reference-copy": ("bench.webhooks.reference:app", {}),
    # Nobody LISTENs in the synchronous variant: its receipt INSERT carries no NOTIFY.
    "sync": ("bench.webhooks.sync_receiver:app", {"WORKER_WAKEUP": "poll"}),
}


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
    """One running server slot: ``name`` is the process name in the stack (slot + round)."""

    slot: str
    name: str
    url: str
    pid: int


WEB_APP_NAME = "erx-bench-web"  # PGAPPNAME of the web tier: its PostgreSQL backends by name
WORKER_APP_NAME = "erx-bench-worker"  # PGAPPNAME of the inbox workers


def _pinned(command: list[str], cpus: str | None) -> list[str]:
    """``command`` under ``taskset -c cpus`` (Linux, util-linux) when ``cpus`` is given."""
    return ["taskset", "-c", cpus, *command] if cpus else command


def start_server(
    stack: Stack,
    slot: str,
    name: str,
    workers: int,
    *,
    timeout_s: float = 90.0,
    nice: int = 0,
    cpus: str | None = None,
) -> Server:
    """Start slot ``slot`` as process ``name`` on a free port; returns once ``/healthz`` answers.

    ``nice`` > 0 starts gunicorn (and so every worker and thread) at that niceness: on
    one small machine, the CPU share a web Deployment's CPU limit would give it.
    ``cpus`` (e.g. ``"0"``) pins gunicorn and its workers to those CPUs with ``taskset``.
    Its PostgreSQL sessions carry ``application_name`` :data:`WEB_APP_NAME` (libpq's
    ``PGAPPNAME``), so that their backends' CPU can be told apart from the workers'.
    """
    target, extra = SLOTS[slot]
    port = free_port()
    command = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", target]
    proc = stack._spawn(  # noqa: SLF001 - the stack's one way to start and log a process
        name,
        _pinned(["nice", "-n", str(nice), *command] if nice > 0 else command, cpus),
        {
            "BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(workers),
            "PGAPPNAME": WEB_APP_NAME,
            **extra,
        },
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc, timeout_s=timeout_s)
    return Server(slot, name, f"http://127.0.0.1:{port}", proc.pid)


def stop_process(stack: Stack, name: str, timeout_s: float = 20.0) -> None:
    """SIGTERM process ``name`` of the stack (SIGKILL after ``timeout_s``) and forget it."""
    proc = stack.procs.pop(name, None)
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_inbox_workers(
    stack: Stack, prefix: str, count: int, timeout_s: float = 90.0, *, cpus: str | None = None
) -> list[str]:
    """Start ``count`` ``flask --app app worker --no-dispatch`` processes; their names once ready.

    ``cpus`` pins them with ``taskset``; their PostgreSQL sessions carry ``application_name``
    :data:`WORKER_APP_NAME`.
    """
    names = [f"{prefix}-inbox-worker-{i + 1}" for i in range(count)]
    for name in names:
        (stack.log_dir / f"{name}.log").unlink(missing_ok=True)
        stack._spawn(  # noqa: SLF001 - the stack's one way to start and log a process
            name,
            _pinned([str(BIN / "flask"), "--app", "app", "worker", "--no-dispatch"], cpus),
            {"PGAPPNAME": WORKER_APP_NAME},
        )
    deadline = time.monotonic() + timeout_s
    for name in names:
        log = stack.log_dir / f"{name}.log"
        while True:
            if stack.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {stack.procs[name].returncode}; see {log}")
            if log.exists() and "worker started" in log.read_text(errors="replace"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start within {timeout_s} s")
            time.sleep(0.2)
    return names


# -- CPU accounting ----------------------------------------------------------------------------


def pg_backend_pids_by_app(engine: Any) -> dict[str, list[int]]:
    """PIDs of this database's client backends by ``application_name`` ({} on SQLite)."""
    if engine.dialect.name != "postgresql":
        return {}
    found: dict[str, list[int]] = {}
    with engine.connect() as conn:
        for pid, app in conn.execute(
            text(
                "SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend'"
            )
        ):
            found.setdefault(str(app), []).append(int(pid))
    return found


class SideMeter:
    """CPU seconds of one side (processes ``pids`` with their descendants, plus this database's
    backends named ``app_name``) between :meth:`start` and :meth:`stop`. Backends that start
    in between count from zero; one that ends in between is lost (pools keep theirs open)."""

    def __init__(self, engine: Any, pids: list[int], app_name: str) -> None:
        self.engine, self.pids, self.app_name = engine, pids, app_name

    def _backends(self) -> dict[int, float]:
        return procstat.cpu_by_pid(pg_backend_pids_by_app(self.engine).get(self.app_name, []))

    def start(self) -> None:
        """Take the 'before' readings."""
        self.proc0 = procstat.tree_cpu(self.pids)
        self.pg0 = self._backends()

    def stop(self) -> dict[str, float]:
        """``{"processes": s, "postgres": s}`` used since :meth:`start`."""
        pg1 = self._backends()
        return {
            "processes": round(procstat.tree_cpu(self.pids) - self.proc0, 3),
            "postgres": round(sum(v - self.pg0.get(pid, 0.0) for pid, v in pg1.items()), 3),
        }


def pg_backend_pids(engine: Any) -> list[int]:
    """PIDs of this database's client backends, except the harness's own connections ([] on SQLite)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        return [
            int(r[0])
            for r in conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'client backend' AND application_name <> :me"
                ),
                {"me": HARNESS_APP_NAME},
            )
        ]


class CpuMeter:
    """CPU seconds used between :meth:`start` and :meth:`stop` by: the server (gunicorn master and
    workers), this database's PostgreSQL client backends (other databases' backends and the
    server's background processes are left out: other sessions share the PostgreSQL server),
    the inbox workers, and this process's children (wrk); plus the machine's busy and steal share."""

    def __init__(self, engine: Any, server_pid: int, worker_pids: list[int] | None = None) -> None:
        self.engine, self.server_pid, self.worker_pids = engine, server_pid, worker_pids or []

    def start(self) -> None:
        """Take the 'before' readings."""
        self.server0 = procstat.tree_cpu([self.server_pid])
        self.workers0 = procstat.tree_cpu(self.worker_pids)
        self.pg0 = procstat.cpu_by_pid(pg_backend_pids(self.engine))
        self.children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.machine0 = procstat.machine_busy()

    def stop(self) -> dict[str, Any]:
        """CPU seconds by party (``server``, ``postgres`` (None on SQLite), ``inbox_workers``, ``wrk``)
        and machine percentages (``busy``, ``other``: busy not explained by the parties, ``steal``)."""
        machine1 = procstat.machine_busy()
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        pg1 = procstat.cpu_by_pid(pg_backend_pids(self.engine))
        cpu: dict[str, float | None] = {
            "server": procstat.tree_cpu([self.server_pid]) - self.server0,
            "postgres": (
                sum(v - self.pg0.get(pid, 0.0) for pid, v in pg1.items())
                if self.engine.dialect.name == "postgresql"
                else None
            ),
            "inbox_workers": procstat.tree_cpu(self.worker_pids) - self.workers0,
            "wrk": (children1.ru_utime + children1.ru_stime)
            - (self.children0.ru_utime + self.children0.ru_stime),
        }
        busy0, total0, steal0 = self.machine0
        busy1, total1, steal1 = machine1
        pct: dict[str, float | None] = {"busy": None, "other": None, "steal": None}
        if total1 > total0:
            span = total1 - total0
            ours = sum(v for v in cpu.values() if v)
            pct = {
                "busy": round(100.0 * (busy1 - busy0) / span, 1),
                "other": round(max(0.0, 100.0 * ((busy1 - busy0) - ours) / span), 1),
                "steal": round(100.0 * (steal1 - steal0) / span, 1),
            }
        return {
            "cpu_s": {k: None if v is None else round(v, 3) for k, v in cpu.items()},
            "machine_pct": pct,
        }


# -- wrk ----------------------------------------------------------------------------------------


def run_wrk(
    url: str, *, connections: int, duration: float, requests_file: Path, log_path: Path
) -> dict[str, Any]:
    """Run wrk with ``post_signed.lua`` once; returns its BENCH_JSON (counts, latency in microseconds).

    Raises RuntimeError when wrk fails or prints no result line.
    """
    threads = min(connections, 2)
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA),
        url + PATH,
        "--",
        str(requests_file),
        str(threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, check=False)
    log_path.write_text(" ".join(cmd) + "\n\n" + out.stdout + out.stderr)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return json.loads(line.split(" ", 1)[1])


def wrk_summary(w: dict[str, Any]) -> dict[str, Any]:
    """The parts of a BENCH_JSON the results keep: rps, latency in ms, errors."""
    duration_s = w["duration_us"] / 1e6
    return {
        "duration_s": round(duration_s, 3),
        "requests": w["requests"],
        "rps": round(w["requests"] / duration_s, 1) if duration_s else None,
        "non_2xx": w["errors_status"],
        "socket_errors": {k: w[f"errors_{k}"] for k in ("connect", "read", "write", "timeout")},
        "latency_ms": {
            k: round(w[f"latency_{k}_us"] / 1000, 2) for k in ("p50", "p90", "p99", "p999", "max")
        },
        "request_pool": w["pool"],
        "pool_wrapped": w["wrapped"],
    }


# -- rows and targets ---------------------------------------------------------------------------


def count_rows(engine: Any, table: str, prefix: str) -> int:
    """Rows of ``table`` whose ``event_id`` starts with ``prefix``."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(f"SELECT count(*) FROM {table} WHERE event_id LIKE :p"), {"p": prefix + "%"}
            ).scalar()
            or 0
        )


def settle_rows(
    engine: Any,
    table: str,
    prefix: str,
    expected: int,
    *,
    quiet_s: float = 1.0,
    timeout_s: float = 15.0,
) -> int:
    """Count the phase's rows once requests still in flight when the load stopped have committed.

    Returns as soon as the count reaches ``expected``, or when it has not
    changed for ``quiet_s`` (then the row check will say what is missing), or after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while True:
        n = count_rows(engine, table, prefix)
        if n == expected:
            return n
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def seed_issued(engine: Any, count: int) -> list[Target]:
    """Add ``count`` prescriptions with the bulk seed, store them as issued with platform tokens.

    Returns them newest first; every event phase takes its own slice, so no
    event is ever about a prescription an earlier phase moved.
    """
    with engine.connect() as conn:
        existing = int(
            conn.execute(
                text("SELECT count(*) FROM prescriptions WHERE reference LIKE 'rx-%'")
            ).scalar()
        )
    run_sql(engine, bulk_seed_sql(existing + count))
    with engine.begin() as conn:
        pharmacy = conn.execute(
            text("SELECT min(id) FROM pharmacies WHERE branch_id IS NOT NULL")
        ).scalar()
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


def drain(engine: Any, prefix: str, timeout_s: float) -> tuple[float, bool]:
    """Wait until no inbox event of ``prefix`` is pending; returns (seconds waited, drained)."""
    started = time.monotonic()
    while True:
        with engine.connect() as conn:
            pending = conn.execute(
                text(
                    "SELECT count(*) FROM webhook_inbox WHERE event_id LIKE :p AND state = 'pending'"
                ),
                {"p": prefix + "%"},
            ).scalar()
        if not pending:
            return time.monotonic() - started, True
        if time.monotonic() - started > timeout_s:
            return time.monotonic() - started, False
        time.sleep(0.2)


def inbox_times(engine: Any, prefix: str) -> tuple[dict[str, tuple[float, float | None, str]], int]:
    """Per event of ``prefix``: (received_at, processed_at or None, state) as Unix seconds; and its history rows."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT event_id, received_at, processed_at, state FROM webhook_inbox WHERE event_id LIKE :p"
            ),
            {"p": prefix + "%"},
        ).all()
        history = int(
            conn.execute(
                text("SELECT count(*) FROM prescription_status_history WHERE event_id LIKE :p"),
                {"p": prefix + "%"},
            ).scalar()
            or 0
        )
    return {r[0]: (_ts(r[1]), None if r[2] is None else _ts(r[2]), r[3]) for r in rows}, history


def _ts(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value)).timestamp()


class HistoryWatcher:
    """When does each history row become visible to a reader, i.e. when did its transaction commit?

    Polls ``prescription_status_history`` every ``interval_s`` on its own
    connection for ids above a watermark (:func:`bench.webhooks.stats.advance_floor`),
    so each poll returns only rows not seen yet, however many events there
    are. A row first returned by a query that started at T committed before T
    and after the previous query started: ``T - received_at`` (the inbox's
    receipt time, copied to the history row) is receipt -> history, at most one
    poll late. ``received_at`` and T are both this machine's clock (loopback).
    Bounded by :meth:`stop` and ``timeout_s``.
    """

    SETTLE_S = 5.0  # no transaction of the inbox worker stays open this long

    def __init__(self, engine: Any, *, interval_s: float = 0.01, timeout_s: float = 900.0) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.seen: dict[
            str, tuple[float, float]
        ] = {}  # event_id -> (received_at, visible_at), Unix s
        self.polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        """Start watching rows added from now on."""
        with self.engine.connect() as conn:
            self.floor = int(
                conn.execute(
                    text("SELECT coalesce(max(id), 0) FROM prescription_status_history")
                ).scalar()
                or 0
            )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the poll in progress (one more poll is made first)."""
        time.sleep(self.interval_s * 2)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        ids_seen: set[int] = set()
        marks: list[tuple[float, int]] = []  # (poll time, highest id seen by then)
        top = self.floor
        query = text(
            "SELECT id, event_id, received_at FROM prescription_status_history WHERE id > :floor"
        )
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                while not self._stop.is_set() and time.monotonic() < deadline:
                    started = time.time()
                    rows = conn.execute(query, {"floor": self.floor}).all()
                    self.polls += 1
                    for row_id, event_id, received_at in rows:
                        if row_id in ids_seen:
                            continue
                        ids_seen.add(row_id)
                        top = max(top, row_id)
                        if event_id is not None:
                            self.seen[event_id] = (_ts(received_at), started)
                    marks.append((started, top))
                    settled = None
                    while marks and marks[0][0] <= started - self.SETTLE_S:
                        settled = marks.pop(0)[1]
                    self.floor = advance_floor(self.floor, ids_seen, settled)
                    self._stop.wait(max(0.0, self.interval_s - (time.time() - started)))
        except Exception as exc:  # noqa: BLE001 - reported with the phase, never hides a result
            self.error = f"{type(exc).__name__}: {exc}"
