"""The durable topology the publisher and the notifier both declare (contracts.event_topology)."""

from __future__ import annotations

from contracts.event_topology import declare, event_topology


class RecordingChannel:
    """Records declarations in order, as pika's BlockingChannel would receive them."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def exchange_declare(self, *, exchange: str, exchange_type: str, durable: bool) -> None:
        self.calls.append(("exchange", exchange, exchange_type, durable))

    def queue_declare(self, *, queue: str, durable: bool, arguments: dict | None) -> None:
        self.calls.append(("queue", queue, durable, arguments))

    def queue_bind(self, *, queue: str, exchange: str, routing_key: str) -> None:
        self.calls.append(("bind", queue, exchange, routing_key))


def test_the_notifier_queue_binds_every_status_a_patient_is_told_of_with_emailed() -> None:
    channel = RecordingChannel()
    declare(
        channel, event_topology(exchange="ex", dlx="dlx", notify_queue="q", notify_max_attempts=5)
    )
    assert channel.calls == [
        ("exchange", "ex", "topic", True),
        ("exchange", "dlx", "topic", True),
        ("queue", "q.dlq", True, None),
        ("bind", "q.dlq", "dlx", "#"),
        (
            "queue",
            "q",
            True,
            {"x-queue-type": "quorum", "x-delivery-limit": 4, "x-dead-letter-exchange": "dlx"},
        ),
        ("bind", "q", "ex", "prescription.status_changed.*.signed"),
        ("bind", "q", "ex", "prescription.status_changed.*.dispensed"),
        ("bind", "q", "ex", "prescription.status_changed.*.rejected"),
        ("bind", "q", "ex", "prescription.status_changed.*.emailed"),
    ]


def test_without_a_notifier_queue_only_the_exchanges_are_declared() -> None:
    channel = RecordingChannel()
    declare(
        channel, event_topology(exchange="ex", dlx="dlx", notify_queue="", notify_max_attempts=5)
    )
    assert [c[0] for c in channel.calls] == ["exchange", "exchange"]
