"""Worker wake-ups: a committed queue row wakes a listening worker at once.

On PostgreSQL the receiver's INSERT and every ORM flush that makes a queue row
pending notify the queue's channel in the same transaction; a worker waiting
with a long poll interval wakes when the row commits, long before the poll
would have. SQLite (and ``WORKER_WAKEUP=poll``) polls, and the poll still
finds rows that no notification announced.
"""

from __future__ import annotations

import dataclasses
import select as select_module
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from app.foundation.config import ConfigError, load_settings
from app.foundation.db import Database, utcnow
from app.foundation.models import Patient, Prescription, Region, WebhookInbox
from app.interfaces.worker import WorkerLoop, build_waiter
from app.mechanisms.history import Change, Transition, local, record
from app.mechanisms.queue import mark_dead, reopen
from app.mechanisms.runtime import Runtime
from app.mechanisms.wakeup import (
    EVENTS_CHANNEL,
    INBOX_CHANNEL,
    PollWaiter,
    WakeupWaiter,
    resolve_mode,
)
from tests.support import claimed_ids
from tests.unit.test_inbox_processing import (  # noqa: F401 - fixtures
    REFERENCE,
    TOKEN,
    at,
    clock,
    deliver,
    event_body,
    issue,
    status_of,
)
from webhooks.processing import InboxProcessor

# Far longer than any wake-up may take: a worker that only polled would miss every assertion.
LONG_POLL_S = 60.0
WAKE_WITHIN_S = 10.0


def _require_postgres(db: Database) -> None:
    if not db.is_postgres:
        pytest.skip("NOTIFY is PostgreSQL-only; SQLite polls (covered below)")


def _listen(db: Database, channel: str) -> Any:
    """A raw psycopg2 connection LISTENing on ``channel``, to see exactly what was sent."""
    _require_postgres(db)
    raw = db.engine.raw_connection()
    raw.detach()
    conn = raw.dbapi_connection
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"LISTEN {channel}")
    return conn


@pytest.fixture
def listener(seeded: Database) -> Iterator[Any]:
    """LISTENing on the inbox channel."""
    conn = _listen(seeded, INBOX_CHANNEL)
    yield conn
    conn.close()


@pytest.fixture
def events_listener(seeded: Database) -> Iterator[Any]:
    """LISTENing on the event outbox's channel (the publisher's)."""
    conn = _listen(seeded, EVENTS_CHANNEL)
    yield conn
    conn.close()


def _notifications_until_marker(conn: Any, db: Database, channel: str = INBOX_CHANNEL) -> list[str]:
    """Send a marker notification, then return the payloads received before it (commit order)."""
    with db.engine.begin() as c:
        c.execute(text("SELECT pg_notify(:channel, 'marker')"), {"channel": channel})
    payloads: list[str] = []
    while True:
        conn.poll()
        while conn.notifies:
            payload = conn.notifies.pop(0).payload
            if payload == "marker":
                return payloads
            payloads.append(payload)
        ready, _, _ = select_module.select([conn], [], [], WAKE_WITHIN_S)
        assert ready, "the marker notification never arrived"


# --- choosing the mode --------------------------------------------------------------------


def test_mode_is_notify_on_postgres_and_poll_on_sqlite_or_when_asked() -> None:
    assert resolve_mode("auto", dialect="postgresql") == "notify"
    assert resolve_mode("", dialect="postgresql") == "notify"
    assert resolve_mode("poll", dialect="postgresql") == "poll"  # behind a transaction-mode pooler
    assert resolve_mode("auto", dialect="sqlite") == "poll"
    assert resolve_mode("notify", dialect="sqlite") == "poll"  # SQLite has no NOTIFY
    with pytest.raises(ValueError):
        resolve_mode("sometimes", dialect="postgresql")


def test_worker_wakeup_setting_is_validated() -> None:
    assert load_settings({"WORKER_WAKEUP": "poll"}).worker_wakeup == "poll"
    assert load_settings({}).worker_wakeup == "auto"
    with pytest.raises(ConfigError, match="WORKER_WAKEUP"):
        load_settings({"WORKER_WAKEUP": "always"})


def test_waiter_follows_database_and_setting(app, seeded: Database) -> None:  # type: ignore[no-untyped-def]
    svc: Runtime = app.extensions["erx"]
    stop = threading.Event()
    waiter = build_waiter(svc, stop, dispatch=True, inbox=True)
    assert isinstance(waiter, WakeupWaiter if seeded.is_postgres else PollWaiter)
    polled = Runtime(settings=dataclasses.replace(svc.settings, worker_wakeup="poll"), db=seeded)
    assert isinstance(build_waiter(polled, stop, dispatch=True, inbox=True), PollWaiter)


