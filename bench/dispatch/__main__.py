"""``python -m bench.dispatch``: prescriptions per second through ONE worker, vs a naive client.

What runs (loopback only, every loop bounded in count and time):

1. A throwaway database (``bench.database``: PostgreSQL ``erx_bench`` by default,
   ``BENCH_DB=sqlite`` for SQLite) is migrated and seeded with the project's own
   ``Stack.prepare_database``; the bulk seed script then generates at least
   ``--count`` Region B draft prescriptions.
2. The sandbox starts with no faults and no webhook receiver.
3. ``--rounds`` rounds (default 4) each take the next ``count / rounds``
   prescriptions, queue them with ``app.services.prescriptions.queue_send``
   (untimed), then time both clients on them, alternating which goes first, so
   that a noisy neighbour on a shared machine hits both alike:

   * reference, NAIVE client: one send after the other, each with
     POST /oauth/token + POST /prescriber/login + POST /prescriptions on a new
     TCP connection per call (``requests.post``), the same payload builder
     (``connector.build_issue_payload``), ``client_ref_id`` = ``naive-<ref>``;
   * measured: one ``WorkerLoop`` with the ``Dispatcher``, built as
     ``flask --app app worker --no-inbox`` builds them and kept for the whole
     run (one worker process, its token cache warm after the first send,
     ``--threads`` sends at once, default ``WORKER_SEND_THREADS``),
     draining the outbox in this process, timed from its first claim to an
     empty queue. SQL statements are counted on the worker's engine
     (``before_cursor_execute``) and divided by the sends.

Auth calls are ``token_requests + logins`` (deltas of ``GET /sandbox/stats``)
per 1,000 sends. ``--rtt-ms`` adds network latency with a proxy process
(``bench/latency_proxy.py``) between both clients and the sandbox.
Prints a Markdown table and writes ``bench/results/dispatch.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import logging
import sys
import threading
import time
from typing import Any

import requests
from sqlalchemy import event, func, select, text

from bench import latency_proxy
from bench.database import BenchDatabase, bulk_seed_sql, run_sql, seed_total_for_region_b
from bench.procstat import busy_pct, machine_busy
from bench.report import RESULTS_DIR, fmt, machine, markdown_table, preflight, ratio, write_results
from scripts.stack import REPO_ROOT, Stack, base_env, free_port

LOG_DIR = REPO_ROOT / "instance" / "bench" / "logs" / "dispatch"
HTTP_TIMEOUT = (3.05, 10.0)


@dataclasses.dataclass(frozen=True)
class NaiveJob:
    """What the naive client needs for one send (the same data the worker snapshots)."""

    credentials: Any  # connector.PrescriberCredentials
    request: Any  # connector.IssueRequest, client_ref_id already changed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dispatch", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--count", type=int, default=1000, help="prescriptions per client (default 1000)"
    )
    parser.add_argument(
        "--phase-timeout",
        type=float,
        default=75.0,
        help="seconds each client may spend sending, over all rounds, before it is cut short (default 75)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=0.0,
        help="put a loopback proxy adding this round-trip latency between both clients and the sandbox "
        "(a remote platform); default 0: direct",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="the worker's send threads (WORKER_SEND_THREADS; default: the setting, 4)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also write a cProfile of the worker phase to bench/results/dispatch-worker.prof",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 50_000:
        parser.error("--count must be between 1 and 50000")
    if not 1 <= args.rounds <= min(20, args.count):
        parser.error("--rounds must be between 1 and min(20, --count)")
    if not 0 <= args.rtt_ms <= 500:
        parser.error("--rtt-ms must be between 0 and 500")
    if args.threads is not None and not 1 <= args.threads <= 10:
        parser.error("--threads must be between 1 and 10")
    return args


# -- set-up ------------------------------------------------------------------


def region_b_drafts(db: Any, count: int) -> tuple[list[int], list[int]]:
    """The first ``count`` Region B draft ids, and the Region B pharmacies with a branch id."""
    from app.foundation.models import Patient, Pharmacy, Prescription

    with db.session() as session:
        ids = list(
            session.scalars(
                select(Prescription.id)
                .join(Patient, Patient.id == Prescription.patient_id)
                .where(Patient.region_code == "B", Prescription.status == "draft")
                .order_by(Prescription.id)
                .limit(count)
            )
        )
        pharmacies = list(
            session.scalars(
                select(Pharmacy.id)
                .where(Pharmacy.region_code == "B", Pharmacy.branch_id.is_not(None))
                .order_by(Pharmacy.branch_id)
            )
        )
    if len(ids) < count:
        raise SystemExit(f"only {len(ids)} Region B drafts were generated, {count} needed")
    return ids, pharmacies


def queue(db: Any, ids: list[int], pharmacies: list[int]) -> float:
    """Queue ``ids`` (round-robin over ``pharmacies``) with ``queue_send``; returns seconds taken."""
    from app.foundation.errors import DomainError
    from app.services.prescriptions import queue_send

    started = time.perf_counter()
    for pid in ids:
        try:
            queue_send(db, pid, pharmacy_id=pharmacies[pid % len(pharmacies)])
        except DomainError as exc:
            raise SystemExit(f"queue_send({pid}) refused: {exc.code}: {exc.message}") from None
    return time.perf_counter() - started


def naive_jobs(db: Any, settings: Any, ids: list[int]) -> list[NaiveJob]:
    """Snapshot what each send needs, as the Dispatcher does, with ``naive-`` references."""
    from app.foundation.crypto import CredentialCipher
    from app.foundation.models import Prescription
    from app.services.credentials import prescriber_credentials
    from app.services.dispatch.issue_request import (
        issue_request as _issue_request,  # the worker's own request builder
    )

    cipher = CredentialCipher(settings.encryption_keys)
    jobs = []
    with db.session() as session:
        for pid in ids:
            prescription = session.get(Prescription, pid)
            request = _issue_request(prescription)
            jobs.append(
                NaiveJob(
                    credentials=prescriber_credentials(prescription.prescriber, cipher),
                    request=dataclasses.replace(
                        request, client_ref_id=f"naive-{request.client_ref_id}"
                    ),
                )
            )
    return jobs


# -- the sandbox's counters -------------------------------------------------------


def sandbox_stats(base: str) -> dict[str, Any]:
    resp = requests.get(f"{base}/sandbox/stats", timeout=HTTP_TIMEOUT)
    resp.raise_for_status()
    return resp.json()


def sandbox_reset(base: str) -> None:
    requests.post(f"{base}/sandbox/reset", timeout=HTTP_TIMEOUT).raise_for_status()


class MachineLoad:
    """Whole-machine busy and steal percentages over a phase (noise indicators)."""

    def __enter__(self) -> MachineLoad:
        self.start = machine_busy()
        return self

    def __exit__(self, *_exc: object) -> None:
        (b0, t0, s0), (b1, t1, s1) = self.start, machine_busy()
        span = t1 - t0
        self.busy_pct = round(100.0 * (b1 - b0) / span, 1) if span > 0 else None
        self.steal_pct = round(100.0 * (s1 - s0) / span, 1) if span > 0 else None


@dataclasses.dataclass
class Tally:
    """One client's figures, summed over the rounds."""

    name: str
    sent: int = 0
    ok: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    statements: int = 0
    stats: dict[str, int] = dataclasses.field(default_factory=dict)
    busy: list[float] = dataclasses.field(default_factory=list)
    steal: list[float] = dataclasses.field(default_factory=list)
    rounds: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cut_short: bool = False

    def add(
        self,
        sent: int,
        ok: int,
        elapsed: float,
        cpu: float,
        before: dict,
        after: dict,
        load: MachineLoad,
    ) -> None:
        self.sent += sent
        self.ok += ok
        self.elapsed_s += elapsed
        self.cpu_s += cpu
        for key in ("token_requests", "logins", "issue_attempts", "prescriptions_issued"):
            self.stats[key] = self.stats.get(key, 0) + after[key] - before[key]
        self.busy.append(load.busy_pct or 0.0)
        self.steal.append(load.steal_pct or 0.0)
        self.rounds.append(
            {
                "sent": sent,
                "ok": ok,
                "elapsed_s": round(elapsed, 3),
                "per_second": round(ok / elapsed, 2) if elapsed > 0 else None,
                "auth_calls": (after["token_requests"] - before["token_requests"])
                + (after["logins"] - before["logins"]),
                "machine_busy_pct": load.busy_pct,
                "steal_pct": load.steal_pct,
            }
        )

    def as_json(self, **extra: Any) -> dict[str, Any]:
        auth = self.stats.get("token_requests", 0) + self.stats.get("logins", 0)
        return {
            "client": self.name,
            "sent": self.sent,
            "issued_ok": self.ok,
            "elapsed_s": round(self.elapsed_s, 3),
            "per_second": round(self.ok / self.elapsed_s, 2) if self.elapsed_s > 0 else None,
            "ms_per_send": round(self.elapsed_s / self.sent * 1000, 3) if self.sent else None,
            "token_requests": self.stats.get("token_requests", 0),
            "logins": self.stats.get("logins", 0),
            "auth_calls": auth,
            "auth_calls_per_1000_sends": round(auth / self.sent * 1000, 2) if self.sent else None,
            "issue_attempts": self.stats.get("issue_attempts", 0),
            "prescriptions_issued_by_sandbox": self.stats.get("prescriptions_issued", 0),
            "cpu_ms_per_send_in_this_process": round(self.cpu_s / max(self.sent, 1) * 1000, 3),
            "machine_busy_pct_mean": round(sum(self.busy) / len(self.busy), 1)
            if self.busy
            else None,
            "steal_pct_max": max(self.steal) if self.steal else None,
            "cut_short": self.cut_short,
            "rounds": self.rounds,
            **extra,
        }


