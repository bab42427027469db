"""``python -m bench.webhooks`` (normally ``bash bench/webhooks/run.sh``): the webhook side of the speed benches.

Three phases, each against its reference in the same run, on loopback, on a
throwaway database (``bench.database``); ``--phases`` picks them:

``ingest``
    Requests per second of ``POST /webhooks/platform`` under wrk (pre-signed
    ~1 KB events, unique ids, ``post_signed.lua``) at 32 and at 1 connection,
    for three slots under the SAME ``gunicorn.conf.py`` and settings: the
    service (``wsgi:app``), the bare reference receiver
    (``bench/webhooks/reference.py``: HMAC + one INSERT + commit) and a second
    copy of that reference (the A/A pair). Every round starts each slot's
    gunicorn anew, runs it alone, and rotates which slot goes first. Reports
    every round, the pooled median of the per-round ratios service/reference
    and reference-copy/reference, server CPU (gunicorn master + workers, from
    /proc) and PostgreSQL CPU (this database's client backends) per request.
``history``
    Receipt -> history at a STEADY ``--history-rate`` (200) events/s from an
    open-loop generator (``openloop.py``), real status events for issued
    prescriptions. Slot ``async``: the service with ``--inbox-workers``
    ``flask --app app worker --no-dispatch`` processes; a watcher
    (``harness.HistoryWatcher``) polls the history every 10 ms and records
    when each event's row became visible: minus the row's ``received_at`` that
    is receipt -> history. Slot ``sync``: ``sync_receiver.py``, which stores
    AND applies the event inside the request with the project's own code; its
    request latency is the reference. Alternating rounds; target: async
    receipt -> history p99 <= 2 x the sync request p99 (pooled median of the
    per-round ratios).
``saturation``
    The service with the inbox workers under wrk at 32 connections for
    ``--saturation-duration`` (60) s: the inbox's apply rate over its intake
    rate, receipt -> history p50/p99, the backlog left when the load stopped
    and how long it took to drain, and both rates per second.

``apply``
    Apply beside receipt, CPU per event, ``--rounds`` rounds. The inbox workers start
    and are stopped (SIGSTOP) once idle; the service takes ``--apply-duration`` (10) s of
    wrk at 32 connections of real status events (receipt: gunicorn's processes + its
    PostgreSQL backends, told apart by ``application_name``); the service stops, the
    workers continue (SIGCONT) and drain the inbox (apply: the workers' processes + their
    backends). Reports both per event and apply / receipt (target <= 0.5).
    ``--web-cpus`` / ``--worker-cpus`` pin the two sides with ``taskset`` here and in
    the saturation phase (PostgreSQL's backends cannot be pinned: they are forked by
    the postmaster and shared with every other session).

Every wrk phase checks its rows exactly: rows stored == 2xx answers + requests
still in flight when the load stopped, as counted by the Lua script per
thread. A failed check, a wrapped request pool or a non-2xx answer makes the
run exit 1 (after writing the results). Writes ``bench/results/webhooks.json``
(``webhooks-sqlite.json`` on SQLite); ``--plot`` then draws the PNGs under
``docs/`` (``python -m bench.webhooks.plot``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import time
from typing import Any

from sqlalchemy import create_engine, text

from bench import procstat
from bench.database import BenchDatabase
from bench.report import fmt, machine, markdown_table, percentile, preflight, write_results
from bench.webhooks import openloop
from bench.webhooks.events import Target, run_tag, signed_requests, write_requests
from bench.webhooks.harness import (
    HARNESS_APP_NAME,
    PATH,
    WEB_APP_NAME,
    WORKER_APP_NAME,
    CpuMeter,
    HistoryWatcher,
    Server,
    SideMeter,
    drain,
    gunicorn_settings,
    inbox_times,
    run_wrk,
    seed_issued,
    settle_rows,
    start_inbox_workers,
    start_server,
    stop_process,
    wrk_summary,
)
from bench.webhooks.reference import TABLE as REFERENCE_TABLE
from bench.webhooks.reference import create_table
from bench.webhooks.stats import (
    RowCheck,
    latency_summary,
    per_round_ratios,
    pooled_median,
    rate_series,
    slot_order,
    spread,
)
from scripts.stack import REPO_ROOT, WEBHOOK_SECRET, Stack, base_env

WORK_DIR = REPO_ROOT / "instance" / "bench" / "webhooks"
LOG_DIR = REPO_ROOT / "instance" / "bench" / "logs" / "webhooks"
PHASES = ("ingest", "history", "saturation", "apply")
INGEST_SLOTS = ("service", "reference", "reference-copy")
HISTORY_SLOTS = ("async", "sync")
INGEST_RATIO_TARGET = 1.0
HISTORY_RATIO_TARGET = 2.0
SATURATION_P99_TARGET_MS = 1000.0
APPLY_OVER_RECEIPT_TARGET = 0.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see ``--help``); exits with a usage error on bad values."""
    p = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n")[0])
    p.add_argument(
        "--phases",
        default=None,
        help="comma-separated, of ingest,history,saturation,apply "
        "(default: all; on SQLite ingest,history)",
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="rounds of the ingest and history phases (default 3)"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=8.0,
        help="ingest: seconds per slot and connection count (8)",
    )
    p.add_argument(
        "--warmup", type=float, default=2.0, help="ingest: seconds of warm-up per fresh server (2)"
    )
    p.add_argument(
        "--connections", default="32,1", help="ingest: wrk connection counts (default 32,1)"
    )
    p.add_argument(
        "--max-rps",
        type=float,
        default=3000.0,
        help="first guess of the highest rps, sizes the pre-signed request pools (default 3000)",
    )
    p.add_argument(
        "--history-rate", type=float, default=200.0, help="history: events per second (default 200)"
    )
    p.add_argument(
        "--history-duration",
        type=float,
        default=15.0,
        help="history: seconds per round and slot (15)",
    )
    p.add_argument(
        "--history-connections",
        type=int,
        default=64,
        help="history: keep-alive connections of the open-loop generator, enough that it never "
        "waits for a free one (default 64)",
    )
    p.add_argument(
        "--web-nice",
        type=int,
        default=0,
        help="history (async slot) and saturation: start the web tier at this niceness (0-19), "
        "the share a CPU limit would leave it beside the workers on one machine (default 0)",
    )
    p.add_argument(
        "--inbox-workers",
        type=int,
        default=2,
        help="inbox worker processes in the history and saturation phases (default 2)",
    )
    p.add_argument(
        "--saturation-duration", type=float, default=60.0, help="saturation: seconds of wrk (60)"
    )
    p.add_argument(
        "--saturation-connections", type=int, default=32, help="saturation: wrk connections (32)"
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the inbox workers to drain after a load (default 120)",
    )
    p.add_argument(
        "--apply-duration",
        type=float,
        default=10.0,
        help="apply: seconds of wrk at --saturation-connections before the workers apply (10)",
    )
    p.add_argument(
        "--web-cpus",
        default=None,
        help="saturation and apply: pin the web tier with taskset -c (e.g. 0; default unpinned)",
    )
    p.add_argument(
        "--worker-cpus",
        default=None,
        help="saturation and apply: pin the inbox workers with taskset -c (e.g. 1; "
        "default unpinned)",
    )
    p.add_argument(
        "--plot", action="store_true", help="draw docs/bench-*.png from the results afterwards"
    )
    args = p.parse_args(argv)
    args.connections = [int(c) for c in str(args.connections).split(",") if c.strip()]
    if not 1 <= args.duration <= 300 or not 0 <= args.warmup <= 60:
        p.error("--duration must be 1..300 s and --warmup 0..60 s")
    if not args.connections or not all(1 <= c <= 1024 for c in args.connections):
        p.error("connection counts must be 1..1024")
    if not 1 <= args.rounds <= 9 or not 1 <= args.inbox_workers <= 8:
        p.error("--rounds must be 1..9 and --inbox-workers 1..8")
    if not 1 <= args.history_rate <= 5000 or not 1 <= args.history_duration <= 600:
        p.error("--history-rate must be 1..5000 and --history-duration 1..600 s")
    if not 1 <= args.saturation_duration <= 600 or not 1 <= args.saturation_connections <= 1024:
        p.error("--saturation-duration must be 1..600 s and --saturation-connections 1..1024")
    if not 1 <= args.apply_duration <= 300:
        p.error("--apply-duration must be 1..300 s")
    for flag, cpus in (("--web-cpus", args.web_cpus), ("--worker-cpus", args.worker_cpus)):
        parts = (cpus or "").replace("-", ",").split(",")
        if cpus is not None and not all(part.strip().isdigit() for part in parts):
            p.error(f"{flag} takes CPU numbers as taskset -c does, e.g. 0 or 0,1")
    if args.phases is not None:
        args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
        unknown = set(args.phases) - set(PHASES)
        if unknown or not args.phases:
            p.error(
                f"--phases takes {','.join(PHASES)}; unknown: {','.join(sorted(unknown)) or '(none given)'}"
            )
    return args


