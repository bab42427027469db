"""RabbitMQ connections and the topology the publisher and the consumer share (pika).

The exchange names come from settings (``EVENTS_EXCHANGE``, ``EVENTS_DLX``)
so that parallel test runs on one broker never collide; production uses
``erx.events`` and ``erx.events.dlq`` (docs/events.md).
"""

from __future__ import annotations

import pika
from pika.adapters.blocking_connection import BlockingChannel

# What a broker outage looks like to pika: connection/channel errors and socket errors.
BROKER_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)


def connect(url: str, *, name: str) -> pika.BlockingConnection:
    """Open a blocking connection to ``url`` (``amqp://user:pass@host:port/vhost``).

    ``name`` shows in the management UI / ``rabbitmqctl list_connections``.
    One connection attempt with short timeouts: the caller owns the retry
    policy. Raises one of :data:`BROKER_ERRORS` when the broker is unreachable.
    """
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5.0
    params.blocked_connection_timeout = 30.0
    params.heartbeat = 30
    params.client_properties = {"connection_name": name}
    return pika.BlockingConnection(params)


def declare_exchanges(channel: BlockingChannel, *, exchange: str, dlx: str) -> None:
    """Declare the durable topic exchange for events and the durable dead-letter exchange."""
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(exchange=dlx, exchange_type="topic", durable=True)


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Close ``connection`` if it is still open; errors of a dead connection are ignored."""
    if connection is None or connection.is_closed:
        return
    try:
        connection.close()
    except BROKER_ERRORS:
        pass
