"""``python -m bench.dispatch``: prescriptions per second through ONE worker, vs a naive client.

What runs (loopback only, every loop bounded in count and time):

1. A throwaway database (``bench.database``: PostgreSQL ``erx_bench`` by default,
   ``BENCH_DB=sqlite`` for SQLite) is migrated and seeded with the project's own
   ``Stack.prepare_database``; the bulk seed script then generates at least
   ``--count`` Region B draft prescriptions, and each is queued for a Region B
   pharmacy with ``app.services.prescriptions.queue_send`` (untimed).
2. The sandbox starts with no faults and no webhook receiver.
3. Reference: a NAIVE client sends ``--count`` prescriptions one after the other,
   each with POST /oauth/token + POST /prescriber/login + POST /prescriptions on
   a new TCP connection per call (``requests.post``), with the same payload
   builder (``connector.build_issue_payload``) and ``client_ref_id`` = ``naive-<ref>``.
4. Measured: one ``WorkerLoop`` with the ``Dispatcher``, built exactly as
   ``flask --app app worker --no-inbox`` builds them, drains the outbox in this
   process (sandbox reset first). Timed from the first claim to an empty queue.

Auth calls are ``token_requests + logins`` from ``GET /sandbox/stats``, per 1,000
sends. Prints a Markdown table and writes ``bench/results/dispatch.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import logging
import sys
import time
from typing import Any

import requests
from sqlalchemy import event, func, select

from bench.database import BenchDatabase, bulk_seed_sql, run_sql, seed_total_for_region_b
from bench.report import RESULTS_DIR, fmt, machine, markdown_table, ratio, write_results
from scripts.stack import REPO_ROOT, Stack, base_env, free_port

LOG_DIR = REPO_ROOT / "instance" / "bench" / "logs" / "dispatch"
HTTP_TIMEOUT = (3.05, 10.0)


@dataclasses.dataclass(frozen=True)
class NaiveJob:
    """What the naive client needs for one send (the same data the worker snapshots)."""

    credentials: Any  # connector.PrescriberCredentials
    request: Any  # connector.IssueRequest, client_ref_id already changed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="prescriptions per client (default 1000)")
    parser.add_argument(
        "--phase-timeout", type=float, default=75.0,
        help="seconds each timed phase may take before it is cut short (default 75)",
    )
    parser.add_argument(
        "--profile", action="store_true",
        help="also write a cProfile of the worker phase to bench/results/dispatch-worker.prof",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 50_000:
        parser.error("--count must be between 1 and 50000")
    return args


# -- set-up ------------------------------------------------------------------


def queue_region_b(db: Any, count: int) -> tuple[list[int], float]:
    """Queue ``count`` Region B drafts (round-robin over Region B pharmacies); returns ids, seconds."""
    from app.models import Patient, Pharmacy, Prescription
    from app.services.prescriptions import queue_send

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
    started = time.perf_counter()
    for i, pid in enumerate(ids):
        reply = queue_send(db, pid, pharmacy_id=pharmacies[i % len(pharmacies)])
        if reply.status != 202:
            raise SystemExit(f"queue_send({pid}) answered {reply.status}: {reply.body}")
    return ids, time.perf_counter() - started


def naive_jobs(db: Any, settings: Any, ids: list[int]) -> list[NaiveJob]:
    """Snapshot what each send needs, as the Dispatcher does, with ``naive-`` references."""
    from app.crypto import CredentialCipher
    from app.models import Prescription
    from app.services.credentials import prescriber_credentials
    from app.services.dispatch import _issue_request  # the worker's own request builder

    cipher = CredentialCipher(settings.encryption_keys)
    jobs = []
    with db.session() as session:
        for pid in ids:
            prescription = session.get(Prescription, pid)
            request = _issue_request(prescription)
            jobs.append(
                NaiveJob(
                    credentials=prescriber_credentials(prescription.prescriber, cipher),
                    request=dataclasses.replace(request, client_ref_id=f"naive-{request.client_ref_id}"),
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


def summarise(name: str, sent: int, ok: int, elapsed: float, stats: dict[str, Any], **extra: Any) -> dict[str, Any]:
    auth = stats["token_requests"] + stats["logins"]
    return {
        "client": name,
        "sent": sent,
        "issued_ok": ok,
        "elapsed_s": round(elapsed, 3),
        "per_second": round(ok / elapsed, 2) if elapsed > 0 else None,
        "ms_per_send": round(elapsed / sent * 1000, 3) if sent else None,
        "token_requests": stats["token_requests"],
        "logins": stats["logins"],
        "auth_calls": auth,
        "auth_calls_per_1000_sends": round(auth / sent * 1000, 2) if sent else None,
        "issue_attempts": stats["issue_attempts"],
        "prescriptions_issued_by_sandbox": stats["prescriptions_issued"],
        **extra,
    }


# -- reference: the naive client ------------------------------------------------


def naive_send(base: str, settings: Any, job: NaiveJob) -> bool:
    """Token, login and issue, each on a new TCP connection; True if the platform issued it."""
    from connector import build_issue_payload

    creds = job.credentials
    token = requests.post(
        f"{base}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": settings.erx_client_id,
            "client_secret": settings.erx_client_secret,
            "scope": "prescriptions",
        },
        timeout=HTTP_TIMEOUT,
    ).json()["access_token"]
    login = requests.post(
        f"{base}/prescriber/login",
        json={"email": creds.email, "password": creds.password},
        headers={"Authorization": f"Bearer {token}"},
        timeout=HTTP_TIMEOUT,
    ).json()
    session_token = login["data"]["session_token"]
    body = requests.post(
        f"{base}/prescriptions",
        json=build_issue_payload(job.request, secure_pin=creds.secure_pin),
        headers={"Authorization": f"Bearer {token}", "X-Session-Token": session_token},
        timeout=HTTP_TIMEOUT,
    ).json()
    return bool(body.get("success")) and bool(body["data"]["prescription"]["id"])


def run_naive(base: str, settings: Any, jobs: list[NaiveJob], timeout_s: float) -> dict[str, Any]:
    sandbox_reset(base)
    deadline = time.monotonic() + timeout_s
    sent = ok = 0
    cpu0, started = time.process_time(), time.perf_counter()
    for job in jobs:
        if time.monotonic() > deadline:
            break
        sent += 1
        try:
            ok += naive_send(base, settings, job)
        except (requests.RequestException, KeyError, ValueError):
            pass
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    return summarise(
        "naive (token + login + issue per send, new connection per call)",
        sent, ok, elapsed, sandbox_stats(base),
        client_cpu_ms_per_send=round(cpu / max(sent, 1) * 1000, 3),
        cut_short=sent < len(jobs),
    )


# -- measured: one worker ---------------------------------------------------------


def run_worker(
    base: str, db: Any, settings: Any, count: int, timeout_s: float, *, profile: bool = False
) -> dict[str, Any]:
    """Drain the outbox with one WorkerLoop (dispatch only), as ``flask --app app worker --no-inbox``."""
    from app.models import DispatchOutbox, Prescription
    from app.services.dispatch import Dispatcher
    from app.services.platform import make_client
    from app.worker import WorkerLoop, worker_id

    sandbox_reset(base)
    statements = 0

    @event.listens_for(db.engine, "before_cursor_execute")
    def _count(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    client = make_client(settings)
    dispatcher = Dispatcher(db, settings, client, worker_id=worker_id())
    loop = WorkerLoop(dispatcher, None, poll_s=settings.worker_poll_s)
    profiler = cProfile.Profile() if profile else None
    cpu0, started = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    loop.run(max_seconds=timeout_s, until_idle=True)
    if profiler is not None:
        profiler.disable()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    if profiler is not None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(RESULTS_DIR / "dispatch-worker.prof")
    event.remove(db.engine, "before_cursor_execute", _count)
    client.close()
    with db.session() as session:
        done = session.scalar(select(func.count()).select_from(DispatchOutbox).where(DispatchOutbox.state == "done"))
        issued = session.scalar(
            select(func.count()).select_from(Prescription).where(
                Prescription.status == "issued", Prescription.platform_token.is_not(None)
            )
        )
        pending = session.scalar(
            select(func.count()).select_from(DispatchOutbox).where(DispatchOutbox.state == "pending")
        )
    stats = sandbox_stats(base)
    return summarise(
        "service worker (1 WorkerLoop + Dispatcher, cached tokens, keep-alive)",
        count, int(issued or 0), elapsed, stats,
        outbox_done=done, outbox_pending=pending,
        worker_cpu_ms_per_send=round(cpu / max(count, 1) * 1000, 3),
        sql_statements_per_send=round(statements / max(count, 1), 2),
        cut_short=bool(pending),
    )


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
    print(f"== dispatch benchmark: {args.count} prescriptions per client, database {bench_db.label}", flush=True)
    bench_db.recreate()
    configure_worker_logging()
    for old in LOG_DIR.glob("*.log"):
        if old.name != "worker.log":
            old.unlink()
    stack = Stack(env=base_env(DATABASE_URL=bench_db.url, ERX_ENV="development"), log_dir=LOG_DIR)
    db = None
    try:
        from app.config import load_settings
        from app.db import Database

        stack.prepare_database()
        db = Database(bench_db.url)
        run_sql(db.engine, bulk_seed_sql(seed_total_for_region_b(args.count)))
        ids, queue_s = queue_region_b(db, args.count)
        print(f"== queued {len(ids)} Region B prescriptions in {queue_s:.1f} s (untimed set-up)", flush=True)

        stack.start_sandbox(webhook_port=free_port())
        base = stack.sandbox_url
        # No receiver: no webhook traffic competes with the sends. No faults (defaults are 0).
        requests.post(f"{base}/sandbox/control", json={"webhook_url": None, "auto": False},
                      timeout=HTTP_TIMEOUT).raise_for_status()
        settings = load_settings(stack.env)
        jobs = naive_jobs(db, settings, ids)

        print("== reference: naive client ...", flush=True)
        naive = run_naive(base, settings, jobs, args.phase_timeout)
        print(f"   {naive['issued_ok']} issued in {naive['elapsed_s']:.2f} s", flush=True)
        print("== measured: one worker draining the outbox ...", flush=True)
        worker = run_worker(base, db, settings, len(ids), args.phase_timeout, profile=args.profile)
        print(f"   {worker['issued_ok']} issued in {worker['elapsed_s']:.2f} s", flush=True)
        db_version = bench_db.server_version()
    finally:
        stack.stop()
        if db is not None:
            db.dispose()
        bench_db.finish()

    speedup = ratio(worker["per_second"], naive["per_second"])
    auth_ratio = ratio(worker["auth_calls_per_1000_sends"], naive["auth_calls_per_1000_sends"])
    valid = (
        worker["issued_ok"] == args.count
        and naive["issued_ok"] == args.count
        and not worker["cut_short"]
        and not naive["cut_short"]
    )
    result = {
        "benchmark": "dispatch",
        "count": args.count,
        "database": db_version,
        "machine": machine(),
        "worker_settings": {"worker_batch": settings.worker_batch, "worker_poll_s": settings.worker_poll_s},
        "reference": naive,
        "measured": worker,
        "ratios": {
            "throughput_worker_over_naive": round(speedup, 3) if speedup else None,
            "auth_calls_worker_over_naive": round(auth_ratio, 5) if auth_ratio is not None else None,
        },
        "valid": valid,
        "wall_s": round(time.monotonic() - wall, 1),
    }
    path = write_results("dispatch", result)

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
        for name, r in (("naive client (reference)", naive), ("service, 1 worker", worker))
    ]
    rows.append(
        ["**ratio** service / naive", "", "", f"**{fmt(speedup, 2)}x**", "", "",
         f"{fmt(auth_ratio, 4)}x"]
    )
    print()
    print(f"Dispatch: {args.count} Region B prescriptions, sandbox without faults, {db_version}, "
          f"{result['machine']['cpus']} CPUs")
    print()
    print(markdown_table(
        ["client", "issued", "seconds", "prescriptions/s", "ms/send", "token reqs + logins", "auth calls / 1,000 sends"],
        rows,
    ))
    print()
    print(f"worker: {worker['sql_statements_per_send']} SQL statements and "
          f"{worker['worker_cpu_ms_per_send']} ms CPU per send (in-process); "
          f"naive client CPU {naive['client_cpu_ms_per_send']} ms per send")
    print(f"results: {path.relative_to(REPO_ROOT)}  (wall {result['wall_s']} s)"
          + ("" if valid else "  ** INVALID RUN: not every prescription was issued **"))
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
