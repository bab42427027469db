"""``python -m bench.events``: lag from a status-history row to a consumer, vs a bare publish.

What runs (loopback only, every loop bounded in count and time):

1. A throwaway database (``bench.database``: PostgreSQL ``erx_bench_events`` by
   default, ``BENCH_DB=sqlite`` for SQLite) is migrated and seeded.
2. ONE publisher process, ``flask --app app events publish`` as production runs
   it, on a fresh exchange (unique name per run, deleted at the end).
3. A consumer (a pika ``BlockingConnection`` in a child process) on an
   exclusive queue bound to ``#`` notes the arrival time of every message.
4. ``--rounds`` rounds (default 3), each with two phases of ``--seconds`` (default
   10) at ``--rate`` (default 200) per second, paced on an absolute schedule,
   alternating which phase goes first:

   * measured: each tick appends one history row (``record`` of a ``local``
     transition in its own transaction, prescription locked first, which stages
     the event and its NOTIFY), from ``--writers`` processes of ``--threads``
     threads on an open-loop schedule (``bench/events/writers.py``: a slow
     commit never delays the next tick); lag = arrival time at the consumer
     minus the row's ``recorded_at``;
   * reference: each tick is one bare ``basic_publish`` with publisher confirms
     from this process to the same exchange; lag = arrival minus the time just
     before the publish: the broker's and the consumer's own round trip.

Prints a Markdown table (p50, p99, max per phase and round; for the measured
phase also the achieved rate, how late the appends committed against their
schedule, and the publisher's CPU share) and writes ``bench/results/events.json``;
``--plot PATH`` draws the lag CDF of every phase of every round (matplotlib);
``--profile FILE`` runs the publisher under cProfile in CPU time
(``bench/events/cpuprofile.py``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pika
from alembic import command
from alembic.config import Config

from app.foundation.db import Database
from app.foundation.models import Prescription
from app.mechanisms.amqp import close_quietly, connect
from app.mechanisms.history import Change, local, record
from app.services.seeding import run_seed_scripts
from bench.database import BenchDatabase
from bench.events.arrivals import consume
from bench.events.writers import serve
from bench.procstat import busy_pct, tree_cpu
from bench.report import fmt, machine, markdown_table, percentile, preflight, write_results
from scripts.stack import BIN, REPO_ROOT, base_env

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
LOG_DIR = REPO_ROOT / "instance" / "bench" / "logs" / "events"


class ArrivalConsumer:
    """Handle on the consumer process: :meth:`take` returns arrivals since the last call."""

    def __init__(self, exchange: str) -> None:
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=consume, args=(exchange, child), daemon=True
        )
        self.process.start()
        if not self.pipe.poll(30) or self.pipe.recv() != "ready":
            raise RuntimeError("the bench consumer did not start")

    def take(self) -> dict[str, tuple[float, str | None]]:
        self.pipe.send("snapshot")
        return self.pipe.recv()

    def collect(self, expected: int, timeout_s: float) -> dict[str, tuple[float, str | None]]:
        """Arrivals until ``expected`` came or ``timeout_s`` passed."""
        got: dict[str, tuple[float, str | None]] = {}
        deadline = time.monotonic() + timeout_s
        while len(got) < expected and time.monotonic() < deadline:
            got.update(self.take())
            time.sleep(0.1)
        return got

    def close(self) -> None:
        self.pipe.send("stop")
        self.process.join(10)


def paced(rate: float, seconds: float):  # type: ignore[no-untyped-def]
    """Yield tick numbers on an absolute schedule (no drift), ``rate`` per second."""
    start = time.monotonic()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield n


class Writers:
    """The writer processes (:mod:`bench.events.writers`), started once and reused by every measured phase."""

    def __init__(self, url: str, ids: list[int], *, processes: int, threads: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes = []
        self.processes = []
        for index in range(processes):
            pipe, child = context.Pipe()
            process = context.Process(
                target=serve, args=(url, ids, index, processes, threads, child), daemon=True
            )
            process.start()
            self.pipes.append(pipe)
            self.processes.append(process)
        for pipe in self.pipes:
            if not pipe.poll(60) or pipe.recv() != "ready":
                raise RuntimeError("a bench writer did not start")

    def run(self, *, rate: float, seconds: float) -> tuple[float, dict[str, float], list[float]]:
        """One open-loop phase; returns (start epoch s, {event_id: commit epoch s}, lateness per append in s)."""
        start = time.time() + 0.3  # every process is waiting on the same schedule by then
        for pipe in self.pipes:
            pipe.send(("run", start, rate, seconds))
        committed: dict[str, float] = {}
        late: list[float] = []
        for pipe in self.pipes:
            answer = pipe.recv()
            committed.update(answer["committed"])
            late.extend(answer["late_s"])
        return start, committed, late

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send("stop")
        for process in self.processes:
            process.join(10)


def measured_phase(
    writers: Writers, consumer: ArrivalConsumer, publisher_pid: int, *, rate: float, seconds: float
) -> dict[str, Any]:
    """Append history rows at ``rate`` (open loop, :class:`Writers`); lags (ms) from ``recorded_at`` to arrival.

    Each append is its own transaction, as in the service. Also returns the
    achieved rate (appends / time from the first due tick to the last commit),
    how late the appends committed against their schedule, and the
    publisher's CPU share during the phase.
    """
    consumer.take()  # start clean
    cpu_before = tree_cpu([publisher_pid])
    start, committed, late = writers.run(rate=rate, seconds=seconds)
    expected = int(rate * seconds)
    got = consumer.collect(expected, 60)
    cpu = tree_cpu([publisher_pid]) - cpu_before
    span = max(committed.values(), default=start) - start
    lags = [
        (arrived - datetime.fromisoformat(recorded).timestamp()) * 1000
        for arrived, recorded in got.values()
        if recorded is not None
    ]
    # From the writer's commit instead: the part of the lag that is the outbox's own.
    after_commit = [(got[m][0] - t) * 1000 for m, t in committed.items() if m in got]
    return {
        "sent": expected,
        "received": len(lags),
        "achieved_rate": round(len(committed) / span, 1) if span else None,
        "late_p50_ms": percentile([x * 1000 for x in late], 50),
        "late_p99_ms": percentile([x * 1000 for x in late], 99),
        "publisher_cpu_pct": round(100 * cpu / max(span, seconds), 1),
        "lags_ms": lags,
        "after_commit_p50_ms": percentile(after_commit, 50),
        "after_commit_p99_ms": percentile(after_commit, 99),
    }


def reference_phase(
    exchange: str, consumer: ArrivalConsumer, *, rate: float, seconds: float
) -> dict[str, Any]:
    """Bare ``basic_publish`` with confirms at ``rate``; lags (ms) from before the publish to arrival."""
    consumer.take()  # start clean
    connection = connect(AMQP_URL, name=f"bench reference {exchange}")
    channel = connection.channel()
    channel.confirm_delivery()
    sent: dict[str, float] = {}
    try:
        for _n in paced(rate, seconds):
            mid = str(uuid.uuid4())
            sent[mid] = time.time()
            channel.basic_publish(
                exchange,
                "reference.bare",
                json.dumps({"type": "reference"}).encode(),
                pika.BasicProperties(
                    message_id=mid,
                    delivery_mode=pika.DeliveryMode.Persistent,
                    content_type="application/json",
                ),
            )
    finally:
        close_quietly(connection)
    got = consumer.collect(len(sent), 30)
    lags = [(got[m][0] - t) * 1000 for m, t in sent.items() if m in got]
    return {"sent": len(sent), "received": len(lags), "lags_ms": lags}


def drain_phase(
    db: Database, consumer: ArrivalConsumer, ids: list[int], *, count: int
) -> dict[str, Any]:
    """Commit ``count`` transitions in ONE transaction; how fast does one publisher drain them?

    Returns the seconds from the commit to the last arrival and the implied
    events per second: the publisher's capacity on this machine, not a lag.
    """
    consumer.take()
    with db.session() as s:
        for n in range(count):
            rx = s.get(Prescription, ids[n % len(ids)])
            record(s, [Change(rx, local(rx, ("queued", "rejected")[n % 2], source="service"))])
    committed = time.time()
    got = consumer.collect(count, 120)
    last = max((arrived for arrived, _ in got.values()), default=committed)
    seconds = last - committed
    return {
        "events": count,
        "received": len(got),
        "drain_s": round(seconds, 3),
        "events_per_s": round(len(got) / seconds, 1) if seconds > 0 else None,
    }


def summary(phase: dict[str, Any], lags_out: list[float]) -> dict[str, Any]:
    lags = phase.pop("lags_ms")
    lags_out.extend(lags)
    return {
        **phase,
        "p50_ms": percentile(lags, 50),
        "p99_ms": percentile(lags, 99),
        "max_ms": max(lags, default=None),
    }


def plot(
    path: Path, lags: dict[tuple[int, str], list[float]], *, rate: float, version: str
) -> None:
    """Lag CDF of every phase of every round: measured (history row to consumer) and the bare-publish reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (round_no, phase), values in sorted(lags.items()):
        if not values:
            continue
        xs = sorted(values)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.plot(
            xs,
            ys,
            color="tab:blue" if phase == "measured" else "tab:gray",
            linestyle=("-", "--", ":", "-.")[(round_no - 1) % 4],
            label=f"round {round_no} {phase}",
        )
    ax.axvline(250, color="tab:red", linewidth=1)
    ax.text(250, 0.03, " target p99 250 ms", color="tab:red", fontsize=8)
    ax.axhline(0.99, color="black", linewidth=0.5, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel("lag to the consumer, ms (log)")
    ax.set_ylabel("fraction of messages")
    ax.set_title(
        f"bench.events: {rate:.0f} transitions/s, one publisher ({version.split(' (')[0]})",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.events", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="transitions per second (default 200)"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="length of each phase (default 10)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds, each measured + reference (default 3)"
    )
    parser.add_argument(
        "--drain", type=int, default=2000, help="backlog for the capacity phase (0: skip)"
    )
    parser.add_argument("--writers", type=int, default=4, help="writer processes (default 4)")
    parser.add_argument(
        "--threads", type=int, default=4, help="threads per writer process (default 4)"
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="write a PNG of the lag CDFs here (matplotlib)"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        default=None,
        help="run the publisher under cProfile (CPU time) and write its stats to FILE (pstats)",
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--rounds, --rate and --seconds must be positive")

    busy = busy_pct()
    preflight(busy)
    load_before = os.getloadavg()
    os.environ.setdefault("BENCH_PG_DB", "erx_bench_events")
    bench_db = BenchDatabase.from_env()
    bench_db.recreate()
    suffix = uuid.uuid4().hex[:8]
    exchange = f"erx.events.bench-{suffix}"
    # The publisher declares the notifier's queue as in production (messages routed to it
    # too), under a name of this run's own, deleted at the end with its dead-letter queue.
    notify_queue = f"erx.notify.bench-{suffix}"
    env = base_env(
        DATABASE_URL=bench_db.url,
        AMQP_URL=AMQP_URL,
        EVENTS_EXCHANGE=exchange,
        EVENTS_DLX=f"erx.events.dlq.bench-{suffix}",
        NOTIFY_QUEUE=notify_queue,
        ERX_ENV="development",
    )
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    os.environ["DATABASE_URL"] = bench_db.url
    command.upgrade(cfg, "head")
    db = Database(bench_db.url)
    run_seed_scripts(db.engine)
    version = bench_db.server_version()
    with db.session() as s:
        ids = [p.id for p in s.query(Prescription.id)]
    consumer = ArrivalConsumer(exchange)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / "publisher.log", "wb")  # noqa: SIM115 - closed below
    publisher_cmd = (
        ["-m", "bench.events.cpuprofile", str(Path(args.profile).resolve())]
        if args.profile
        else ["-m", "flask", "--app", "app", "events", "publish"]
    )
    publisher = subprocess.Popen(
        [str(BIN / "python"), *publisher_cmd],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    rounds: list[dict[str, Any]] = []
    lags: dict[tuple[int, str], list[float]] = {}
    writers = Writers(bench_db.url, ids, processes=args.writers, threads=args.threads)
    try:
        time.sleep(2.0)  # the publisher connects and declares
        measured_phase(
            writers, consumer, publisher.pid, rate=args.rate, seconds=1.0
        )  # warm-up, not reported
        for r in range(args.rounds):
            order = ("measured", "reference") if r % 2 == 0 else ("reference", "measured")
            result: dict[str, Any] = {"round": r + 1, "first": order[0]}
            for phase in order:
                if phase == "measured":
                    result["measured"] = summary(
                        measured_phase(
                            writers, consumer, publisher.pid, rate=args.rate, seconds=args.seconds
                        ),
                        lags.setdefault((r + 1, phase), []),
                    )
                else:
                    result["reference"] = summary(
                        reference_phase(exchange, consumer, rate=args.rate, seconds=args.seconds),
                        lags.setdefault((r + 1, phase), []),
                    )
            rounds.append(result)
            m, ref = result["measured"], result["reference"]
            print(
                f"round {r + 1}: measured at {fmt(m['achieved_rate'])}/s "
                f"p50 {fmt(m['p50_ms'])} p99 {fmt(m['p99_ms'])} ms "
                f"({m['received']}/{m['sent']}); reference p50 {fmt(ref['p50_ms'])} p99 {fmt(ref['p99_ms'])} ms",
                flush=True,
            )
        drain = drain_phase(db, consumer, ids, count=args.drain) if args.drain else None
        if drain:
            print(
                f"drain: {drain['received']}/{drain['events']} events in {drain['drain_s']} s "
                f"= {drain['events_per_s']} events/s through one publisher",
                flush=True,
            )
    finally:
        writers.close()
        publisher.terminate()
        publisher.wait(30)
        log.close()
        consumer.close()
        cleanup = connect(AMQP_URL, name="bench cleanup")
        channel = cleanup.channel()
        for queue in (notify_queue, f"{notify_queue}.dlq"):
            channel.queue_delete(queue=queue)
        channel.exchange_delete(exchange=exchange)
        channel.exchange_delete(exchange=f"erx.events.dlq.bench-{suffix}")
        close_quietly(cleanup)
        db.dispose()
        bench_db.finish()

    rows = []
    for res in rounds:
        for phase in ("measured", "reference"):
            p = res[phase]
            rows.append(
                [
                    res["round"],
                    phase,
                    f"{p['received']}/{p['sent']}",
                    fmt(p.get("achieved_rate")),
                    fmt(p.get("late_p99_ms")),
                    fmt(p["p50_ms"]),
                    fmt(p["p99_ms"]),
                    fmt(p["max_ms"]),
                    fmt(p.get("after_commit_p50_ms")),
                    fmt(p.get("after_commit_p99_ms")),
                    fmt(p.get("publisher_cpu_pct")),
                ]
            )
    print()
    print(
        f"{version}, {args.rate:.0f} transitions/s, {args.seconds:.0f} s per phase, one publisher, "
        f"{args.writers} writer processes x {args.threads} threads"
    )
    print(
        markdown_table(
            [
                "round",
                "phase",
                "received/sent",
                "rate /s",
                "commit late p99 ms",
                "p50 ms",
                "p99 ms",
                "max ms",
                "p50 from commit",
                "p99 from commit",
                "publisher CPU %",
            ],
            rows,
        )
    )
    if args.plot:
        plot(args.plot, lags, rate=args.rate, version=version)
        print(f"plot: {args.plot}")
    path = write_results(
        "events" if bench_db.kind != "sqlite" else "events-sqlite",
        {
            "machine": {
                **machine(busy_before_pct=busy),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
            },
            "database": bench_db.label,
            "database_version": version,
            "command": "python -m bench.events "
            + " ".join(
                f"--{k} {v}"
                for k, v in (
                    ("rate", args.rate),
                    ("seconds", args.seconds),
                    ("rounds", args.rounds),
                    ("writers", args.writers),
                    ("threads", args.threads),
                )
            ),
            "rounds": rounds,
            "drain": drain,
        },
    )
    print(f"results: {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
