"""Status events over a real RabbitMQ: one valid v1 message per transition, routed by region.

Also the reference consumer's dead-letter path: a poison message lands in the
DLQ after NOTIFY_MAX_ATTEMPTS attempts and replays cleanly.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
from datetime import UTC, datetime, timedelta

import pika
import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import func, select

from app import create_app
from app.foundation.db import Database
from app.foundation.models import EventOutbox, Patient, Prescription, StatusHistory
from app.interfaces.events_cli import publisher_config
from app.mechanisms.amqp import connect
from app.mechanisms.event_contract import validate_event
from app.mechanisms.history import Change, local, record
from app.mechanisms.wakeup import EVENTS_CHANNEL, WakeupWaiter
from app.services.event_publisher import EventPublisher
from notifier.cli import main as notifier_main
from notifier.consumer import NotifyConsumer, PatientNotifier
from notifier.mailer import Notice, NoticeMailer
from notifier.store import open_engine
from tests.integration import events_support
from tests.integration.conftest import wait_until, worker_threads
from tests.integration.events_support import (
    Capture,
    EventNames,
    empty_notifier_inbox,
    event_settings,
    notifier_rows,
    notifier_settings,
)
from tests.integration.test_end_to_end import region_b_draft, view
from tests.support import transition_of

pytestmark = pytest.mark.integration
amqp_url = events_support.amqp_url
event_names = events_support.event_names
# For the tests that need no broker: nothing is ever declared under these names.
UNUSED_NAMES = EventNames("erx.events.never", "erx.events.dlq.never", "erx.notify.never")


@pytest.fixture
def live_settings(db_url, tmp_path, sandbox, amqp_url, event_names):  # type: ignore[no-untyped-def]
    # Overrides the integration conftest's: the same service, plus this run's event names.
    return event_settings(
        db_url, amqp_url, event_names, tmp_path / "mail", erx_base_url=sandbox.url
    )


def publish_all(db: Database, settings) -> None:  # type: ignore[no-untyped-def]
    """Run one publisher until the outbox is empty."""
    EventPublisher(db, publisher_config(settings), worker_id="test-publisher").run(
        until_idle=True, max_seconds=30
    )


def test_each_transition_of_the_flow_is_one_valid_v1_message_with_its_routing_key(
    live, live_settings, seeded, sandbox
):
    capture = Capture(
        live_settings.amqp_url, live_settings.events_exchange, "prescription.status_changed.#"
    )
    try:
        sandbox.control(auto=True, auto_delay_s=0.2, auto_skip_printed_rate=0.0)
        pid, reference, pharmacy_id = region_b_draft(seeded)
        resp = requests.post(
            f"{live.url}/api/v1/prescriptions/{pid}/send",
            json={"pharmacy_id": pharmacy_id},
            headers=live.auth(),
            timeout=10,
        )
        assert resp.status_code == 202
        with worker_threads(live_settings, seeded):
            wait_until(lambda: view(live, pid)["status"] == "dispensed", timeout_s=30)
        publish_all(seeded, live_settings)
        got = capture.drain()
    finally:
        capture.close()

    with seeded.session() as s:
        history = s.execute(
            select(StatusHistory.from_status, StatusHistory.to_status, StatusHistory.source)
            .where(StatusHistory.prescription_id == pid)
            .order_by(StatusHistory.id)
        ).all()
    assert [(h.from_status, h.to_status) for h in history] == [
        ("draft", "queued"),
        ("queued", "issued"),
        ("issued", "signed"),
        ("signed", "printed"),
        ("printed", "dispensed"),
    ]
    assert len(got) == len(history)  # exactly one message per appended row
    for (key, props, body), row in zip(got, history, strict=True):
        validate_event(body)
        assert key == f"prescription.status_changed.B.{row.to_status}"
        assert (body["from"], body["to"], body["source"]) == (
            row.from_status,
            row.to_status,
            row.source,
        )
        assert body["prescription"] == {
            "id": pid,
            "reference": reference,
            "region": "B",
            "route": "erx",
            "pharmacy_id": pharmacy_id,
        }
        assert props.message_id == body["event_id"]
        assert props.content_type == "application/json"
        assert props.delivery_mode == pika.DeliveryMode.Persistent.value
        assert props.headers == {"type": "prescription.status_changed", "version": 1}
    # The platform's webhook event id travels as the request id of webhook-caused events.
    assert all(body["request_id"] for _k, _p, body in got if body["source"] == "webhook")
    with seeded.session() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(EventOutbox)
                .where(EventOutbox.state != "published")
            )
            == 0
        )


def _drafts(db: Database, region: str, count: int) -> list[int]:
    with db.session() as s:
        return list(
            s.scalars(
                select(Prescription.id)
                .join(Patient, Patient.id == Prescription.patient_id)
                .where(Patient.region_code == region)
                .order_by(Prescription.id)
                .limit(count)
            )
        )


def test_a_consumer_bound_to_one_region_sees_only_its_own(
    seeded, tmp_path, db_url, amqp_url, event_names
):
    settings = event_settings(db_url, amqp_url, event_names, tmp_path / "mail")
    only_a = Capture(amqp_url, event_names.exchange, "prescription.status_changed.A.#")
    only_b = Capture(amqp_url, event_names.exchange, "prescription.status_changed.B.*")
    try:
        ids = {"A": _drafts(seeded, "A", 3), "B": _drafts(seeded, "B", 3)}
        with seeded.session() as s:
            for region_ids in ids.values():
                for pid in region_ids:
                    rx = s.get(Prescription, pid)
                    record(s, [Change(rx, local(rx, "queued", source="api"))])
        publish_all(seeded, settings)
        got_a, got_b = only_a.drain(), only_b.drain()
    finally:
        only_a.close()
        only_b.close()
    assert sorted(b["prescription"]["id"] for _k, _p, b in got_a) == ids["A"]
    assert sorted(b["prescription"]["id"] for _k, _p, b in got_b) == ids["B"]
    assert {k for k, _p, _b in got_a} == {"prescription.status_changed.A.queued"}
    assert {b["prescription"]["route"] for _k, _p, b in got_a} == {"email"}


def test_a_duplicate_transition_publishes_nothing_more(
    seeded, tmp_path, db_url, amqp_url, event_names
):
    settings = event_settings(db_url, amqp_url, event_names, tmp_path / "mail")
    capture = Capture(amqp_url, event_names.exchange, "#")
    try:
        pid = _drafts(seeded, "B", 1)[0]
        at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
        for _ in range(2):  # a redelivered webhook: recorded once, published once
            with seeded.session() as s:
                rx = s.get(Prescription, pid)
                record(
                    s,
                    [
                        transition_of(
                            rx,
                            to_status="signed",
                            from_status="issued",
                            occurred_at=at,
                            source="webhook",
                            event_id="evt-dup-1",
                        )
                    ],
                )
        publish_all(seeded, settings)
        got = capture.drain()
    finally:
        capture.close()
    assert [(b["to"], b["request_id"]) for _k, _p, b in got] == [("signed", "evt-dup-1")]


class FlakyMailer:
    """Fails every send to ``poison_to`` prescriptions until ``healed``; counts attempts."""

    def __init__(self, inner: NoticeMailer, poison_prescription: int) -> None:
        self.inner = inner
        self.poison = poison_prescription
        self.healed = False
        self.attempts: dict[int, int] = {}

    def send(self, notice: Notice) -> str:
        self.attempts[notice.prescription_id] = self.attempts.get(notice.prescription_id, 0) + 1
        if notice.prescription_id == self.poison and not self.healed:
            raise ConnectionRefusedError("mail server down for this test")
        return self.inner.send(notice)


def test_a_poison_message_lands_in_the_dlq_after_n_attempts_and_replays_cleanly(
    seeded, tmp_path, db_url, amqp_url, event_names
):
    settings = event_settings(
        db_url, amqp_url, event_names, tmp_path / "mail", notify_max_attempts=3
    )
    nsettings = notifier_settings(settings)
    empty_notifier_inbox(db_url)
    poison, healthy = _drafts(seeded, "B", 2)
    mailer = FlakyMailer(NoticeMailer(nsettings), poison)

    with seeded.session() as s:
        for pid in (poison, healthy):
            rx = s.get(Prescription, pid)
            record(s, [Change(rx, local(rx, "rejected", source="service"))])
    publish_all(seeded, settings)  # declares the notifier's queue before publishing
    # A message that is not a valid event at all: dead-lettered at once, not retried.
    connection = connect(amqp_url, name=f"erx-tests {event_names.queue}")
    connection.channel().basic_publish(
        event_names.exchange,
        "prescription.status_changed.B.signed",
        b"{not json",
        pika.BasicProperties(message_id="garbage-1"),
    )
    connection.close()

    stop = threading.Event()
    engine = open_engine(db_url)
    consumer = NotifyConsumer(PatientNotifier(engine, mailer), nsettings, stop=stop)
    thread = threading.Thread(target=consumer.run, kwargs={"max_seconds": 60}, daemon=True)
    thread.start()
    try:
        runner = CliRunner()

        def dead() -> list[dict]:
            result = runner.invoke(notifier_main, ["dlq", "list", "--json"], obj=nsettings)
            assert result.exit_code == 0, result.output
            return json.loads(result.stdout)

        wait_until(lambda: len(dead()) == 2 and mailer.attempts.get(healthy) == 1, timeout_s=30)
        letters = {d["message_id"]: d for d in dead()}
        assert mailer.attempts[poison] == 3  # NOTIFY_MAX_ATTEMPTS, then the DLQ
        with seeded.session() as s:
            poison_event = s.scalar(
                select(EventOutbox.event_id).where(EventOutbox.prescription_id == poison)
            )
        assert set(letters) == {poison_event, "garbage-1"}
        assert letters[poison_event]["reason"] == "delivery_limit"
        assert letters[poison_event]["routing_key"] == "prescription.status_changed.B.rejected"
        assert letters["garbage-1"]["reason"] == "rejected"
        assert notifier_rows(db_url, prescription_ids=[poison]) == []

        mailer.healed = True
        result = runner.invoke(notifier_main, ["dlq", "replay", poison_event], obj=nsettings)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"replayed {poison_event}"
        wait_until(lambda: mailer.attempts[poison] == 4, timeout_s=30)
        wait_until(lambda: [d["message_id"] for d in dead()] == ["garbage-1"], timeout_s=10)
        rows = notifier_rows(db_url, prescription_ids=[poison, healthy])
        assert sorted(r.outcome for r in rows) == ["emailed", "emailed"]
        assert (tmp_path / "mail" / f"notify-{poison_event}.eml").exists()
        missing = runner.invoke(notifier_main, ["dlq", "replay", "no-such-id"], obj=nsettings)
        assert missing.exit_code == 1
        assert (
            missing.output.strip().splitlines()[-1]
            == "Error: not in the dead-letter queue: no-such-id"
        )
    finally:
        stop.set()
        thread.join(10)
        engine.dispose()


def test_dlq_commands_fail_in_one_line_naming_host_and_port_when_the_broker_is_unreachable(
    seeded, tmp_path, db_url
):
    from scripts.stack import free_port

    port = free_port()
    settings = event_settings(
        db_url, f"amqp://guest:s3cret@127.0.0.1:{port}/%2F", UNUSED_NAMES, tmp_path / "mail"
    )
    result = CliRunner().invoke(notifier_main, ["dlq", "list"], obj=notifier_settings(settings))
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == f"Error: RabbitMQ unreachable at 127.0.0.1:{port} (AMQPConnectionError)"
    )
    # The service's own command says it the same way, and neither prints the credentials.
    teardown = create_app(settings, db=seeded).test_cli_runner().invoke(args=["events", "teardown"])
    assert teardown.exit_code == 1
    assert (
        teardown.output.strip()
        == f"Error: RabbitMQ unreachable at 127.0.0.1:{port} (AMQPConnectionError)"
    )
    assert (
        "s3cret" not in result.output + teardown.output
        and "guest" not in result.output + teardown.output
    )


def test_events_wait_in_the_outbox_while_the_broker_is_down(seeded, tmp_path, db_url, caplog):
    from scripts.stack import free_port

    port = free_port()
    settings = event_settings(
        db_url,
        f"amqp://guest:s3cret@127.0.0.1:{port}/%2F",
        UNUSED_NAMES,
        tmp_path / "mail",
        events_backoff_base_s=1.0,
        events_backoff_cap_s=8.0,
    )
    pid = _drafts(seeded, "A", 1)[0]
    with seeded.session() as s:
        rx = s.get(Prescription, pid)
        record(s, [Change(rx, local(rx, "queued", source="api"))])

    class CountingStop(threading.Event):
        """Records each backoff wait instead of sleeping; stops after four."""

        def __init__(self) -> None:
            super().__init__()
            self.waits: list[float] = []

        def wait(self, timeout: float | None = None) -> bool:
            self.waits.append(timeout or 0.0)
            if len(self.waits) >= 4:
                self.set()
            return self.is_set()

    stop = CountingStop()
    EventPublisher(
        seeded, publisher_config(settings), worker_id="t", stop=stop, rand=lambda: 0.5
    ).run()
    # Full jitter with rand 0.5: half of min(cap, base * 2**n).
    assert stop.waits == [0.5, 1.0, 2.0, 4.0]
    # The operator reads where the broker was expected, never its credentials.
    assert f"RabbitMQ unreachable at 127.0.0.1:{port} (AMQPConnectionError); retry 4" in caplog.text
    assert "s3cret" not in caplog.text
    with seeded.session() as s:
        row = s.scalars(select(EventOutbox)).one()
    assert (row.state, row.attempts, row.locked_by) == ("pending", 0, None)
    assert row.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=1)


def test_a_listening_publisher_sends_a_committed_event_long_before_its_poll(
    seeded, tmp_path, db_url, amqp_url, event_names
):
    if not seeded.is_postgres:
        pytest.skip("NOTIFY is PostgreSQL-only; SQLite polls (the other tests here)")
    settings = event_settings(db_url, amqp_url, event_names, tmp_path / "mail", events_poll_s=60.0)
    capture = Capture(amqp_url, event_names.exchange, "prescription.status_changed.#")
    stop = threading.Event()
    waiter = WakeupWaiter(seeded.engine, [EVENTS_CHANNEL], stop)
    publisher = EventPublisher(
        seeded, publisher_config(settings), worker_id="t-wake", stop=stop, waiter=waiter
    )
    thread = threading.Thread(target=publisher.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: waiter._conn is not None, timeout_s=10)  # noqa: SLF001 - LISTEN issued
        pid = _drafts(seeded, "A", 1)[0]
        with seeded.session() as s:
            rx = s.get(Prescription, pid)
            record(s, [Change(rx, local(rx, "queued", source="api"))])
        got: list = []
        # Far inside the 60 s poll: only the NOTIFY can have woken it.
        wait_until(lambda: bool(got.extend(capture.drain()) or got), timeout_s=10)
    finally:
        publisher.request_stop()  # ends the 60 s wait at once
        thread.join(10)
        capture.close()
    assert not thread.is_alive()
    assert [(b["prescription"]["id"], b["to"]) for _k, _p, b in got] == [(pid, "queued")]


def test_events_published_before_the_notifier_ever_ran_wait_for_it_and_region_a_emailed_notifies(
    seeded, tmp_path, db_url, amqp_url, event_names
):
    # The README's order: the publisher runs first. Nothing has declared the notifier's
    # queue yet; the publisher declares it (with its bindings) before it publishes.
    settings = event_settings(db_url, amqp_url, event_names, tmp_path / "mail")
    empty_notifier_inbox(db_url)
    region_a, region_b = _drafts(seeded, "A", 1)[0], _drafts(seeded, "B", 1)[0]
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    with seeded.session() as s:
        rx = s.get(Prescription, region_a)
        record(s, [Change(rx, local(rx, "queued", source="api"))])
        rx = s.get(Prescription, region_a)
        record(s, [Change(rx, local(rx, "emailed", source="service"))])
        rx = s.get(Prescription, region_b)
        record(s, [Change(rx, local(rx, "queued", source="api"))])
        record(s, [Change(rx, local(rx, "issued", source="service"))])
    for n, status in enumerate(("signed", "dispensed")):
        with seeded.session() as s:
            rx = s.get(Prescription, region_b)
            record(
                s,
                [
                    transition_of(
                        rx,
                        to_status=status,
                        from_status=rx.status,
                        occurred_at=at + timedelta(minutes=n),
                        source="webhook",
                        event_id=f"evt-first-{status}",
                    )
                ],
            )
    publish_all(seeded, settings)
    with seeded.session() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(EventOutbox)
                .where(EventOutbox.state != "published")
            )
            == 0
        )

    # Only now does the notifier start, for the first time.
    nsettings = notifier_settings(settings)
    engine = open_engine(db_url)
    try:
        NotifyConsumer(PatientNotifier(engine, NoticeMailer(nsettings)), nsettings).run(
            max_seconds=30, idle_s=2.0
        )
    finally:
        engine.dispose()

    rows = notifier_rows(db_url, prescription_ids=[region_a, region_b])
    assert [
        (r.prescription_id, r.to_status, r.outcome) for r in rows if r.prescription_id == region_a
    ] == [(region_a, "emailed", "emailed")]
    assert [(r.to_status, r.outcome) for r in rows if r.prescription_id == region_b] == [
        ("signed", "emailed"),
        ("dispensed", "emailed"),
    ]
    # The Region A patient got a notice saying where the prescription went.
    with seeded.session() as s:
        emailed_event = s.scalar(
            select(EventOutbox.event_id).where(
                EventOutbox.prescription_id == region_a, EventOutbox.routing_key.like("%.A.emailed")
            )
        )
    notice = email.message_from_bytes(
        (tmp_path / "mail" / f"notify-{emailed_event}.eml").read_bytes(),
        policy=email.policy.default,
    )
    assert notice["Subject"] == "Your prescription has been sent to your pharmacy"
    assert notice["Message-ID"].strip() == f"<notice.{emailed_event}@erx-connector.example.test>"


def test_the_publisher_declares_the_notifier_queue_with_the_notifier_arguments(
    seeded, tmp_path, db_url, amqp_url, event_names
):
    # Publisher and notifier declare one topology (contracts.event_topology): a second
    # declaration with other arguments would be refused by the broker.
    settings = event_settings(
        db_url, amqp_url, event_names, tmp_path / "mail", notify_max_attempts=3
    )
    publish_all(seeded, settings)
    connection = connect(amqp_url, name=f"erx-tests {event_names.queue}")
    try:
        channel = connection.channel()
        for queue in (event_names.queue, event_names.dlq):
            assert channel.queue_declare(queue=queue, passive=True).method.message_count == 0
    finally:
        connection.close()
    nsettings = notifier_settings(settings)
    result = CliRunner().invoke(
        notifier_main, ["dlq", "list", "--json"], obj=nsettings
    )  # declares too
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
