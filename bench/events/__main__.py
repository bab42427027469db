"""``python -m bench.events``: lag from a status-history row to a consumer, vs a bare publish.

What runs (loopback only, every loop bounded in count and time):

1. A throwaway database (``bench.database``: PostgreSQL ``erx_bench_events`` by
   default, ``BENCH_DB=sqlite`` for SQLite) is migrated and seeded.
2. ONE publisher process, ``flask --app app events publish`` as production runs
   it, on a fresh exchange (unique name per run, deleted at the end).
3. A consumer (a pika ``BlockingConnection`` in a thread of this process) on an
   exclusive queue bound to ``#`` notes the arrival time of every message.
4. ``--rounds`` rounds (default 3), each with two phases of ``--seconds`` (default
   10) at ``--rate`` (default 200) per second, paced on an absolute schedule,
   alternating which phase goes first:

   * measured: each tick appends one history row (``record_local_status`` in its
     own transaction, which stages the event); lag = arrival time at the consumer
     minus the row's ``recorded_at``;
   * reference: each tick is one bare ``basic_publish`` with publisher confirms
     from this process to the same exchange; lag = arrival minus the time just
     before the publish: the broker's and the consumer's own round trip.

Prints a Markdown table (p50, p99, max per phase and round) and writes
``bench/results/events.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import threading
import time
import uuid
from datetime import datetime
from typing import Any

import pika
from alembic import command
from alembic.config import Config

from app.db import Database
from app.events.amqp import close_quietly, connect
from app.models import Prescription
from app.seeding import run_seed_scripts
from bench.database import BenchDatabase
from bench.procstat import busy_pct
from bench.report import fmt, machine, markdown_table, percentile, preflight, write_results
from scripts.stack import BIN, REPO_ROOT, base_env
from webhooks.history import record_local_status

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
LOG_DIR = REPO_ROOT / "instance" / "bench" / "logs" / "events"


class ArrivalConsumer:
    """Consumes an exclusive queue bound to ``#``; records (message_id -> arrival Unix time)."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.arrivals: dict[str, tuple[float, dict[str, Any]]] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        connection = connect(AMQP_URL, name=f"bench consumer {self.exchange}")
        channel = connection.channel()
        channel.exchange_declare(exchange=self.exchange, exchange_type="topic", durable=True)
        queue = channel.queue_declare(queue="", exclusive=True).method.queue
        channel.queue_bind(queue=queue, exchange=self.exchange, routing_key="#")
        channel.basic_qos(prefetch_count=200)

        def on_message(ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
            now = time.time()
            ch.basic_ack(method.delivery_tag)
            self.arrivals[props.message_id] = (now, json.loads(body))

        channel.basic_consume(queue, on_message)
        self.ready.set()
        while not self.stop.is_set():
            connection.process_data_events(time_limit=0.05)
        close_quietly(connection)

    def wait_for(self, ids: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not ids <= self.arrivals.keys():
            time.sleep(0.05)


def paced(rate: float, seconds: float):  # type: ignore[no-untyped-def]
    """Yield tick numbers on an absolute schedule (no drift), ``rate`` per second."""
    start = time.monotonic()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield n


def measured_phase(db: Database, consumer: ArrivalConsumer, ids: list[int], *, rate: float, seconds: float) -> dict[str, Any]:
    """Append history rows at ``rate``; returns lags (ms) from ``recorded_at`` to arrival."""
    before = set(consumer.arrivals)
    statuses = ("queued", "rejected")
    rng = random.Random(11)
    behind = 0.0
    start = time.monotonic()
    for n in paced(rate, seconds):
        with db.session() as s:
            rx = s.get(Prescription, rng.choice(ids))
            record_local_status(s, rx, statuses[n % 2], source="service")
    behind = time.monotonic() - start - seconds
    expected = int(rate * seconds)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(set(consumer.arrivals) - before) < expected:
        time.sleep(0.05)
    lags = []
    for mid in set(consumer.arrivals) - before:
        arrived, body = consumer.arrivals[mid]
        if body.get("type") == "prescription.status_changed":
            recorded = datetime.fromisoformat(body["recorded_at"]).timestamp()
            lags.append((arrived - recorded) * 1000)
    return {"sent": expected, "received": len(lags), "generator_overrun_s": round(behind, 3), "lags_ms": lags}


def reference_phase(exchange: str, consumer: ArrivalConsumer, *, rate: float, seconds: float) -> dict[str, Any]:
    """Bare ``basic_publish`` with confirms at ``rate``; lags (ms) from before the publish to arrival."""
    connection = connect(AMQP_URL, name=f"bench reference {exchange}")
    channel = connection.channel()
    channel.confirm_delivery()
    sent: dict[str, float] = {}
    try:
        for _n in paced(rate, seconds):
            mid = str(uuid.uuid4())
            sent[mid] = time.time()
            channel.basic_publish(exchange, "reference.bare", json.dumps({"type": "reference"}).encode(),
                                  pika.BasicProperties(message_id=mid, delivery_mode=pika.DeliveryMode.Persistent,
                                                       content_type="application/json"))
    finally:
        close_quietly(connection)
    consumer.wait_for(set(sent), 30)
    lags = [(consumer.arrivals[m][0] - t) * 1000 for m, t in sent.items() if m in consumer.arrivals]
    return {"sent": len(sent), "received": len(lags), "lags_ms": lags}


def summary(phase: dict[str, Any]) -> dict[str, Any]:
    lags = phase.pop("lags_ms")
    return {**phase, "p50_ms": percentile(lags, 50), "p99_ms": percentile(lags, 99), "max_ms": max(lags, default=None)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="transitions per second (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each measured + reference (default 3)")
    args = parser.parse_args()
    if args.rounds < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--rounds, --rate and --seconds must be positive")

    busy = busy_pct()
    preflight(busy)
    os.environ.setdefault("BENCH_PG_DB", "erx_bench_events")
    bench_db = BenchDatabase.from_env()
    bench_db.recreate()
    suffix = uuid.uuid4().hex[:8]
    exchange = f"erx.events.bench-{suffix}"
    env = base_env(DATABASE_URL=bench_db.url, AMQP_URL=AMQP_URL, EVENTS_EXCHANGE=exchange,
                   EVENTS_DLX=f"erx.events.dlq.bench-{suffix}", ERX_ENV="development")
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    os.environ["DATABASE_URL"] = bench_db.url
    command.upgrade(cfg, "head")
    db = Database(bench_db.url)
    run_seed_scripts(db.engine)
    with db.session() as s:
        ids = [p.id for p in s.query(Prescription.id)]
    consumer = ArrivalConsumer(exchange)
    consumer.thread.start()
    consumer.ready.wait(30)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / "publisher.log", "wb")  # noqa: SIM115 - closed below
    publisher = subprocess.Popen([str(BIN / "flask"), "--app", "app", "events", "publish"], cwd=REPO_ROOT, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
    rounds: list[dict[str, Any]] = []
    try:
        time.sleep(2.0)  # the publisher connects and declares
        for r in range(args.rounds):
            order = ("measured", "reference") if r % 2 == 0 else ("reference", "measured")
            result: dict[str, Any] = {"round": r + 1, "first": order[0]}
            for phase in order:
                if phase == "measured":
                    result["measured"] = summary(measured_phase(db, consumer, ids, rate=args.rate, seconds=args.seconds))
                else:
                    result["reference"] = summary(reference_phase(exchange, consumer, rate=args.rate, seconds=args.seconds))
            rounds.append(result)
            m, ref = result["measured"], result["reference"]
            print(f"round {r + 1}: measured p50 {fmt(m['p50_ms'])} p99 {fmt(m['p99_ms'])} ms "
                  f"({m['received']}/{m['sent']}); reference p50 {fmt(ref['p50_ms'])} p99 {fmt(ref['p99_ms'])} ms",
                  flush=True)
    finally:
        publisher.terminate()
        publisher.wait(30)
        log.close()
        consumer.stop.set()
        consumer.thread.join(10)
        cleanup = connect(AMQP_URL, name="bench cleanup")
        channel = cleanup.channel()
        channel.exchange_delete(exchange=exchange)
        channel.exchange_delete(exchange=f"erx.events.dlq.bench-{suffix}")
        close_quietly(cleanup)
        db.dispose()
        bench_db.finish()

    rows = []
    for res in rounds:
        for phase in ("measured", "reference"):
            p = res[phase]
            rows.append([res["round"], phase, f"{p['received']}/{p['sent']}", fmt(p["p50_ms"]), fmt(p["p99_ms"]),
                         fmt(p["max_ms"])])
    print()
    print(f"{bench_db.label}, {args.rate:.0f} transitions/s, {args.seconds:.0f} s per phase, one publisher")
    print(markdown_table(["round", "phase", "received/sent", "p50 ms", "p99 ms", "max ms"], rows))
    path = write_results("events" if bench_db.kind != "sqlite" else "events-sqlite", {
        "machine": machine(busy_before_pct=busy),
        "database": bench_db.label,
        "database_version": None,
        "command": "python -m bench.events " + " ".join(
            f"--{k} {v}" for k, v in (("rate", args.rate), ("seconds", args.seconds), ("rounds", args.rounds))),
        "rounds": rounds,
    })
    print(f"results: {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