# -- reference: the naive client ------------------------------------------------


def naive_send(platform: str, settings: Any, job: NaiveJob) -> bool:
    """Token, login and issue, each on a new TCP connection; True if the platform issued it."""
    from connector import build_issue_payload

    creds = job.credentials
    token = requests.post(
        f"{platform}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": settings.erx_client_id,
            "client_secret": settings.erx_client_secret,
            "scope": "prescriptions",
        },
        timeout=HTTP_TIMEOUT,
    ).json()["access_token"]
    login = requests.post(
        f"{platform}/prescriber/login",
        json={"email": creds.email, "password": creds.password},
        headers={"Authorization": f"Bearer {token}"},
        timeout=HTTP_TIMEOUT,
    ).json()
    session_token = login["data"]["session_token"]
    body = requests.post(
        f"{platform}/prescriptions",
        json=build_issue_payload(job.request, secure_pin=creds.secure_pin),
        headers={"Authorization": f"Bearer {token}", "X-Session-Token": session_token},
        timeout=HTTP_TIMEOUT,
    ).json()
    return bool(body.get("success")) and bool(body["data"]["prescription"]["id"])


def run_naive(
    tally: Tally, base: str, platform: str, settings: Any, jobs: list[NaiveJob], deadline: float
) -> None:
    """Send ``jobs`` naively to ``platform``; ``base`` is the sandbox itself (stats)."""
    before = sandbox_stats(base)
    sent = ok = 0
    cpu0, started = time.process_time(), time.perf_counter()
    with MachineLoad() as load:
        for job in jobs:
            if time.monotonic() > deadline:
                tally.cut_short = True
                break
            sent += 1
            try:
                ok += naive_send(platform, settings, job)
            except (requests.RequestException, KeyError, ValueError):
                pass
    elapsed = time.perf_counter() - started
    tally.add(sent, ok, elapsed, time.process_time() - cpu0, before, sandbox_stats(base), load)


