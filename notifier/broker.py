"""The notifier's RabbitMQ connections (pika) and the one-line message for an unreachable broker."""

from __future__ import annotations

import pika

# What a broker outage looks like to pika: connection/channel errors and socket errors.
BROKER_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)


def connect(url: str, *, name: str) -> pika.BlockingConnection:
    """Open a blocking connection to ``url`` (``amqp://user:pass@host:port/vhost``).

    ``name`` shows in ``rabbitmqctl list_connections``. One attempt with short
    timeouts: the caller owns the retry policy. Raises one of
    :data:`BROKER_ERRORS` when the broker is unreachable.
    """
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5.0
    params.blocked_connection_timeout = 30.0
    params.heartbeat = 30
    params.client_properties = {"connection_name": name}
    return pika.BlockingConnection(params)


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Close ``connection`` if it is still open; errors of a dead connection are ignored."""
    if connection is None or connection.is_closed:
        return
    try:
        connection.close()
    except BROKER_ERRORS:
        pass


def unreachable(url: str, exc: BaseException) -> str:
    """``RabbitMQ unreachable at <host>:<port> (<error class>)``: never the URL's credentials."""
    params = pika.URLParameters(url)
    return f"RabbitMQ unreachable at {params.host}:{params.port} ({type(exc).__name__})"
