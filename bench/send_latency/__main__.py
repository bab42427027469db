"""``python -m bench.send_latency``: from ``POST .../send`` answering 202 to ``issued``, minus the platform call.

What runs (loopback only, every loop bounded in count and time):

1. A throwaway database (``bench.database``, PostgreSQL ``erx_bench`` by
   default; ``BENCH_PG_DB``) is migrated and seeded with the project's own
   ``Stack.prepare_database``, plus enough Region B drafts from the bulk seed.
2. The sandbox (no faults, no webhooks) behind a recording proxy
   (``bench/dispatch/recording_proxy.py``) that times every ``POST
   /prescriptions`` it forwards, per ``client_ref_id``.
3. ``--rounds`` rounds, each with a fresh web tier (gunicorn with the
   project's ``gunicorn.conf.py``, as ``bench.webhooks`` starts it). In each
   round, one worker process per wake-up mode, in alternating order:
   ``flask --app app worker --no-inbox`` with ``WORKER_WAKEUP=notify``
   (measured) and with ``WORKER_WAKEUP=poll`` (the reference, polling every
   ``WORKER_POLL_S``). With the worker warm (two untimed sends), each rate of
   ``--rates`` (default 1 and 20 sends/s) sends prescriptions open-loop for
   ``--seconds`` with ``POST /api/v1/prescriptions/<id>/send``, then waits
   until every one is issued.

For each prescription: the history row's ``issued`` time (written by the
worker when it stores the token, just before its commit) minus the moment the
202 answer reached the client, minus the seconds the recording proxy spent on
its ``POST /prescriptions``. All three clocks are this machine's wall clock.
Reports p50/p99 (and mean) per mode, rate and round, the notify/poll ratio of
the p50s per round, and writes ``bench/results/send_latency.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from statistics import median
from typing import Any

import requests
from sqlalchemy import select

from bench.database import BenchDatabase, bulk_seed_sql, run_sql, seed_total_for_region_b
from bench.procstat import busy_pct
from bench.report import (
    fmt,
    machine,
    markdown_table,
    percentile,
    preflight,
    ratio,
    write_results,
)
from scripts.stack import BIN, REPO_ROOT, Stack, base_env, free_port

LOG_DIR = REPO_ROOT / "instance" / "bench" / "logs" / "send_latency"
HTTP_TIMEOUT = (3.05, 10.0)
MODES = ("notify", "poll")
WARM_UP = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.send_latency", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="seconds of sending per rate (default 20)"
    )
    parser.add_argument(
        "--rates", default="1,20", help="sends per second, comma-separated (default 1,20)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds, each with fresh processes (default 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="WORKER_SEND_THREADS for the worker"
    )
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (default 2)")
    args = parser.parse_args(argv)
    try:
        args.rate_list = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error("--rates must be numbers, e.g. 1,20")
    if not args.rate_list or not all(0 < r <= 100 for r in args.rate_list):
        parser.error("--rates must be between 0 and 100 sends/s")
    if not 1 <= args.seconds <= 300:
        parser.error("--seconds must be between 1 and 300")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be between 1 and 10")
    return args


def region_b_drafts(db: Any, count: int) -> tuple[list[int], list[int]]:
    """``count`` Region B draft ids, and the Region B pharmacies with a branch id."""
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
                select(Pharmacy.id).where(
                    Pharmacy.region_code == "B", Pharmacy.branch_id.is_not(None)
                )
            )
        )
    if len(ids) < count:
        raise SystemExit(f"only {len(ids)} Region B drafts were generated, {count} needed")
    return ids, pharmacies


def start_proxy(upstream: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.dispatch.recording_proxy", "--upstream", upstream],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    ready = proc.stdout.readline() if proc.stdout else ""
    if not ready.startswith("listening on "):
        raise SystemExit("the recording proxy did not start")
    return proc, f"http://127.0.0.1:{int(ready.split()[-1])}"


def start_worker(
    stack: Stack, name: str, mode: str, platform: str, threads: int | None
) -> subprocess.Popen:
    """One dispatch-only worker process; returns once it listens (or polls)."""
    env = {"WORKER_WAKEUP": mode, "ERX_BASE_URL": platform, "LOG_LEVEL": "INFO"}
    if threads:
        env["WORKER_SEND_THREADS"] = str(threads)
    log = stack.log_dir / f"{name}.log"
    log.unlink(missing_ok=True)
    proc = stack._spawn(name, [str(BIN / "flask"), "--app", "app", "worker", "--no-inbox"], env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker {name} exited with {proc.returncode}; see {log}")
        if log.exists() and "worker started" in log.read_text(errors="replace"):
            return proc
        time.sleep(0.1)
    raise SystemExit(f"worker {name} did not start; see {log}")


def stop_worker(stack: Stack, name: str) -> None:
    proc = stack.procs.pop(name)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Sender:
    """POSTs ``/send`` for prescription ids at a steady rate (open loop: a slow answer delays no other)."""

    def __init__(self, service: str, headers: dict[str, str], pharmacies: list[int]) -> None:
        self.service = service
        self.headers = headers
        self.pharmacies = pharmacies
        self.local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.trust_env = False
        return session

    def send_one(self, pid: int) -> tuple[int, float | None]:
        """POST one send; returns ``(pid, wall-clock time the 202 arrived)`` (None if not 202)."""
        resp = self._session().post(
            f"{self.service}/api/v1/prescriptions/{pid}/send",
            json={"pharmacy_id": self.pharmacies[pid % len(self.pharmacies)]},
            headers=self.headers,
            timeout=HTTP_TIMEOUT,
        )
        return pid, (time.time() if resp.status_code == 202 else None)

    def at_rate(self, ids: list[int], rate: float) -> dict[int, float]:
        """Send ``ids`` at ``rate`` per second; returns pid -> time of its 202."""
        answered: dict[int, float] = {}
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="sender") as pool:
            futures = []
            start = time.perf_counter()
            for i, pid in enumerate(ids):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(self.send_one, pid))
            for future in futures:
                pid, at = future.result()
                if at is not None:
                    answered[pid] = at
        return answered


def wait_issued(db: Any, ids: list[int], timeout_s: float = 60.0) -> dict[int, float]:
    """Wait until every id is issued (or the timeout); returns pid -> its ``issued`` history time (epoch s)."""
    from app.foundation.models import StatusHistory

    deadline = time.monotonic() + timeout_s
    found: dict[int, datetime] = {}
    while time.monotonic() < deadline:
        with db.session() as session:
            found = dict(
                session.execute(
                    select(StatusHistory.prescription_id, StatusHistory.received_at).where(
                        StatusHistory.prescription_id.in_(ids), StatusHistory.to_status == "issued"
                    )
                ).all()
            )
        if len(found) == len(ids):
            break
        time.sleep(0.25)
    return {pid: at.timestamp() for pid, at in found.items()}


def platform_seconds(proxy_url: str) -> dict[str, float]:
    """Reference -> seconds the proxy spent on its issue call (the last one, if several)."""
    records = requests.get(f"{proxy_url}/__records", timeout=HTTP_TIMEOUT).json()
    return {r["ref"]: r["seconds"] for r in records if r.get("ref")}


def summarise(values_s: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2) if ms else None,
        "p99_ms": round(percentile(ms, 99), 2) if ms else None,
        "mean_ms": round(sum(ms) / len(ms), 2) if ms else None,
        "max_ms": round(max(ms), 2) if ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.monotonic()
    bench_db = BenchDatabase.from_env()
    if bench_db.kind != "postgresql":
        raise SystemExit("bench.send_latency needs PostgreSQL (NOTIFY wake-ups)")
    busy_before = busy_pct()
    preflight(busy_before)
    per_phase = [max(1, round(rate * args.seconds)) for rate in args.rate_list]
    needed = args.rounds * len(MODES) * (sum(per_phase) + WARM_UP)
    print(
        f"== send latency: rates {args.rate_list}/s for {args.seconds:g} s each, {args.rounds} round(s), "
        f"{needed} prescriptions, database {bench_db.label}",
        flush=True,
    )
    bench_db.recreate()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for old in LOG_DIR.glob("*.log"):
        old.unlink()
    stack = Stack(
        env=base_env(DATABASE_URL=bench_db.url, ERX_ENV="development", LOG_LEVEL="WARNING"),
        log_dir=LOG_DIR,
    )
    rounds: list[dict[str, Any]] = []
    proxy = db = None
    settings_seen: dict[str, Any] = {}
    try:
        from app.foundation.config import load_settings
        from app.foundation.db import Database

        stack.prepare_database()
        db = Database(bench_db.url)
        run_sql(db.engine, bulk_seed_sql(seed_total_for_region_b(needed)))
        ids, pharmacies = region_b_drafts(db, needed)
        stack.start_sandbox(webhook_port=free_port())
        requests.post(
            f"{stack.sandbox_url}/sandbox/control",
            json={"webhook_url": None, "auto": False},
            timeout=HTTP_TIMEOUT,
        ).raise_for_status()
        proxy, platform = start_proxy(stack.sandbox_url)
        settings = load_settings(
            {**stack.env, **({"WORKER_SEND_THREADS": str(args.threads)} if args.threads else {})}
        )
        settings_seen = {
            "worker_poll_s": settings.worker_poll_s,
            "worker_batch": settings.worker_batch,
            "worker_send_threads": settings.worker_send_threads,
        }
        headers = stack.bearer(role="service")
        cursor = 0
        for rnd in range(args.rounds):
            service = stack.start_service(port=free_port(), workers=args.web_workers)
            sender = Sender(service, headers, pharmacies)
            order = MODES if rnd % 2 == 0 else tuple(reversed(MODES))
            result: dict[str, Any] = {"round": rnd + 1, "order": list(order), "modes": {}}
            for mode in order:
                name = f"worker-{mode}-{rnd + 1}"
                start_worker(stack, name, mode, platform, args.threads)
                warm = ids[cursor : cursor + WARM_UP]
                cursor += WARM_UP
                sender.at_rate(warm, 5.0)  # token + login, connections: untimed
                wait_issued(db, warm)
                phases = {}
                for rate, count in zip(args.rate_list, per_phase, strict=True):
                    chunk = ids[cursor : cursor + count]
                    cursor += count
                    answered = sender.at_rate(chunk, rate)
                    issued = wait_issued(db, chunk)
                    upstream = platform_seconds(platform)
                    refs = _references(db, chunk)
                    latencies, raw, calls = [], [], []
                    for pid in chunk:
                        ref = refs.get(pid)
                        if pid in answered and pid in issued and ref in upstream:
                            raw.append(issued[pid] - answered[pid])
                            calls.append(upstream[ref])
                            latencies.append(issued[pid] - answered[pid] - upstream[ref])
                    phases[f"{rate:g}"] = {
                        "sent": len(chunk),
                        "answered_202": len(answered),
                        "issued": len(issued),
                        "send_to_issued_minus_platform": summarise(latencies),
                        "send_to_issued_raw": summarise(raw),
                        "platform_call": summarise(calls),
                    }
                    s = phases[f"{rate:g}"]["send_to_issued_minus_platform"]
                    print(
                        f"== round {rnd + 1}, {mode}, {rate:g}/s: {len(latencies)}/{len(chunk)} measured; "
                        f"p50 {fmt(s['p50_ms'], 1)} ms, p99 {fmt(s['p99_ms'], 1)} ms",
                        flush=True,
                    )
                stop_worker(stack, name)
                result["modes"][mode] = phases
            stop_service = stack.procs.pop("service")
            stop_service.terminate()
            stop_service.wait(15)
            result["notify_over_poll_p50"] = {
                rate: _ratio_p50(result["modes"], rate)
                for rate in (f"{r:g}" for r in args.rate_list)
            }
            rounds.append(result)
        db_version = bench_db.server_version()
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        stack.stop()
        if db is not None:
            db.dispose()
        bench_db.finish()

    rates = [f"{r:g}" for r in args.rate_list]
    pooled = {
        rate: {
            mode: {
                "p50_ms_median_of_rounds": _median(
                    [
                        r["modes"][mode][rate]["send_to_issued_minus_platform"]["p50_ms"]
                        for r in rounds
                    ]
                ),
                "p99_ms_median_of_rounds": _median(
                    [
                        r["modes"][mode][rate]["send_to_issued_minus_platform"]["p99_ms"]
                        for r in rounds
                    ]
                ),
            }
            for mode in MODES
        }
        | {
            "notify_over_poll_p50_median": _median(
                [r["notify_over_poll_p50"][rate] for r in rounds]
            )
        }
        for rate in rates
    }
    valid = all(
        r["modes"][m][rate]["send_to_issued_minus_platform"]["n"] == r["modes"][m][rate]["sent"]
        for r in rounds
        for m in MODES
        for rate in rates
    )
    result = {
        "benchmark": "send_latency",
        "seconds_per_rate": args.seconds,
        "rates_per_s": args.rate_list,
        "rounds": rounds,
        "pooled": pooled,
        "worker_settings": settings_seen,
        "database": db_version,
        "machine": machine(busy_before_pct=busy_before),
        "valid": valid,
        "target": "notify p50 under 20 ms at every rate",
        "wall_s": round(time.monotonic() - wall, 1),
    }
    path = write_results("send_latency", result)
    rows = []
    for r in rounds:
        for rate in rates:
            for mode in MODES:
                s = r["modes"][mode][rate]["send_to_issued_minus_platform"]
                c = r["modes"][mode][rate]["platform_call"]
                rows.append(
                    [
                        r["round"],
                        f"{rate}/s",
                        mode,
                        f"{s['n']}",
                        fmt(s["p50_ms"], 1),
                        fmt(s["p99_ms"], 1),
                        fmt(s["mean_ms"], 1),
                        fmt(c["p50_ms"], 2),
                        fmt(r["notify_over_poll_p50"][rate], 3) if mode == "notify" else "",
                    ]
                )
    print()
    print(
        f"Send to issued minus the platform call, {db_version}, {result['machine']['cpus']} CPUs, "
        f"worker: WORKER_SEND_THREADS={settings_seen.get('worker_send_threads')}, "
        f"poll reference WORKER_POLL_S={settings_seen.get('worker_poll_s')}"
    )
    print()
    print(
        markdown_table(
            [
                "round",
                "rate",
                "wake-up",
                "n",
                "p50 ms",
                "p99 ms",
                "mean ms",
                "platform call p50 ms",
                "notify/poll p50",
            ],
            rows,
        )
    )
    print()
    for rate in rates:
        p = pooled[rate]
        print(
            f"{rate}/s: notify p50 {fmt(p['notify']['p50_ms_median_of_rounds'], 1)} ms "
            f"(median of rounds), p99 {fmt(p['notify']['p99_ms_median_of_rounds'], 1)} ms; poll p50 "
            f"{fmt(p['poll']['p50_ms_median_of_rounds'], 1)} ms; ratio {fmt(p['notify_over_poll_p50_median'], 3)}"
        )
    print(
        f"results: {path.relative_to(REPO_ROOT)}  (wall {result['wall_s']} s)"
        + ("" if valid else "  ** INVALID RUN: not every send was measured **")
    )
    return 0 if valid else 1


def _references(db: Any, ids: list[int]) -> dict[int, str]:
    from app.foundation.models import Prescription

    with db.session() as session:
        return dict(
            session.execute(
                select(Prescription.id, Prescription.reference).where(Prescription.id.in_(ids))
            ).all()
        )


def _ratio_p50(modes: dict[str, Any], rate: str) -> float | None:
    value = ratio(
        modes["notify"][rate]["send_to_issued_minus_platform"]["p50_ms"],
        modes["poll"][rate]["send_to_issued_minus_platform"]["p50_ms"],
    )
    return round(value, 3) if value is not None else None


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(median(present), 3) if present else None


if __name__ == "__main__":
    sys.exit(main())