class Bench:
    """One run: the stack, the database, the counters and what every phase measured."""

    def __init__(
        self,
        args: argparse.Namespace,
        bench_db: BenchDatabase,
        stack: Stack,
        engine: Any,
        workers: int,
    ) -> None:
        self.args, self.db, self.stack, self.engine, self.workers = (
            args,
            bench_db,
            stack,
            engine,
            workers,
        )
        self.tag = run_tag()
        self.seq = 0
        self.best_rps: dict[int, float] = {}
        self.failures: list[str] = []
        self.warnings: list[str] = []
        self.targets: list[Target] = []

    def prefix(self, code: str) -> str:
        """A new, unique event-id prefix for one load."""
        self.seq += 1
        return f"evt_{self.tag}{code}{self.seq:03d}_"

    def take_targets(self, count: int) -> list[Target]:
        """``count`` issued prescriptions no earlier load has used."""
        if count > len(self.targets):
            raise RuntimeError(f"{count} prescriptions needed, {len(self.targets)} seeded")
        taken, self.targets = self.targets[:count], self.targets[count:]
        return taken

    def warn(self, message: str) -> None:
        """Note something the figures must be read with (the run still counts)."""
        self.warnings.append(message)
        print(f"   ** {message} **", flush=True)

    def fail(self, message: str) -> None:
        """Note a failed check (the run then exits 1) and say it at once."""
        self.failures.append(message)
        print(f"   ** CHECK FAILED: {message} **", flush=True)

    # -- ingest ------------------------------------------------------------------------------

    def wrk_load(
        self,
        server: Server,
        table: str,
        connections: int,
        duration: float,
        *,
        code: str,
        targets: list[Target] | None = None,
        pool: int | None = None,
        worker_pids: list[int] | None = None,
    ) -> dict[str, Any]:
        """One wrk load on ``server`` with a pool of unique signed events; checks the rows exactly.

        Redone once with a pool twice as large if a wrk thread ran out of events
        (which would send duplicates). Returns the phase's results.
        """
        fake = [Target(f"SRXFAKE{i:08d}", f"rx-fake-{i:06d}") for i in range(4000)]
        for attempt in (1, 2):
            size = pool or self.pool_size(connections, duration)
            size *= attempt
            prefix = self.prefix(code)
            path = WORK_DIR / f"{prefix}.req"
            write_requests(
                path, prefix=prefix, count=size, targets=targets or fake, secret=WEBHOOK_SECRET
            )
            meter = CpuMeter(self.engine, server.pid, worker_pids)
            meter.start()
            try:
                w = run_wrk(
                    server.url,
                    connections=connections,
                    duration=duration,
                    requests_file=path,
                    log_path=LOG_DIR / f"wrk-{server.name}-c{connections}-{code}{self.seq:03d}.txt",
                )
            finally:
                path.unlink(missing_ok=True)
            usage = meter.stop()
            check = RowCheck(rows=0, ok=w["ok"], sent=w["sent"], answered=w["answered"])
            rows = settle_rows(self.engine, table, prefix, check.expected)
            check = RowCheck(rows=rows, ok=w["ok"], sent=w["sent"], answered=w["answered"])
            summary = wrk_summary(w)
            if w["wrapped"] and attempt == 1 and targets is None:
                print(
                    f"   request pool of {size} ran out at {summary['rps']:.0f} rps: running the load again",
                    flush=True,
                )
                continue
            break
        if code != "W":
            self.best_rps[connections] = max(
                self.best_rps.get(connections, 0.0), summary["rps"] or 0.0
            )
        n = max(w["requests"], 1)
        result = {
            "slot": server.slot,
            "connections": connections,
            "prefix": prefix,
            **summary,
            "cpu_ms_per_request": {
                k: None if v is None else round(v / n * 1000, 3) for k, v in usage["cpu_s"].items()
            },
            "cpu_s": usage["cpu_s"],
            "machine_pct": usage["machine_pct"],
            "row_check": check.as_json(),
        }
        what = f"{server.name} c={connections} ({code})"
        if not check.holds:
            self.fail(
                f"{what}: {check.rows} rows stored, expected {check.expected} "
                f"({check.ok} 2xx + {check.in_flight} in flight)"
            )
        if w["wrapped"]:
            self.fail(
                f"{what}: the request pool ran out ({w['wrapped']} wraps): duplicates were sent"
            )
        if w["errors_status"]:
            self.fail(f"{what}: {w['errors_status']} non-2xx answers")
        return result

    def pool_size(self, connections: int, duration: float) -> int:
        """Requests to pre-sign: 1.5 x the best rate seen at ``connections`` (never below the guess)."""
        floor = self.args.max_rps if connections >= 8 else self.args.max_rps / 3
        return (
            int(math.ceil(max(self.best_rps.get(connections, 0.0), floor) * 1.5 * duration)) + 500
        )

    def empty_table(self, table: str) -> None:
        """Start a slot on an empty table, as every other slot does.

        On a reused database (``BENCH_REUSE_DB=1``, e.g. the grown one) only this
        benchmark's own events (``evt_...``) leave the inbox: the rows it was grown with stay.
        """
        with self.engine.begin() as conn:
            if self.db.reuse and table == "webhook_inbox":
                conn.execute(text("DELETE FROM webhook_inbox WHERE event_id LIKE 'evt\\_%'"))
                return
            conn.execute(
                text(f"DELETE FROM {table}" if self.db.kind == "sqlite" else f"TRUNCATE {table}")
            )

    def ingest(self) -> dict[str, Any]:
        """Phase ``ingest``: the three slots, fresh servers per round, rotating order."""
        a = self.args
        loads: list[dict[str, Any]] = []
        for rnd in range(a.rounds):
            for position, slot in enumerate(slot_order(INGEST_SLOTS, rnd)):
                table = "webhook_inbox" if slot == "service" else REFERENCE_TABLE
                self.empty_table(table)
                server = start_server(self.stack, slot, f"{slot}-r{rnd + 1}", self.workers)
                try:
                    if a.warmup > 0:
                        self.wrk_load(server, table, max(a.connections), a.warmup, code="W")
                    for conns in a.connections:
                        load = self.wrk_load(server, table, conns, a.duration, code="I")
                        load.update(round=rnd + 1, position=position + 1)
                        loads.append(load)
                        lat = load["latency_ms"]
                        cpu = load["cpu_ms_per_request"]
                        print(
                            f"== ingest round {rnd + 1} {slot:14s} c={conns:<3d} {load['rps']:8.1f} rps  "
                            f"p50 {lat['p50']:6.2f} ms  p99 {lat['p99']:7.2f} ms  server CPU {cpu['server']:.3f} "
                            f"ms/req  PG {fmt(cpu['postgres'], 3)} ms/req  rows "
                            f"{'ok' if load['row_check']['holds'] else 'MISMATCH'}",
                            flush=True,
                        )
                finally:
                    stop_process(self.stack, server.name)
        comparisons = []
        for conns in a.connections:
            by_slot = {
                s: sorted(
                    (x for x in loads if x["slot"] == s and x["connections"] == conns),
                    key=lambda x: x["round"],
                )
                for s in INGEST_SLOTS
            }
            rps = {s: [x["rps"] for x in by_slot[s]] for s in INGEST_SLOTS}
            svc_ratio = per_round_ratios(rps["service"], rps["reference"])
            aa_ratio = per_round_ratios(rps["reference-copy"], rps["reference"])
            cpu = {
                s: {
                    k: _median([x["cpu_ms_per_request"][k] for x in by_slot[s]])
                    for k in ("server", "postgres")
                }
                for s in INGEST_SLOTS
            }
            comparisons.append(
                {
                    "connections": conns,
                    "rps_per_round": rps,
                    "ratio_service_over_reference_per_round": _r3(svc_ratio),
                    "ratio_copy_over_reference_per_round": _r3(aa_ratio),
                    "pooled_median_service_over_reference": _r3(pooled_median(svc_ratio)),
                    "pooled_median_copy_over_reference": _r3(pooled_median(aa_ratio)),
                    "aa_band": _r3(spread(aa_ratio)),
                    "p99_ms_median": {
                        s: _median([x["latency_ms"]["p99"] for x in by_slot[s]])
                        for s in INGEST_SLOTS
                    },
                    "cpu_ms_per_request_median": cpu,
                }
            )
        return {"loads": loads, "comparisons": comparisons}

    # -- receipt -> history at a steady rate ---------------------------------------------------

    def history(self) -> dict[str, Any]:
        """Phase ``history``: async (service + inbox workers) against sync (apply in the request)."""
        a = self.args
        count = int(math.ceil(a.history_rate * a.history_duration))
        rounds: list[dict[str, Any]] = []
        for rnd in range(a.rounds):
            for position, slot in enumerate(slot_order(HISTORY_SLOTS, rnd)):
                entry = self.history_load(slot, rnd, count)
                entry.update(round=rnd + 1, position=position + 1)
                rounds.append(entry)
        by_slot = {
            s: sorted((x for x in rounds if x["slot"] == s), key=lambda x: x["round"])
            for s in HISTORY_SLOTS
        }
        async_p99 = [x["receipt_to_history_ms"]["p99"] for x in by_slot["async"]]
        sync_p99 = [x["request_latency_ms"]["p99"] for x in by_slot["sync"]]
        ratios = per_round_ratios(async_p99, sync_p99)
        return {
            "rate_per_s": a.history_rate,
            "duration_s": a.history_duration,
            "events_per_load": count,
            "inbox_workers": a.inbox_workers,
            "loads": rounds,
            "ratio_async_receipt_to_history_p99_over_sync_request_p99_per_round": _r3(ratios),
            "pooled_median_ratio": _r3(pooled_median(ratios)),
            "async_receipt_to_history_p50_per_round": [
                x["receipt_to_history_ms"]["p50"] for x in by_slot["async"]
            ],
            "async_receipt_to_history_p99_per_round": async_p99,
            "sync_request_p50_per_round": [x["request_latency_ms"]["p50"] for x in by_slot["sync"]],
            "sync_request_p99_per_round": sync_p99,
        }

    def history_load(self, slot: str, rnd: int, count: int) -> dict[str, Any]:
        """One open-loop load at the history rate on a fresh ``slot``; returns its results."""
        a = self.args
        prefix = self.prefix("H")
        requests = list(
            signed_requests(
                prefix=prefix,
                count=count,
                targets=self.take_targets(math.ceil(count / 3)),
                secret=WEBHOOK_SECRET,
            )
        )
        name = f"{slot}-r{rnd + 1}"
        # The ingest phase leaves thousands of pending events for unknown tokens: workers
        # started on them would retry those first and the measured events would wait.
        self.empty_table("webhook_inbox")
        server = start_server(
            self.stack,
            "service" if slot == "async" else "sync",
            name,
            self.workers,
            nice=a.web_nice if slot == "async" else 0,
        )
        workers = start_inbox_workers(self.stack, name, a.inbox_workers) if slot == "async" else []
        watcher = HistoryWatcher(self.engine, interval_s=0.01) if slot == "async" else None
        try:
            if watcher is not None:
                watcher.start()
            meter = CpuMeter(self.engine, server.pid, [self.stack.procs[n].pid for n in workers])
            meter.start()
            res = openloop.run(
                server.url + PATH, requests, rate=a.history_rate, connections=a.history_connections
            )
            usage = meter.stop()
            waited, drained = (
                drain(self.engine, prefix, a.drain_timeout) if workers else (0.0, True)
            )
            times, history_rows = inbox_times(self.engine, prefix)
            if watcher is not None:
                self._wait_seen(watcher, prefix, history_rows)
                watcher.stop()
        finally:
            if watcher is not None:
                watcher.stop()
            for n in [*workers, server.name]:
                stop_process(self.stack, n)
        check = RowCheck(rows=len(times), ok=res.ok, sent=res.sent, answered=res.answered)
        entry: dict[str, Any] = {
            "slot": slot,
            "prefix": prefix,
            "scheduled": res.scheduled,
            "sent": res.sent,
            "ok_2xx": res.ok,
            "statuses": {str(k): v for k, v in res.statuses.items()},
            "errors": res.errors,
            "achieved_rate_per_s": round(res.sent / res.duration_s, 1) if res.duration_s else None,
            "request_latency_ms": latency_summary(res.latency_ms),
            # Every value, sorted, for the distribution plot (python -m bench.webhooks.plot).
            "request_latency_values_ms": sorted(round(v, 1) for v in res.latency_ms),
            "schedule_lag_ms": latency_summary(res.lag_ms),
            "latency_from_schedule_ms": latency_summary(res.from_schedule_ms),
            # Sent later than due: the server did not keep up with the fixed rate (the generator has
            # --history-connections connections; each waits for its answer before sending again).
            "kept_up": (percentile(res.lag_ms, 99) or 0.0) < 100.0,
            "row_check": check.as_json(),
            "history_rows": history_rows,
            "states": _count_states(times),
            "drain_after_load_s": round(waited, 2),
            "drained": drained,
            "cpu_s": usage["cpu_s"],
            "machine_pct": usage["machine_pct"],
        }
        if watcher is not None:
            seen = {e: v for e, v in watcher.seen.items() if e.startswith(prefix)}
            entry["receipt_to_history_ms"] = receipt_to_history(times, seen, time.time())
            entry["receipt_to_history_values_ms"] = sorted(
                round((seen[e][1] - rec) * 1000, 1) for e, (rec, _, _) in times.items() if e in seen
            )
            entry["events_seen_by_watcher"] = len(seen)
            entry["watcher"] = {
                "polls": watcher.polls,
                "interval_ms": watcher.interval_s * 1000,
                "error": watcher.error,
            }
            entry["processed_at_minus_received_ms"] = latency_summary(
                [(p - r) * 1000 for r, p, s in times.values() if p is not None and s == "processed"]
            )
        if not check.holds:
            self.fail(f"history {name}: {check.rows} inbox rows, expected {check.expected}")
        if not drained:
            self.warn(
                f"history {name}: the workers had not drained the inbox {waited:.0f} s after the load "
                "(receipt->history counts the events still waiting at their wait so far: a lower bound)"
            )
        elif history_rows != res.ok:
            self.fail(f"history {name}: {history_rows} history rows for {res.ok} accepted events")
        if res.ok != res.scheduled:
            self.fail(
                f"history {name}: {res.ok} of {res.scheduled} events accepted ({res.statuses}, {res.errors})"
            )
        lat = entry["request_latency_ms"]
        line = (
            f"== history round {rnd + 1} {slot:5s} {entry['achieved_rate_per_s']}/s  "
            f"request p50 {lat['p50']} ms p99 {lat['p99']} ms"
        )
        if watcher is not None:
            rth = entry["receipt_to_history_ms"]
            line += (
                f"  receipt->history p50 {rth['p50']} ms p99 {rth['p99']} ms "
                f"({entry['events_seen_by_watcher']} seen)"
            )
        print(
            line
            + f"  schedule lag p99 {entry['schedule_lag_ms']['p99']} ms"
            + (
                ""
                if entry["kept_up"]
                else "  ** fell behind the rate: see latency_from_schedule_ms **"
            ),
            flush=True,
        )
        return entry

    @staticmethod
    def _wait_seen(
        watcher: HistoryWatcher, prefix: str, expected: int, timeout_s: float = 5.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and watcher.error is None:
            if sum(1 for e in list(watcher.seen) if e.startswith(prefix)) >= expected:
                return
            time.sleep(0.05)

    # -- saturation ------------------------------------------------------------------------------

    def saturation(self) -> dict[str, Any]:
        """Phase ``saturation``: wrk on the service with the inbox workers running."""
        a = self.args
        conns, duration = a.saturation_connections, a.saturation_duration
        rate_guess = self.best_rps.get(conns, a.max_rps)
        pool = int(math.ceil(rate_guess * 1.3 * duration)) + 1000
        targets = self.take_targets(min(math.ceil(pool / 3), len(self.targets)))
        pool = min(pool, 3 * len(targets))
        self.empty_table("webhook_inbox")  # only this phase's events (see history_load)
        server = start_server(
            self.stack, "service", "saturation", self.workers, nice=a.web_nice, cpus=a.web_cpus
        )
        workers = start_inbox_workers(self.stack, "saturation", a.inbox_workers, cpus=a.worker_cpus)
        worker_pids = [self.stack.procs[n].pid for n in workers]
        watcher = HistoryWatcher(self.engine, interval_s=0.025)
        web_side = SideMeter(self.engine, [server.pid], WEB_APP_NAME)
        worker_side = SideMeter(self.engine, worker_pids, WORKER_APP_NAME)
        try:
            watcher.start()
            t0 = time.time()
            web_side.start()
            worker_side.start()
            load = self.wrk_load(
                server,
                "webhook_inbox",
                conns,
                duration,
                code="S",
                targets=targets,
                pool=pool,
                worker_pids=worker_pids,
            )
            web_cpu = web_side.stop()
            t1 = time.time()
            prefix = load["prefix"]
            waited, drained = drain(self.engine, prefix, a.drain_timeout)
            worker_cpu = worker_side.stop()
            times, history_rows = inbox_times(self.engine, prefix)
            self._wait_seen(watcher, prefix, history_rows)
            watcher.stop()
        finally:
            watcher.stop()
            for n in [*workers, server.name]:
                stop_process(self.stack, n)
        seen = {e: v for e, v in watcher.seen.items() if e.startswith(prefix)}
        received = [r for r, _, _ in times.values()]
        visible = [v for _, v in seen.values()]
        start = min(received) if received else t0
        window = max(t1 - start, 1e-6)
        intake = sum(1 for t in received if t <= t1) / window
        applied = sum(1 for t in visible if t <= t1) / window
        backlog = sum(1 for t in received if t <= t1) - sum(1 for t in visible if t <= t1)
        end = max([t1, *visible]) + 1
        stored = max(len(times), 1)
        applied_n = max(history_rows, 1)
        result = {
            "connections": conns,
            "duration_s": duration,
            "inbox_workers": a.inbox_workers,
            "web_nice": a.web_nice,
            "web_cpus": a.web_cpus,
            "worker_cpus": a.worker_cpus,
            "load": load,
            # Receipt: web tier + its backends during the load, per stored event; apply: workers +
            # their backends from the load's start until drained, per history row.
            "cpu_s_by_side": {"receipt": web_cpu, "apply": worker_cpu},
            "cpu_ms_per_event": {
                "receipt": round((web_cpu["processes"] + web_cpu["postgres"]) / stored * 1000, 3),
                "apply": round(
                    (worker_cpu["processes"] + worker_cpu["postgres"]) / applied_n * 1000, 3
                ),
            },
            "intake_per_s": round(intake, 1),
            "applied_per_s": round(applied, 1),
            "apply_over_intake": round(applied / intake, 3) if intake else None,
            "backlog_at_load_end": backlog,
            "backlog_at_load_end_s_of_intake": round(backlog / intake, 2) if intake else None,
            "drain_after_load_s": round(waited, 2),
            "drained": drained,
            "events": len(times),
            "history_rows": history_rows,
            "events_seen_by_watcher": len(seen),
            "receipt_to_history_ms": receipt_to_history(times, seen, time.time()),
            "processed_at_minus_received_ms": latency_summary(
                [(p - r) * 1000 for r, p, s in times.values() if p is not None and s == "processed"]
            ),
            "series": {
                "start_unix": round(start, 3),
                "load_end_s": round(t1 - start, 2),
                "step_s": 1.0,
                "intake_per_s": rate_series(received, start, end),
                "applied_per_s": rate_series(visible, start, end),
            },
            "watcher": {
                "polls": watcher.polls,
                "interval_ms": watcher.interval_s * 1000,
                "error": watcher.error,
            },
        }
        if not drained:
            self.warn(
                f"saturation: the workers had not drained the inbox {waited:.0f} s after the load "
                "(receipt->history counts the events still waiting at their wait so far: a lower bound)"
            )
        elif history_rows != len(times):
            self.fail(f"saturation: {history_rows} history rows for {len(times)} stored events")
        rth = result["receipt_to_history_ms"]
        print(
            f"== saturation c={conns} {duration:g} s, {a.inbox_workers} inbox workers, "
            f"web nice {a.web_nice}: intake {intake:.0f}/s, "
            f"applied {applied:.0f}/s (ratio {fmt(result['apply_over_intake'], 3)}), backlog at end {backlog}, "
            f"drained in {waited:.1f} s; receipt->history p50 {rth['p50']} ms p99 {rth['p99']} ms",
            flush=True,
        )
        return result

    # -- apply beside receipt ----------------------------------------------------------------------

    def apply(self) -> dict[str, Any]:
        """Phase ``apply``: receipt CPU per event, then apply CPU per event, the same events."""
        a = self.args
        rounds = [self.apply_round(rnd) for rnd in range(a.rounds)]
        ratios = [x["apply_over_receipt"] for x in rounds]
        return {
            "connections": a.saturation_connections,
            "duration_s": a.apply_duration,
            "inbox_workers": a.inbox_workers,
            "web_cpus": a.web_cpus,
            "worker_cpus": a.worker_cpus,
            "rounds": rounds,
            "apply_over_receipt_per_round": ratios,
            "apply_over_receipt_median": _median(ratios),
        }

    def apply_round(self, rnd: int) -> dict[str, Any]:
        """One round of phase ``apply`` (see the module docstring); returns its figures."""
        a = self.args
        name = f"apply-r{rnd + 1}"
        conns, duration = a.saturation_connections, a.apply_duration
        pool = int(math.ceil(self.best_rps.get(conns, a.max_rps) * 1.3 * duration)) + 1000
        targets = self.take_targets(min(math.ceil(pool / 3), len(self.targets)))
        pool = min(pool, 3 * len(targets))
        warm_pool = int(math.ceil(a.max_rps * 1.3 * a.warmup)) + 200 if a.warmup > 0 else 0
        warm_targets = self.take_targets(math.ceil(warm_pool / 3)) if warm_pool else []
        self.empty_table("webhook_inbox")
        workers = start_inbox_workers(self.stack, name, a.inbox_workers, cpus=a.worker_cpus)
        worker_pids = [self.stack.procs[n].pid for n in workers]
        server = None
        stopped = False
        try:
            time.sleep(1.0)  # idle: the workers have opened their connections and found nothing
            for pid in worker_pids:
                os.kill(pid, signal.SIGSTOP)
            stopped = True
            server = start_server(
                self.stack, "service", f"{name}-web", self.workers, cpus=a.web_cpus
            )
            web_side = SideMeter(self.engine, [server.pid], WEB_APP_NAME)
            worker_side = SideMeter(self.engine, worker_pids, WORKER_APP_NAME)
            warm_prefix = None
            if warm_targets:
                # Real events too (their own prescriptions): the web tier's pool and code paths
                # warm up outside the receipt figure; the workers apply them with the rest.
                warm = self.wrk_load(
                    server,
                    "webhook_inbox",
                    conns,
                    a.warmup,
                    code="W",
                    targets=warm_targets,
                    pool=3 * len(warm_targets),
                )
                warm_prefix = warm["prefix"]
            worker_side.start()
            web_side.start()
            load = self.wrk_load(
                server, "webhook_inbox", conns, duration, code="A", targets=targets, pool=pool
            )
            receipt = web_side.stop()
            stop_process(self.stack, server.name)
            server = None
            prefix = load["prefix"]
            t0 = time.monotonic()
            for pid in worker_pids:
                os.kill(pid, signal.SIGCONT)
            stopped = False
            waited, drained = drain(self.engine, prefix, a.drain_timeout)
            if warm_prefix and drained:
                waited, drained = drain(self.engine, warm_prefix, a.drain_timeout)
            applying_s = time.monotonic() - t0
            applied = worker_side.stop()
            times, history_rows = inbox_times(self.engine, prefix)
            warm_times, warm_rows = ({}, 0)
            if warm_prefix:
                warm_times, warm_rows = inbox_times(self.engine, warm_prefix)
        finally:
            if stopped:
                for pid in worker_pids:
                    os.kill(pid, signal.SIGCONT)
            for n in [*workers, *([server.name] if server else [])]:
                stop_process(self.stack, n)
        events = len(times)
        receipt_ms = (receipt["processes"] + receipt["postgres"]) / max(events, 1) * 1000
        # The workers applied the warm-up's events too: per history row over both.
        applied_rows = history_rows + warm_rows
        apply_ms = (applied["processes"] + applied["postgres"]) / max(applied_rows, 1) * 1000
        if not drained:
            self.fail(
                f"{name}: the workers had not drained the inbox {waited:.0f} s after the load"
            )
        elif applied_rows != events + len(warm_times):
            self.fail(
                f"{name}: {applied_rows} history rows for {events + len(warm_times)} stored events"
            )
        entry = {
            "round": rnd + 1,
            "prefix": prefix,
            "events": events,
            "history_rows": history_rows,
            "warmup_events": len(warm_times),
            "warmup_history_rows": warm_rows,
            "receipt_rps": load["rps"],
            "apply_per_s": round(applied_rows / applying_s, 1) if applying_s else None,
            "cpu_s": {"receipt": receipt, "apply": applied},
            "receipt_cpu_ms_per_event": round(receipt_ms, 3),
            "apply_cpu_ms_per_event": round(apply_ms, 3),
            "apply_over_receipt": round(apply_ms / receipt_ms, 3) if receipt_ms else None,
            "machine_pct_during_receipt": load["machine_pct"],
        }
        print(
            f"== apply round {rnd + 1}: {events:,} events; receipt {receipt_ms:.3f} ms CPU/event "
            f"(server {receipt['processes']:.2f} s + PG {receipt['postgres']:.2f} s), apply "
            f"{apply_ms:.3f} ms CPU/event (workers {applied['processes']:.2f} s + PG "
            f"{applied['postgres']:.2f} s): apply/receipt {fmt(entry['apply_over_receipt'], 3)}; "
            f"applied {fmt(entry['apply_per_s'], 0)}/s",
            flush=True,
        )
        return entry


def receipt_to_history(
    times: dict[str, tuple[float, float | None, str]],
    seen: dict[str, tuple[float, float]],
    now: float,
) -> dict[str, Any]:
    """Receipt -> history (ms) over every stored event: visible - received for those the watcher saw,
    ``now`` - received (a lower bound) for those still not applied; ``not_applied`` counts the latter."""
    values = [
        (seen[e][1] - rec) * 1000 if e in seen else (now - rec) * 1000
        for e, (rec, _, _) in times.items()
    ]
    missing = sum(1 for e in times if e not in seen)
    return {**latency_summary(values), "not_applied": missing, "lower_bound": bool(missing)}


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    v = percentile(present, 50)
    return None if v is None else round(v, 3)


def _r3(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [None if v is None else round(v, 3) for v in value]
    return None if value is None else round(value, 3)


def _count_states(times: dict[str, tuple[float, float | None, str]]) -> dict[str, int]:
    states: dict[str, int] = {}
    for _, _, state in times.values():
        states[state] = states.get(state, 0) + 1
    return states


def history_events_needed(args: argparse.Namespace, phases: list[str]) -> int:
    """Issued prescriptions to seed: one per three events of the history and saturation loads."""
    total = 0
    if "history" in phases:
        total += (
            args.rounds
            * len(HISTORY_SLOTS)
            * math.ceil(math.ceil(args.history_rate * args.history_duration) / 3)
        )
    if "saturation" in phases:
        total += math.ceil(
            (int(math.ceil(args.max_rps * 1.3 * args.saturation_duration)) + 1000) / 3
        )
    if "apply" in phases:
        per_round = int(math.ceil(args.max_rps * 1.3 * args.apply_duration)) + 1000
        warm = int(math.ceil(args.max_rps * 1.3 * args.warmup)) + 200 if args.warmup > 0 else 0
        total += args.rounds * (math.ceil(per_round / 3) + math.ceil(warm / 3))
    return total


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the chosen phases; returns 0, or 1 when a check failed (2: wrk missing)."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed: run `bash bench/webhooks/run.sh`, which installs it",
            file=sys.stderr,
        )
        return 2
    wall = time.monotonic()
    bench_db = BenchDatabase.from_env()
    sqlite = bench_db.kind == "sqlite"
    if args.phases is None:
        args.phases = ["ingest", "history"] if sqlite else list(PHASES)
        if sqlite:
            print(
                "== SQLite: the saturation phase is skipped by default (one write lock serialises receiver "
                "and workers; the figures that count are PostgreSQL's); --phases saturation runs it",
                flush=True,
            )
    busy_before = procstat.busy_pct()
    preflight(busy_before)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for old in list(LOG_DIR.glob("*.log")) + list(LOG_DIR.glob("*.txt")):
        old.unlink()
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    env = base_env(DATABASE_URL=bench_db.url, ERX_ENV="development", WEBHOOK_SECRETS=WEBHOOK_SECRET)
    gconf = gunicorn_settings(env)
    print(
        f"== webhook benchmark: database {bench_db.label}, phases {','.join(args.phases)}, gunicorn "
        f"{gconf['workers']} workers x {gconf['threads']} threads ({gconf['worker_class']}) in every slot",
        flush=True,
    )
    bench_db.recreate()
    stack = Stack(env=env, log_dir=LOG_DIR)
    engine = None
    results: dict[str, Any] = {}
    bench: Bench | None = None
    try:
        stack.prepare_database()
        connect_args: dict[str, Any] = (
            {"timeout": 30} if sqlite else {"application_name": HARNESS_APP_NAME}
        )
        engine = create_engine(bench_db.url, connect_args=connect_args)
        if sqlite:
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        create_table(engine)
        db_version = bench_db.server_version()
        bench = Bench(args, bench_db, stack, engine, int(gconf["workers"]))
        needed = history_events_needed(args, args.phases)
        if needed:
            print(f"== seeding {needed:,} issued prescriptions", flush=True)
            bench.targets = seed_issued(engine, needed)
        for phase in PHASES:
            if phase in args.phases:
                print(f"== phase {phase}", flush=True)
                results[phase] = getattr(bench, phase)()
    finally:
        stack.stop()
        if engine is not None:
            engine.dispose()
        bench_db.finish()
        shutil.rmtree(WORK_DIR, ignore_errors=True)
    assert bench is not None
    data = {
        "benchmark": "webhooks",
        "database": db_version,
        "machine": machine(busy_before_pct=busy_before),
        "gunicorn": gconf,
        "settings": {k: v for k, v in vars(args).items() if k != "plot"},
        **results,
        "targets": targets(results),
        "failures": bench.failures,
        "warnings": bench.warnings,
        "valid": not bench.failures,
        "wall_s": round(time.monotonic() - wall, 1),
    }
    path = write_results("webhooks" + ("-sqlite" if sqlite else ""), data)
    print_report(data)
    print(f"\nresults: {path.relative_to(REPO_ROOT)}  (wall {data['wall_s']} s)")
    if args.plot:
        from bench.webhooks import plot

        plot.main([str(path)])
    if bench.failures:
        print("\n** INVALID RUN: " + "; ".join(bench.failures) + " **", file=sys.stderr)
        return 1
    return 0


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The webhook performance targets (ingest, receipt->history, saturation, apply CPU), each checked.

    ``results``: this run's results by phase. Returns one dict per target:
    ``target`` (the goal in words), ``measured``, ``met`` (bool), and per-target detail.
    """
    out: list[dict[str, Any]] = []
    for c in results.get("ingest", {}).get("comparisons", []):
        med = c["pooled_median_service_over_reference"]
        out.append(
            {
                "target": f"ingest at {c['connections']} conns: pooled median service/reference >= "
                f"{INGEST_RATIO_TARGET}",
                "measured": med,
                "aa_band": c["aa_band"],
                "met": med is not None and med >= INGEST_RATIO_TARGET,
            }
        )
        cpu = c["cpu_ms_per_request_median"]
        out.append(
            {
                "target": f"ingest at {c['connections']} conns: service server CPU/request <= reference's",
                "measured": [cpu["service"]["server"], cpu["reference"]["server"]],
                "met": (cpu["service"]["server"] or 1e9) <= (cpu["reference"]["server"] or 0),
            }
        )
    h = results.get("history")
    if h:
        med = h["pooled_median_ratio"]
        out.append(
            {
                "target": f"receipt->history p99 at {h['rate_per_s']:g}/s <= {HISTORY_RATIO_TARGET} x the sync "
                "receiver's request p99 (pooled median of rounds)",
                "measured": med,
                "met": med is not None and med <= HISTORY_RATIO_TARGET,
            }
        )
    s = results.get("saturation")
    if s:
        out.append(
            {
                "target": f"saturation: apply/intake >= 1.0 (no backlog left; {s['inbox_workers']} workers)",
                "measured": s["apply_over_intake"],
                "backlog_at_load_end": s["backlog_at_load_end"],
                "met": (s["backlog_at_load_end_s_of_intake"] or 0) <= 1.0,
            }
        )
        p99 = s["receipt_to_history_ms"]["p99"]
        out.append(
            {
                "target": f"saturation: receipt->history p99 < {SATURATION_P99_TARGET_MS:g} ms",
                "measured": p99,
                "met": p99 is not None and p99 < SATURATION_P99_TARGET_MS,
            }
        )
    ap = results.get("apply")
    if ap:
        med = ap["apply_over_receipt_median"]
        out.append(
            {
                "target": f"apply CPU per event <= {APPLY_OVER_RECEIPT_TARGET} x receipt CPU "
                "per event "
                "(median of rounds)",
                "measured": med,
                "per_round": ap["apply_over_receipt_per_round"],
                "met": med is not None and med <= APPLY_OVER_RECEIPT_TARGET,
            }
        )
    return out


def print_report(data: dict[str, Any]) -> None:
    """The Markdown tables of a run (every round)."""
    m = data["machine"]
    g = data["gunicorn"]
    print(
        f"\nWebhook benchmark: {data['database']}, {m['cpus']} CPUs ({m['cpu_model']}), commit {m['git_commit']}, "
        f"gunicorn {g['workers']} workers x {g['threads']} threads, busy before the run {m['busy_before_run_pct']}%"
    )
    ing = data.get("ingest")
    if ing:
        rows = []
        for load in sorted(
            ing["loads"], key=lambda x: (x["connections"] * -1, x["round"], x["position"])
        ):
            cpu = load["cpu_ms_per_request"]
            mp = load["machine_pct"]
            rows.append(
                [
                    load["round"],
                    load["position"],
                    load["slot"],
                    load["connections"],
                    f"{load['requests']:,}",
                    fmt(load["rps"], 0),
                    fmt(load["latency_ms"]["p50"], 2),
                    fmt(load["latency_ms"]["p99"], 1),
                    fmt(cpu["server"], 3),
                    fmt(cpu["postgres"], 3) if cpu["postgres"] is not None else "in server",
                    f"{fmt(mp['other'], 0, '%')} / {fmt(mp['steal'], 0, '%')}",
                    "ok" if load["row_check"]["holds"] else "**MISMATCH**",
                ]
            )
        print("\n### Ingest, every round\n")
        print(
            markdown_table(
                [
                    "round",
                    "order",
                    "slot",
                    "conns",
                    "requests",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "server CPU ms/req",
                    "PG CPU ms/req",
                    "other load / steal",
                    "rows",
                ],
                rows,
            )
        )
        print()
        print(
            markdown_table(
                [
                    "conns",
                    "service/reference per round",
                    "**pooled median**",
                    "copy/reference per round (A/A)",
                    "A/A median",
                    "server CPU ms/req svc / ref / copy",
                    "PG CPU ms/req svc / ref / copy",
                ],
                [
                    [
                        c["connections"],
                        ", ".join(fmt(x, 3) for x in c["ratio_service_over_reference_per_round"]),
                        f"**{fmt(c['pooled_median_service_over_reference'], 3)}**",
                        ", ".join(fmt(x, 3) for x in c["ratio_copy_over_reference_per_round"]),
                        fmt(c["pooled_median_copy_over_reference"], 3),
                        " / ".join(
                            fmt(c["cpu_ms_per_request_median"][s]["server"], 3)
                            for s in INGEST_SLOTS
                        ),
                        " / ".join(
                            fmt(c["cpu_ms_per_request_median"][s]["postgres"], 3)
                            for s in INGEST_SLOTS
                        ),
                    ]
                    for c in ing["comparisons"]
                ],
            )
        )
    h = data.get("history")
    if h:
        print(
            f"\n### Receipt to history at {h['rate_per_s']:g} events/s (open loop), "
            f"{h['inbox_workers']} inbox workers, every round\n"
        )
        rows = []
        for x in sorted(h["loads"], key=lambda x: (x["round"], x["position"])):
            rth = x.get("receipt_to_history_ms") or {}
            pa = x.get("processed_at_minus_received_ms") or {}
            rows.append(
                [
                    x["round"],
                    x["position"],
                    x["slot"],
                    fmt(x["achieved_rate_per_s"], 0),
                    x["ok_2xx"],
                    x["history_rows"],
                    f"{fmt(x['request_latency_ms']['p50'], 1)} / "
                    f"{fmt(x['request_latency_ms']['p99'], 1)}",
                    (
                        f"{fmt(rth.get('p50'), 1)} / {fmt(rth.get('p99'), 1)}"
                        + (
                            f" (>=: {rth['not_applied']} not applied)"
                            if rth.get("lower_bound")
                            else ""
                        )
                    )
                    if rth
                    else "(in the request)",
                    f"{fmt(pa.get('p50'), 1)} / {fmt(pa.get('p99'), 1)}" if pa else "",
                    fmt(x["schedule_lag_ms"]["p99"], 1),
                    fmt((x.get("latency_from_schedule_ms") or {}).get("p99"), 1),
                ]
            )
        print(
            markdown_table(
                [
                    "round",
                    "order",
                    "slot",
                    "sent/s",
                    "2xx",
                    "history rows",
                    "request p50 / p99 ms",
                    "receipt->history seen p50 / p99 ms",
                    "processed_at - receipt p50 / p99 ms",
                    "schedule lag p99 ms",
                    "due -> answered p99 ms",
                ],
                rows,
            )
        )
        print(
            f"\nasync receipt->history p99 / sync request p99 per round: "
            f"{', '.join(fmt(r, 2) for r in h['ratio_async_receipt_to_history_p99_over_sync_request_p99_per_round'])}"
            f"; pooled median **{fmt(h['pooled_median_ratio'], 2)}**"
        )
    s = data.get("saturation")
    if s:
        print(
            f"\n### Saturation: {s['connections']} connections for {s['duration_s']:g} s, "
            f"{s['inbox_workers']} inbox workers\n"
        )
        rth, pa = s["receipt_to_history_ms"], s["processed_at_minus_received_ms"]
        print(
            markdown_table(
                [
                    "req/s",
                    "intake /s",
                    "applied /s",
                    "apply / intake",
                    "backlog at load end",
                    "drained after",
                    "receipt->history seen p50 / p99 ms",
                    "processed_at - receipt p50 / p99 ms",
                    "events = history rows",
                ],
                [
                    [
                        fmt(s["load"]["rps"], 0),
                        fmt(s["intake_per_s"], 0),
                        fmt(s["applied_per_s"], 0),
                        fmt(s["apply_over_intake"], 3),
                        f"{s['backlog_at_load_end']:,} ({fmt(s['backlog_at_load_end_s_of_intake'], 2)} s)",
                        f"{fmt(s['drain_after_load_s'], 1)} s"
                        + ("" if s["drained"] else " (NOT drained)"),
                        f"{fmt(rth['p50'], 0)} / {fmt(rth['p99'], 0)}"
                        + (
                            f" (>=: {rth['not_applied']} not applied)"
                            if rth.get("lower_bound")
                            else ""
                        ),
                        f"{fmt(pa['p50'], 0)} / {fmt(pa['p99'], 0)}",
                        f"{s['events']:,} = {s['history_rows']:,}",
                    ]
                ],
            )
        )
        if s.get("cpu_ms_per_event"):
            cpu = s["cpu_ms_per_event"]
            print(
                f"\nCPU per event: receipt (web tier + its backends) {cpu['receipt']} ms, apply "
                f"(workers + their backends, until drained) {cpu['apply']} ms; web CPUs "
                f"{s.get('web_cpus') or 'any'}, worker CPUs {s.get('worker_cpus') or 'any'}"
            )
    ap = data.get("apply")
    if ap:
        print(
            f"\n### Apply beside receipt: CPU per event, {ap['connections']} connections for "
            f"{ap['duration_s']:g} s, then {ap['inbox_workers']} inbox workers drain (web CPUs "
            f"{ap['web_cpus'] or 'any'}, worker CPUs {ap['worker_cpus'] or 'any'})\n"
        )
        print(
            markdown_table(
                [
                    "round",
                    "events",
                    "receipt req/s",
                    "receipt CPU s server + PG",
                    "receipt ms/event",
                    "apply CPU s workers + PG",
                    "apply ms/event",
                    "applied /s",
                    "**apply / receipt**",
                ],
                [
                    [
                        x["round"],
                        f"{x['events']:,}",
                        fmt(x["receipt_rps"], 0),
                        f"{x['cpu_s']['receipt']['processes']:.2f} + {x['cpu_s']['receipt']['postgres']:.2f}",
                        fmt(x["receipt_cpu_ms_per_event"], 3),
                        f"{x['cpu_s']['apply']['processes']:.2f} + {x['cpu_s']['apply']['postgres']:.2f}",
                        fmt(x["apply_cpu_ms_per_event"], 3),
                        fmt(x["apply_per_s"], 0),
                        f"**{fmt(x['apply_over_receipt'], 3)}**",
                    ]
                    for x in ap["rounds"]
                ],
            )
        )
    if data["targets"]:
        print()
        print(
            markdown_table(
                ["target", "measured", "met"],
                [
                    [t["target"], t["measured"], "yes" if t["met"] else "**NO**"]
                    for t in data["targets"]
                ],
            )
        )


if __name__ == "__main__":
    sys.exit(main())