# -- measured: one worker ---------------------------------------------------------


class Worker:
    """One dispatch-only WorkerLoop, built as ``flask --app app worker --no-inbox`` builds it."""

    def __init__(self, db: Any, settings: Any) -> None:
        from app.interfaces.worker import WorkerLoop, worker_id
        from app.services.connector_factory import make_client
        from app.services.dispatch import Dispatcher

        self.db = db
        # Statement text (first 70 characters) -> [count, seconds from execute to its answer].
        self.statement_times: dict[str, list[float]] = {}
        self.client = make_client(settings)
        self.loop = WorkerLoop(
            Dispatcher(db, settings, self.client, worker_id=worker_id()),
            None,
            poll_s=settings.worker_poll_s,
        )

    def drain(self, tally: Tally, base: str, count: int, deadline: float, profiler: Any) -> None:
        """Run until the outbox is empty (or the deadline); counts SQL statements on the way."""
        from app.foundation.models import DispatchOutbox

        statements = 0
        counting = threading.Lock()  # the send threads execute statements at once

        def _count(conn: Any, *_args: Any) -> None:
            nonlocal statements
            conn.info["bench_started"] = time.perf_counter()
            with counting:
                statements += 1

        def _timed(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            took = time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())
            key = " ".join(statement.split())[:70]
            with counting:
                seen = self.statement_times.setdefault(key, [0, 0.0])
                seen[0] += 1
                seen[1] += took

        with self.db.session() as session:
            done_before = session.scalar(
                select(func.count())
                .select_from(DispatchOutbox)
                .where(DispatchOutbox.state == "done")
            )
        before = sandbox_stats(base)
        event.listen(self.db.engine, "before_cursor_execute", _count)
        event.listen(self.db.engine, "after_cursor_execute", _timed)
        cpu0, started = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        with MachineLoad() as load:
            self.loop.run(max_seconds=max(0.0, deadline - time.monotonic()), until_idle=True)
        if profiler is not None:
            profiler.disable()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
        event.remove(self.db.engine, "before_cursor_execute", _count)
        event.remove(self.db.engine, "after_cursor_execute", _timed)
        with self.db.session() as session:
            done = session.scalar(
                select(func.count())
                .select_from(DispatchOutbox)
                .where(DispatchOutbox.state == "done")
            )
            pending = session.scalar(
                select(func.count())
                .select_from(DispatchOutbox)
                .where(DispatchOutbox.state == "pending")
            )
        tally.statements += statements
        tally.cut_short = tally.cut_short or bool(pending)
        tally.add(count, int(done - done_before), elapsed, cpu, before, sandbox_stats(base), load)

    def close(self) -> None:
        self.client.close()


