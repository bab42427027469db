"""The durable RabbitMQ topology of the status events, shared by the publisher and its consumers.

RabbitMQ drops a message published to a topic exchange when no queue is
bound to its routing key (RabbitMQ docs, "Exchanges": unroutable messages are
dropped unless published as mandatory). So the publisher declares, before its
first publish, the exchanges, the reference consumer's durable queue with its
bindings, and that queue's dead-letter queue: events published before the
consumer ever ran wait in its queue instead of being lost. The consumer
declares the same topology, so either may start first. Both must declare a
queue with identical arguments (RabbitMQ refuses a redeclaration with other
arguments: ``PRECONDITION_FAILED``), which is why the declaration lives here
once.

Pure: no broker client is imported; :func:`declare` takes any channel with
pika's ``BlockingChannel`` method signatures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from contracts.event_schemas import STATUS_CHANGED

NOTIFIED_STATUSES = ("signed", "dispensed", "rejected", "emailed")
"""The statuses a patient is told of: the reference consumer's bindings (any region).

``emailed`` is Region A's "sent to your pharmacy"; ``signed`` is Region B's.
"""


class DeclaringChannel(Protocol):
    """What :func:`declare` needs: pika ``BlockingChannel``'s declare and bind methods."""

    def exchange_declare(self, *, exchange: str, exchange_type: str, durable: bool) -> Any: ...

    def queue_declare(
        self, *, queue: str, durable: bool, arguments: dict[str, Any] | None
    ) -> Any: ...

    def queue_bind(self, *, queue: str, exchange: str, routing_key: str) -> Any: ...


@dataclass(frozen=True, kw_only=True)
class ConsumerQueue:
    """One consumer's durable queue: its name, arguments and the routing keys it binds."""

    name: str
    arguments: dict[str, Any]
    binding_keys: tuple[str, ...]

    @property
    def dlq(self) -> str:
        """Its dead-letter queue: ``<name>.dlq``, bound to the dead-letter exchange with ``#``."""
        return f"{self.name}.dlq"


@dataclass(frozen=True, kw_only=True)
class EventTopology:
    """The events exchange, the dead-letter exchange (both topic, durable) and consumer queues."""

    exchange: str
    dlx: str
    queues: tuple[ConsumerQueue, ...] = ()


def notification_binding_keys() -> tuple[str, ...]:
    """``prescription.status_changed.*.<status>`` for each of :data:`NOTIFIED_STATUSES`."""
    return tuple(f"{STATUS_CHANGED}.*.{status}" for status in NOTIFIED_STATUSES)


def notification_queue(*, name: str, dlx: str, max_attempts: int) -> ConsumerQueue:
    """The reference consumer's quorum queue (``NOTIFY_QUEUE``).

    ``x-delivery-limit`` counts returns: a message nacked ``max_attempts``
    times (returned ``max_attempts - 1`` times, then failing once more) is
    dead-lettered to ``dlx`` (RabbitMQ docs, "Quorum Queues", poison message
    handling). ``max_attempts`` is ``NOTIFY_MAX_ATTEMPTS`` (at least 1).
    """
    return ConsumerQueue(
        name=name,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": max(0, max_attempts - 1),
            "x-dead-letter-exchange": dlx,
        },
        binding_keys=notification_binding_keys(),
    )


def event_topology(
    *, exchange: str, dlx: str, notify_queue: str, notify_max_attempts: int
) -> EventTopology:
    """The topology the publisher declares before publishing.

    ``notify_queue`` empty means no reference consumer in this deployment: only
    the exchanges are declared (messages then reach whatever queues other
    consumers bound themselves).
    """
    queues: tuple[ConsumerQueue, ...] = ()
    if notify_queue:
        queues = (notification_queue(name=notify_queue, dlx=dlx, max_attempts=notify_max_attempts),)
    return EventTopology(exchange=exchange, dlx=dlx, queues=queues)


def declare(channel: DeclaringChannel, topology: EventTopology) -> None:
    """Declare ``topology`` on ``channel``: exchanges, each DLQ, each queue and its bindings.

    Idempotent for identical arguments. Raises the channel's error (pika:
    ``ChannelClosedByBroker`` 406 ``PRECONDITION_FAILED``) when a queue exists
    with other arguments, e.g. after ``NOTIFY_MAX_ATTEMPTS`` changed
    (docs/events.md says how to change it).
    """
    channel.exchange_declare(exchange=topology.exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(exchange=topology.dlx, exchange_type="topic", durable=True)
    for queue in topology.queues:
        channel.queue_declare(queue=queue.dlq, durable=True, arguments=None)
        channel.queue_bind(queue=queue.dlq, exchange=topology.dlx, routing_key="#")
        channel.queue_declare(queue=queue.name, durable=True, arguments=dict(queue.arguments))
        for key in queue.binding_keys:
            channel.queue_bind(queue=queue.name, exchange=topology.exchange, routing_key=key)
