"""The event outbox: one event row per appended history row, in the same transaction; ordered publishing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pika
import pytest
from sqlalchemy import select

from app.foundation.models import EventOutbox, Prescription
from app.mechanisms.event_contract import validate_event
from app.mechanisms.event_outbox import rfc3339, routing_key
from app.mechanisms.history import Change, local, record
from app.services.event_publisher import BatchResult, EventPublisher, PublisherConfig
from tests.support import transition_of

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _events(db) -> list[EventOutbox]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return list(s.scalars(select(EventOutbox).order_by(EventOutbox.id)))


def test_each_appended_row_stages_one_valid_event_and_a_duplicate_none(seeded) -> None:  # type: ignore[no-untyped-def]
    with seeded.session() as s:
        rx = s.get(Prescription, 1)
        record(s, [Change(rx, local(rx, "queued", source="api", now=AT))])
        for _ in range(2):
            record(
                s,
                [
                    transition_of(
                        rx,
                        to_status="issued",
                        from_status="queued",
                        occurred_at=AT,
                        source="api",
                        received_at=AT + timedelta(seconds=1),
                    )
                ],
            )
        for _ in range(2):
            record(
                s,
                [
                    transition_of(
                        rx,
                        to_status="signed",
                        from_status="issued",
                        occurred_at=AT,
                        source="webhook",
                        event_id="evt-1",
                        received_at=AT,
                    )
                ],
            )
    events = _events(seeded)
    # Prescription 1 belongs to patient pt-0001, Region B (scripts/seed).
    assert [(e.routing_key, e.state) for e in events] == [
        (routing_key("B", status), "pending") for status in ("queued", "issued", "signed")
    ]
    bodies = [json.loads(e.payload) for e in events]
    for event, body in zip(events, bodies, strict=True):
        validate_event(body)
        assert body["event_id"] == event.event_id
        assert event.routing_key == routing_key(body["prescription"]["region"], body["to"])
    assert (bodies[0]["from"], bodies[0]["to"], bodies[0]["request_id"]) == (
        "draft",
        "queued",
        None,
    )
    assert bodies[1]["recorded_at"] == rfc3339(AT + timedelta(seconds=1))
    assert (bodies[2]["source"], bodies[2]["request_id"]) == ("webhook", "evt-1")


def test_a_rolled_back_transition_leaves_no_event(seeded) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError), seeded.session() as s:
        rx = s.get(Prescription, 2)
        record(s, [Change(rx, local(rx, "queued", source="api", now=AT))])
        raise RuntimeError("the caller's transaction fails after the append")
    assert _events(seeded) == []


def test_rfc3339_is_utc_with_z_and_refuses_naive_times() -> None:
    assert rfc3339(datetime(2026, 12, 1, 10, 0, tzinfo=UTC)) == "2026-12-01T10:00:00Z"
    with pytest.raises(ValueError):
        rfc3339(datetime(2026, 12, 1, 10, 0))  # noqa: DTZ001 - the point of the test


class FakeChannel:
    """Stands in for :class:`app.mechanisms.amqp.ConfirmingChannel`; nacks the message ids in ``nack``."""

    is_closed = False

    def __init__(self, nack: set[str] | None = None) -> None:
        self.sent: list[str] = []
        self.waves: list[list[str]] = []
        self.nack = nack or set()
        self._wave: list[str] = []

    def publish(
        self, *, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties
    ) -> None:
        self._wave.append(properties.message_id)

    def wait(self, timeout_s: float = 30.0) -> tuple[list[str], list[str]]:
        wave, self._wave = self._wave, []
        self.waves.append(wave)
        acked = [m for m in wave if m not in self.nack]
        self.sent += acked
        return acked, [m for m in wave if m in self.nack]


class FakePublisher(EventPublisher):
    def __init__(self, db, channel: FakeChannel, **kwargs) -> None:  # type: ignore[no-untyped-def]
        config = PublisherConfig(
            amqp_url="amqp://unused", exchange="x", dlx="y", backoff_base_s=2.0, backoff_cap_s=60.0
        )
        super().__init__(db, config, worker_id="w1", **kwargs)
        self.fake = channel

    def _open_channel(self):  # type: ignore[no-untyped-def]
        return self.fake


def _stage(db, pids: list[int], status: str) -> None:  # type: ignore[no-untyped-def]
    with db.session() as s:
        for pid in pids:
            rx = s.get(Prescription, pid)
            record(s, [Change(rx, local(rx, status, source="service", now=AT))])


def test_a_nacked_event_holds_back_the_rest_of_its_prescription_only(seeded) -> None:  # type: ignore[no-untyped-def]
    _stage(seeded, [1, 2], "queued")
    _stage(seeded, [1, 2], "rejected")
    events = _events(seeded)
    first_of_1 = events[0].event_id
    channel = FakeChannel(nack={first_of_1})
    now = datetime.now(UTC)
    publisher = FakePublisher(seeded, channel, now=lambda: now, rand=lambda: 0.25)
    result = publisher.run_batch()
    # Prescription 2's two events went out in order, one wave each (never two of one
    # prescription in flight); prescription 1's second waited for its first.
    assert channel.waves == [[events[0].event_id, events[1].event_id], [events[3].event_id]]
    assert channel.sent == [events[1].event_id, events[3].event_id]
    assert (result.published, result.deferred, result.dead) == (2, 2, 0)
    rows = {e.event_id: e for e in _events(seeded)}
    nacked = rows[first_of_1]
    assert (nacked.state, nacked.attempts, nacked.locked_by) == ("pending", 1, None)
    assert nacked.next_attempt_at == now + timedelta(seconds=0.25 * 2.0)  # full jitter, rand pinned
    assert (rows[events[2].event_id].state, rows[events[2].event_id].locked_by) == ("pending", None)

    # While the first is not due, its successor is still held back even though it is due.
    channel.nack.clear()
    assert publisher.run_batch().published == 0
    later = FakePublisher(seeded, channel, now=lambda: now + timedelta(seconds=1))
    assert later.run_batch().published == 2
    assert channel.sent[-2:] == [first_of_1, events[2].event_id]
    assert {e.state for e in _events(seeded)} == {"published"}


def test_an_event_that_breaks_its_contract_is_marked_dead_not_sent(seeded) -> None:  # type: ignore[no-untyped-def]
    _stage(seeded, [3], "queued")
    with seeded.session() as s:
        row = s.scalars(select(EventOutbox)).one()
        body = json.loads(row.payload)
        body["prescription"]["patient_name"] = "not allowed"
        row.payload = json.dumps(body)
    channel = FakeChannel()
    result = FakePublisher(seeded, channel).run_batch()
    assert (result.published, result.dead, channel.sent) == (0, 1, [])
    assert _events(seeded)[0].state == "dead"


def test_an_older_event_leased_by_another_publisher_holds_back_the_newer_one(seeded) -> None:  # type: ignore[no-untyped-def]
    _stage(seeded, [5], "queued")
    _stage(seeded, [5], "rejected")
    first, second = _events(seeded)
    now = datetime.now(UTC)
    with seeded.session() as s:  # another publisher holds the first one
        s.get(EventOutbox, first.id).locked_by = "other"
        s.get(EventOutbox, first.id).locked_until = now + timedelta(seconds=30)
    channel = FakeChannel()
    publisher = FakePublisher(seeded, channel, now=lambda: now)
    assert publisher.run_batch() == BatchResult(0, 1, 0)
    assert channel.sent == []
    held = {e.id: e for e in _events(seeded)}[second.id]
    assert (held.state, held.locked_by) == ("pending", None)  # its lease given back at once
    with seeded.session() as s:  # the other publisher died: its lease ran out
        s.get(EventOutbox, first.id).locked_until = now - timedelta(seconds=1)
    assert publisher.run_batch().published == 2
    assert channel.sent == [first.event_id, second.event_id]