def configure_worker_logging() -> None:
    """Log like ``flask --app app worker``: INFO lines to a file (not the terminal)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(LOG_DIR / "worker.log", mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.monotonic()
    bench_db = BenchDatabase.from_env()
    busy_before = busy_pct()
    preflight(busy_before)
    print(
        f"== dispatch benchmark: {args.count} prescriptions per client in {args.rounds} rounds, "
        f"database {bench_db.label}",
        flush=True,
    )
    bench_db.recreate()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for old in LOG_DIR.glob("*.log"):
        old.unlink()
    configure_worker_logging()
    stack = Stack(env=base_env(DATABASE_URL=bench_db.url, ERX_ENV="development"), log_dir=LOG_DIR)
    naive = Tally("naive (token + login + issue per send, new connection per call)")
    measured = Tally("service worker (1 WorkerLoop + Dispatcher: cached tokens, one HTTP session)")
    db = proxy = worker = None
    try:
        from app.foundation.config import load_settings
        from app.foundation.db import Database

        stack.prepare_database()
        db = Database(bench_db.url, pool_size=11)
        total = seed_total_for_region_b(args.count)
        if bench_db.reuse:
            # A reused (grown) database already holds rx- rows that are not drafts: add the
            # drafts after them, from a multiple of 24 so that the Region B share stays 16/24.
            with db.engine.connect() as conn:
                existing = int(
                    conn.execute(
                        text("SELECT count(*) FROM prescriptions WHERE reference LIKE :p"),
                        {"p": "rx-%"},
                    ).scalar()
                    or 0
                )
            total += -(-existing // 24) * 24
        run_sql(db.engine, bulk_seed_sql(total))
        ids, pharmacies = region_b_drafts(db, args.count)

        stack.start_sandbox(webhook_port=free_port())
        base = stack.sandbox_url
        # No receiver: no webhook traffic competes with the sends. No faults (defaults are 0).
        requests.post(
            f"{base}/sandbox/control",
            json={"webhook_url": None, "auto": False},
            timeout=HTTP_TIMEOUT,
        ).raise_for_status()
        sandbox_reset(base)
        platform = base
        if args.rtt_ms > 0:
            proxy, proxy_port = latency_proxy.start_process(
                int(base.rsplit(":", 1)[1]), rtt_ms=args.rtt_ms, cwd=REPO_ROOT
            )
            platform = f"http://127.0.0.1:{proxy_port}"
            print(
                f"== platform round trip: +{args.rtt_ms:g} ms (latency proxy at {platform})",
                flush=True,
            )
        overrides = {"WORKER_SEND_THREADS": str(args.threads)} if args.threads else {}
        settings = load_settings({**stack.env, "ERX_BASE_URL": platform, **overrides})
        worker = Worker(db, settings)
        profiler = cProfile.Profile() if args.profile else None
        size = -(-len(ids) // args.rounds)
        for rnd in range(args.rounds):
            chunk = ids[rnd * size : (rnd + 1) * size]
            if not chunk:
                break
            queued_s = queue(db, chunk, pharmacies)
            jobs = naive_jobs(db, settings, chunk)
            order = ("naive", "worker") if rnd % 2 == 0 else ("worker", "naive")
            for who in order:
                # Each phase may use what is left of its client's time budget.
                if who == "naive":
                    deadline = time.monotonic() + max(0.0, args.phase_timeout - naive.elapsed_s)
                    run_naive(naive, base, platform, settings, jobs, deadline)
                else:
                    deadline = time.monotonic() + max(0.0, args.phase_timeout - measured.elapsed_s)
                    worker.drain(measured, base, len(chunk), deadline, profiler)
            print(
                f"== round {rnd + 1}/{args.rounds}: {len(chunk)} queued ({queued_s:.1f} s, untimed); "
                f"naive {naive.rounds[-1]['per_second']}/s, worker {measured.rounds[-1]['per_second']}/s",
                flush=True,
            )
        if profiler is not None:
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(RESULTS_DIR / "dispatch-worker.prof")
        db_version = bench_db.server_version()
    finally:
        if worker is not None:
            worker.close()
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        stack.stop()
        if db is not None:
            db.dispose()
        bench_db.finish()

    ref = naive.as_json()
    top = sorted(worker.statement_times.items(), key=lambda kv: -kv[1][1])[:10] if worker else []
    got = measured.as_json(
        sql_statements_per_send=round(measured.statements / max(measured.sent, 1), 2),
        # Where the worker's database time goes: execute -> answer, summed over the rounds (commits not included).
        statement_ms_per_send=[
            {
                "statement": text,
                "count": int(n),
                "ms_per_send": round(sec / max(measured.sent, 1) * 1000, 3),
            }
            for text, (n, sec) in top
        ],
    )
    speedup = ratio(got["per_second"], ref["per_second"])
    auth_ratio = ratio(got["auth_calls_per_1000_sends"], ref["auth_calls_per_1000_sends"])
    per_round = [
        round(m["per_second"] / n["per_second"], 3) if m["per_second"] and n["per_second"] else None
        for n, m in zip(naive.rounds, measured.rounds, strict=True)
    ]
    valid = (
        got["issued_ok"] == args.count
        and ref["issued_ok"] == args.count
        and not (naive.cut_short or measured.cut_short)
    )
    result = {
        "benchmark": "dispatch",
        "count": args.count,
        "rounds": args.rounds,
        "added_rtt_ms": args.rtt_ms,
        "database": db_version,
        "machine": machine(busy_before_pct=busy_before),
        "worker_settings": {
            "worker_batch": settings.worker_batch,
            "worker_poll_s": settings.worker_poll_s,
            "worker_send_threads": settings.worker_send_threads,
        },
        "reference": ref,
        "measured": got,
        "ratios": {
            "throughput_worker_over_naive": round(speedup, 3) if speedup else None,
            "throughput_ratio_per_round": per_round,
            "auth_calls_worker_over_naive": round(auth_ratio, 5)
            if auth_ratio is not None
            else None,
        },
        "valid": valid,
        "wall_s": round(time.monotonic() - wall, 1),
    }
    name = (
        "dispatch"
        + ("-sqlite" if bench_db.kind == "sqlite" else "")
        + (f"-rtt{args.rtt_ms:g}ms" if args.rtt_ms else "")
    )
    path = write_results(name, result)

    rows = [
        [
            name,
            f"{r['issued_ok']}/{r['sent']}",
            fmt(r["elapsed_s"], 2),
            fmt(r["per_second"], 1),
            fmt(r["ms_per_send"], 2),
            f"{r['token_requests']} + {r['logins']}",
            fmt(r["auth_calls_per_1000_sends"], 1),
        ]
        for name, r in (("naive client (reference)", ref), ("service, 1 worker", got))
    ]
    rows.append(
        [
            "**service / naive**",
            "",
            "",
            f"**{fmt(speedup, 2)}x** (rounds: {', '.join(fmt(r, 2) for r in per_round)})",
            "",
            "",
            f"{fmt(auth_ratio, 4)}x",
        ]
    )
    where = f"sandbox + {args.rtt_ms:g} ms RTT" if args.rtt_ms else "sandbox on loopback"
    print()
    print(
        f"Dispatch: {args.count} Region B prescriptions per client ({args.rounds} interleaved rounds), {where}, "
        f"no faults, {db_version}, {result['machine']['cpus']} CPUs"
    )
    print()
    print(
        markdown_table(
            [
                "client",
                "issued",
                "seconds",
                "prescriptions/s",
                "ms/send",
                "token reqs + logins",
                "auth calls / 1,000 sends",
            ],
            rows,
        )
    )
    print()
    print(
        f"worker: {settings.worker_send_threads} send thread(s); {got['sql_statements_per_send']} SQL statements "
        f"and {got['cpu_ms_per_send_in_this_process']} ms "
        f"CPU per send; naive client: {ref['cpu_ms_per_send_in_this_process']} ms CPU per send"
    )
    for row in got["statement_ms_per_send"][:6]:
        print(f"  {row['ms_per_send']:7.3f} ms/send  x{row['count']:<5} {row['statement']}")
    print(
        f"machine busy (mean of rounds): naive {ref['machine_busy_pct_mean']}%, worker "
        f"{got['machine_busy_pct_mean']}%; worst hypervisor steal {ref['steal_pct_max']}% / {got['steal_pct_max']}%"
    )
    print(
        f"results: {path.relative_to(REPO_ROOT)}  (wall {result['wall_s']} s)"
        + ("" if valid else "  ** INVALID RUN: not every prescription was issued in time **")
    )
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