# --- what sends a notification ------------------------------------------------------------


def test_receipt_notifies_once_per_stored_event_and_not_for_duplicates(
    seeded: Database,
    listener: Any,
    deliver: Any,  # noqa: F811
) -> None:
    body = event_body("evt_wake_receipt", "signed", previous="issued", occurred=at(10, 15))
    deliver(body)
    deliver(body)  # a duplicate stores nothing and wakes nobody
    assert _notifications_until_marker(listener, seeded) == [""]


def test_receiver_in_poll_mode_notifies_nobody(
    seeded: Database, listener: Any, settings: Any
) -> None:
    from app import create_app
    from tests.unit.test_inbox_processing import PATH, SECRET, SIGNED_AT
    from webhooks.signature import sign

    app = create_app(dataclasses.replace(settings, worker_wakeup="poll"), db=seeded)
    app.extensions["erx"].unix_time = lambda: float(SIGNED_AT)
    body = event_body("evt_wake_pollmode", "signed", previous="issued", occurred=at(10, 15))
    response = app.test_client().post(
        PATH,
        data=body,
        headers={"X-Signature": sign(body, [SECRET], timestamp=SIGNED_AT)},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert _notifications_until_marker(listener, seeded) == []


def test_reopen_notifies_but_a_claim_does_not(
    seeded: Database,
    listener: Any,
    deliver: Any,  # noqa: F811
) -> None:
    deliver(event_body("evt_wake_reopen", "signed", previous="issued", occurred=at(10, 15)))
    assert _notifications_until_marker(listener, seeded) == [""]
    # A claim stamps a lease on a row that was already pending: not news.
    assert claimed_ids(seeded, WebhookInbox, worker_id="w", now=utcnow(), lease_s=30.0, limit=10)
    with seeded.session() as session:
        row = session.scalars(
            select(WebhookInbox).where(WebhookInbox.event_id == "evt_wake_reopen")
        ).one()
        mark_dead(row, error="test")
    assert _notifications_until_marker(listener, seeded) == []
    with seeded.session() as session:
        row = session.scalars(
            select(WebhookInbox).where(WebhookInbox.event_id == "evt_wake_reopen")
        ).one()
        reopen(row, now=utcnow())
    assert _notifications_until_marker(listener, seeded) == [""]


def test_rolled_back_row_wakes_nobody(seeded: Database, listener: Any) -> None:
    with pytest.raises(RuntimeError), seeded.session() as session:
        session.add(
            WebhookInbox(
                event_id="evt_wake_rollback",
                event_type="x",
                body=b"{}",
                state="pending",
                attempts=0,
                next_attempt_at=utcnow(),
                received_at=utcnow(),
                awaiting_prescription=False,
            )
        )
        session.flush()
        raise RuntimeError("abort")
    assert _notifications_until_marker(listener, seeded) == []


def test_a_staged_status_event_wakes_the_publisher_when_it_commits(
    seeded: Database, events_listener: Any
) -> None:
    with seeded.session() as session:
        pid = session.scalars(select(Prescription.id).order_by(Prescription.id)).first()
        rx = session.get(Prescription, pid)
        record(session, [Change(rx, local(rx, "queued", source="api"))])
    assert _notifications_until_marker(events_listener, seeded, EVENTS_CHANNEL) == [""]
    with pytest.raises(RuntimeError), seeded.session() as session:
        rx = session.get(Prescription, pid)
        record(session, [Change(rx, local(rx, "rejected", source="api"))])
        session.flush()
        raise RuntimeError("abort: the transition never happened")
    assert _notifications_until_marker(events_listener, seeded, EVENTS_CHANNEL) == []


def test_a_set_based_history_append_wakes_the_publisher(
    seeded: Database, events_listener: Any
) -> None:
    # A batch's event rows are written with Core, out of the after-flush hook's sight.
    with seeded.session() as session:
        found = session.execute(
            select(Prescription, Patient.region_code, Region.flow)
            .join(Patient, Patient.id == Prescription.patient_id)
            .join(Region, Region.code == Patient.region_code)
            .order_by(Prescription.id)
            .limit(2)
            .with_for_update(of=Prescription)
        ).all()
        changes = [
            Change(
                rx,
                Transition(
                    to_status="issued",
                    from_status=rx.status,
                    occurred_at=utcnow(),
                    source="webhook",
                    event_id=f"evt_wake_events_batch_{rx.id}",
                ),
                region=region,
                route=route,
            )
            for rx, region, route in found
        ]
        assert record(session, changes) == [True, True]
    assert _notifications_until_marker(events_listener, seeded, EVENTS_CHANNEL) == [""]


def test_a_local_status_written_in_one_statement_wakes_the_publisher(
    seeded: Database, events_listener: Any
) -> None:
    # With region and route given, PostgreSQL appends history and event in one Core statement (dispatch's path).
    with seeded.session() as session:
        rx, region, route = session.execute(
            select(Prescription, Patient.region_code, Region.flow)
            .join(Patient, Patient.id == Prescription.patient_id)
            .join(Region, Region.code == Patient.region_code)
            .order_by(Prescription.id)
            .limit(1)
            .with_for_update(of=Prescription)
        ).one()
        record(session, [Change(rx, local(rx, "issued", source="api"), region=region, route=route)])
    assert _notifications_until_marker(events_listener, seeded, EVENTS_CHANNEL) == [""]
    # A lifecycle step is stored once: again, it appends nothing, stages nothing, and wakes nobody.
    with seeded.session() as session:
        rx = session.get(Prescription, rx.id, with_for_update=True)
        record(session, [Change(rx, local(rx, "issued", source="api"), region=region, route=route)])
    assert _notifications_until_marker(events_listener, seeded, EVENTS_CHANNEL) == []


# --- a worker wakes at once ---------------------------------------------------------------


def _run_in_thread(loop: WorkerLoop) -> threading.Thread:
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    return thread


def _wait_ready(waiter: WakeupWaiter) -> None:
    for _ in range(1000):
        if waiter._conn is not None:  # noqa: SLF001 - LISTEN issued: the loop is about to wait
            return
        threading.Event().wait(0.01)
    raise AssertionError("the worker never started listening")


def test_listening_worker_applies_an_event_long_before_its_poll_interval(
    seeded: Database,
    deliver: Any,
    clock: Any,  # noqa: F811
) -> None:
    _require_postgres(seeded)
    rx = issue(seeded, REFERENCE, TOKEN)
    stop = threading.Event()
    waiter = WakeupWaiter(seeded.engine, [INBOX_CHANNEL], stop)
    applied = threading.Event()

    class Watching(InboxProcessor):
        def run_batch(self, should_stop: Any = lambda: False) -> int:
            handled = super().run_batch(should_stop)
            if handled:
                applied.set()
            return handled

    loop = WorkerLoop(
        None,
        Watching(seeded, worker_id="w-wake", now=clock, rand=lambda: 0.5),
        poll_s=LONG_POLL_S,
        stop=stop,
        waiter=waiter,
    )
    thread = _run_in_thread(loop)
    try:
        _wait_ready(waiter)
        deliver(event_body("evt_wake_worker", "signed", previous="issued", occurred=at(10, 15)))
        assert applied.wait(WAKE_WITHIN_S), "the worker slept through the notification"
        assert status_of(seeded, rx) == "signed"
    finally:
        loop.request_stop()  # ends the 60 s wait at once
        thread.join(WAKE_WITHIN_S)
    assert not thread.is_alive()


def test_listening_worker_still_polls_for_rows_nobody_announced(
    seeded: Database,
    deliver: Any,
    clock: Any,  # noqa: F811
) -> None:
    _require_postgres(seeded)
    rx = issue(seeded, REFERENCE, TOKEN)
    stop = threading.Event()
    waiter = WakeupWaiter(seeded.engine, [INBOX_CHANNEL], stop)
    processor = InboxProcessor(seeded, worker_id="w-poll", now=clock, rand=lambda: 0.5)
    # Stored while no worker listens: no notification will ever announce it.
    deliver(event_body("evt_wake_unannounced", "signed", previous="issued", occurred=at(10, 15)))
    waiter.listen()
    loop = WorkerLoop(None, processor, poll_s=0.01, stop=stop, waiter=waiter)
    loop.run(until_idle=True)
    assert status_of(seeded, rx) == "signed"


def test_broken_listener_falls_back_to_polling(seeded: Database) -> None:
    _require_postgres(seeded)
    stop = threading.Event()
    waiter = WakeupWaiter(seeded.engine, [INBOX_CHANNEL], stop)
    waiter.listen()
    waiter._conn.close()  # noqa: SLF001 - the database went away under the listener
    assert waiter.wait(0.0) is False  # no exception: polled instead
    assert waiter._conn is None  # noqa: SLF001 - reconnects on the next wait
    assert waiter.wait(0.0) is False
    assert waiter._conn is not None  # noqa: SLF001
    waiter.close()


def test_polling_worker_applies_stored_events(seeded: Database, deliver: Any, clock: Any) -> None:  # noqa: F811
    rx = issue(seeded, REFERENCE, TOKEN)
    deliver(event_body("evt_wake_sqlite", "signed", previous="issued", occurred=at(10, 15)))
    stop = threading.Event()
    loop = WorkerLoop(
        None,
        InboxProcessor(seeded, worker_id="w-sqlite", now=clock, rand=lambda: 0.5),
        poll_s=0.01,
        stop=stop,
        waiter=PollWaiter(stop),
    )
    loop.run(until_idle=True)
    assert status_of(seeded, rx) == "signed"


# --- the receiver's coalesced notifications ------------------------------------------------


class _Ticks:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_coalescer_notifies_inline_once_per_window_and_owes_the_rest() -> None:
    from app.mechanisms.wakeup import WakeupCoalescer

    sent: list[float] = []
    ticks = _Ticks()
    c = WakeupCoalescer(
        lambda: sent.append(ticks.now), window_s=0.01, clock=ticks, start_thread=False
    )
    first = c.claim()
    assert first is not None  # nothing sent yet: notify in the statement itself
    c.settle(first)
    ticks.now += 0.004
    assert c.claim() is None  # within the window: insert without, then owe
    assert c.due_in() is None
    c.owe()
    c.owe()  # several rows committed in the window: still one notification
    assert c.due_in() == pytest.approx(
        0.016
    )  # sent 2 windows after the last one, unless a receipt carries it
    assert c.flush() is False and sent == []
    ticks.now += 0.016
    assert c.flush() is True and sent == [ticks.now]
    assert c.flush() is False and c.due_in() is None  # paid
    assert c.claim() is None  # the trailing notification opened a new window
    ticks.now += 0.01
    assert c.claim() is not None


def test_a_later_receipt_carries_what_is_owed_unless_more_was_owed_after_its_claim() -> None:
    from app.mechanisms.wakeup import WakeupCoalescer

    ticks = _Ticks()
    c = WakeupCoalescer(lambda: None, window_s=0.01, clock=ticks, start_thread=False)
    c.settle(c.claim())  # type: ignore[arg-type]
    ticks.now += 0.002
    assert c.claim() is None
    c.owe()  # row A committed, not announced
    ticks.now += 0.01
    ticket = c.claim()
    assert ticket is not None  # receipt B notifies in its INSERT; A committed before B's claim
    c.settle(ticket)
    assert c.due_in() is None  # A is announced by B's commit
    ticks.now += 0.01
    ticket = c.claim()
    assert ticket is not None
    c.owe()  # row C committed after D's claim: D's commit may come first, so C stays owed
    c.settle(ticket)
    assert c.due_in() is not None


def test_coalescer_failure_to_send_is_logged_not_raised() -> None:
    from app.mechanisms.wakeup import WakeupCoalescer

    def broken() -> None:
        raise OSError("database gone")

    ticks = _Ticks()
    c = WakeupCoalescer(broken, window_s=0.01, clock=ticks, start_thread=False)
    c.owe()
    assert c.flush() is True  # attempted; the workers' poll finds the row anyway
    assert c.due_in() is None


def test_receipts_within_a_window_are_announced_after_their_commit(
    app,
    seeded: Database,
    listener: Any,
    deliver: Any,  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    from app.mechanisms.wakeup import WakeupCoalescer

    svc: Runtime = app.extensions["erx"]
    assert svc.inbox_wakeups is not None
    ticks = _Ticks()
    manual = WakeupCoalescer(svc.inbox_wakeups.send, window_s=0.01, clock=ticks, start_thread=False)
    svc.inbox_wakeups = manual
    deliver(event_body("evt_coalesce_1", "signed", previous="issued", occurred=at(10, 15)))
    deliver(event_body("evt_coalesce_2", "signed", previous="issued", occurred=at(10, 15)))
    # The first notified in its INSERT; the second is committed and owed, not yet announced.
    assert _notifications_until_marker(listener, seeded) == [""]
    assert manual.due_in() is not None
    ticks.now += 0.02
    assert manual.flush() is True
    assert _notifications_until_marker(listener, seeded) == [""]


def test_owed_notification_is_sent_by_the_background_thread(
    seeded: Database,
    listener: Any,
    deliver: Any,  # noqa: F811
) -> None:
    for n in range(5):  # back to back: most fall in the first one's 10 ms window
        deliver(
            event_body(f"evt_coalesce_bg_{n}", "signed", previous="issued", occurred=at(10, 15))
        )
    received = 0
    while received < 2:  # the inline one, then (within 10 ms of the last commit) the trailing one
        listener.poll()
        received += len(listener.notifies)
        listener.notifies.clear()
        if received < 2:
            ready, _, _ = select_module.select([listener], [], [], WAKE_WITHIN_S)
            assert ready, "the owed notification never came"
