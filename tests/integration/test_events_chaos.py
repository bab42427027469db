"""Chaos for the events: 500 transitions while the publisher dies and the broker cuts connections.

The publisher and the reference consumer run as the real commands
(``flask --app app events publish`` / ``python -m notifier run``). Mid-run, the first publisher
dies between the broker's confirm and its database mark (a duplicate publish),
and this run's broker connections are closed (``rabbitmqctl close_connection``
for our connections only: the broker is shared with other test runs, so no
restart and no ``close_all_connections``). The consumer's effects must happen
exactly once per transition, none lost, each prescription's in order.
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.foundation.models import EventOutbox, Prescription
from app.mechanisms.amqp import BROKER_ERRORS, close_quietly, connect
from app.mechanisms.history import Change, local, record
from scripts.stack import BIN, REPO_ROOT
from tests.integration import events_support
from tests.integration.conftest import wait_until
from tests.integration.events_support import (
    Capture,
    close_connections_named,
    empty_notifier_inbox,
    event_env,
    event_settings,
    notifier_rows,
)
from tests.support import transition_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]
amqp_url = events_support.amqp_url
event_names = events_support.event_names

# Ten transitions per prescription; the consumer acts on rejected (x3), signed and dispensed.
STEPS = (
    ("local", "queued", "service"),
    ("local", "rejected", "service"),
    ("local", "queued", "operator"),
    ("local", "rejected", "service"),
    ("local", "queued", "operator"),
    ("local", "rejected", "service"),
    ("local", "queued", "operator"),
    ("platform", "issued", "api"),
    ("platform", "signed", "webhook"),
    ("platform", "dispensed", "webhook"),
)
NOTIFIED = {"rejected", "signed", "dispensed"}


def _spawn(args: list[str], env: dict[str, str], log_path) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    program = (
        [str(BIN / "python"), "-m", "notifier"]
        if args[0] == "run"
        else [str(BIN / "flask"), "--app", "app"]
    )
    return subprocess.Popen(
        [*program, *args], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def _queue_exists(url: str, queue: str) -> bool:
    try:
        connection = connect(url, name="erx-tests probe")
    except BROKER_ERRORS:
        return False
    try:
        connection.channel().queue_declare(queue=queue, passive=True)
        return True
    except BROKER_ERRORS:
        return False
    finally:
        close_quietly(connection)


def test_500_transitions_through_a_publisher_crash_and_cut_connections_take_effect_exactly_once(
    seeded, tmp_path, db_url, amqp_url, event_names
):
    settings = event_settings(
        db_url, amqp_url, event_names, tmp_path / "mail", notify_max_attempts=10
    )
    env = event_env(settings)
    empty_notifier_inbox(db_url)
    capture = Capture(amqp_url, event_names.exchange, "#")
    procs: list[subprocess.Popen] = []
    with seeded.session() as s:
        ids = list(s.scalars(select(Prescription.id).order_by(Prescription.id)))
    assert len(ids) == 50
    try:
        consumer = _spawn(["run"], env, tmp_path / "notify.log")
        procs.append(consumer)
        wait_until(lambda: _queue_exists(amqp_url, event_names.queue), timeout_s=30)
        doomed = _spawn(
            ["events", "publish", "--exit-after-confirms", "120"], env, tmp_path / "publisher-1.log"
        )
        procs.append(doomed)

        def generate() -> None:
            at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
            for n, (kind, status, source) in enumerate(STEPS):
                for pid in ids:
                    with seeded.session() as s:
                        rx = s.get(Prescription, pid, with_for_update=True)
                        if kind == "local":
                            record(s, [Change(rx, local(rx, status, source=source))])
                        else:
                            record(
                                s,
                                [
                                    transition_of(
                                        rx,
                                        to_status=status,
                                        from_status=rx.status,
                                        occurred_at=at + timedelta(minutes=n),
                                        source=source,
                                        event_id=f"chaos-{pid}-{status}",
                                    )
                                ],
                            )
                    time.sleep(0.008)  # ~100 transitions/s: the run spans the chaos below

        generator = threading.Thread(target=generate, daemon=True)
        generator.start()
        assert doomed.wait(60) == 137  # died between confirm and mark
        publisher = _spawn(["events", "publish"], env, tmp_path / "publisher-2.log")
        procs.append(publisher)

        def published() -> int:
            with seeded.session() as s:
                return s.scalar(
                    select(func.count())
                    .select_from(EventOutbox)
                    .where(EventOutbox.state == "published")
                )

        wait_until(lambda: published() >= 250, timeout_s=60)
        closed = close_connections_named(event_names.exchange.rsplit("-", 1)[1])
        assert closed >= 2  # the publisher's and the consumer's
        generator.join(60)
        assert not generator.is_alive()
        wait_until(lambda: published() == 500, timeout_s=60)

        def effects() -> int:
            return len(notifier_rows(db_url))

        wait_until(lambda: effects() == 250, timeout_s=60)
        time.sleep(1.0)  # let any late duplicate arrive: it must change nothing
        for proc in (publisher, consumer):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0  # graceful stop
        got = capture.drain()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        capture.close()

    with seeded.session() as s:
        outbox = s.execute(
            select(
                EventOutbox.event_id, EventOutbox.prescription_id, EventOutbox.routing_key
            ).order_by(EventOutbox.id)
        ).all()
    inbox = notifier_rows(db_url)
    assert len(outbox) == 500
    # The crash re-sent what was confirmed but not marked: duplicates on the wire...
    sent = [body["event_id"] for _key, _props, body in got]
    assert len(sent) > 500
    assert set(sent) == {row.event_id for row in outbox}
    # ...and each prescription's messages arrived in order (first arrival of each).
    first_seen: dict[int, list[str]] = collections.defaultdict(list)
    seen: set[str] = set()
    for _key, _props, body in got:
        if body["event_id"] not in seen:
            seen.add(body["event_id"])
            first_seen[body["prescription"]["id"]].append(body["event_id"])
    expected: dict[int, list[str]] = collections.defaultdict(list)
    for row in outbox:
        expected[row.prescription_id].append(row.event_id)
    assert first_seen == expected

    # The consumer: one effect per notified transition, in each prescription's order.
    notified = [row for row in outbox if row.routing_key.rsplit(".", 1)[1] in NOTIFIED]
    assert len(notified) == 250
    assert sorted(r.message_id for r in inbox) == sorted(r.event_id for r in notified)
    by_rx: dict[int, list[str]] = collections.defaultdict(list)
    for r in inbox:
        by_rx[r.prescription_id].append(r.message_id)
    assert by_rx == {pid: [r.event_id for r in notified if r.prescription_id == pid] for pid in ids}
    # Exactly one email per effect: the consumer logs each send once, by event id.
    log_text = (tmp_path / "notify.log").read_text()
    sends = collections.Counter(
        re.findall(r"notify ([0-9a-f-]{36}) prescription=\d+ to=\w+: emailed", log_text)
    )
    emailed = {r.message_id for r in inbox if r.outcome == "emailed"}
    assert set(sends) == emailed and set(sends.values()) == {1}
    assert len(list((tmp_path / "mail").glob("notify-*.eml"))) == len(emailed)
