"""RabbitMQ connections and the topology the publisher and the consumer share (pika).

The exchange names come from settings (``EVENTS_EXCHANGE``, ``EVENTS_DLX``)
so that parallel test runs on one broker never collide; production uses
``erx.events`` and ``erx.events.dlq`` (docs/events.md).
"""

from __future__ import annotations

import time
from typing import Any

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


def _nothing() -> None:
    return None


class ConfirmTimeout(pika.exceptions.AMQPError):
    """The broker did not confirm every publish in time: treat the connection as broken."""


class ConfirmingChannel:
    """A channel in publisher-confirm mode whose publishes do not each wait for their confirm.

    pika's ``BlockingChannel.confirm_delivery`` makes every ``basic_publish``
    wait for its own confirm: one broker round trip per message, which caps a
    publisher at 1/RTT messages per second. Here a batch is published first and
    :meth:`wait` then collects the confirms (RabbitMQ confirms by delivery tag,
    one per publish since ``confirm.select``, possibly ``multiple``: RabbitMQ
    docs, "Consumer Acknowledgements and Publisher Confirms"). The confirm
    callback is registered on the underlying channel (``BlockingChannel._impl``,
    pika 1.4.4 pinned), as pika's blocking adapter has no public hook for it.
    """

    def __init__(self, connection: pika.BlockingConnection, *, timeout_s: float = 30.0) -> None:
        self.connection = connection
        self.channel = connection.channel()
        self._tag = 0
        self._outstanding: dict[int, str] = {}
        self._acked: list[str] = []
        self._nacked: list[str] = []
        selected: list[bool] = []
        self.channel._impl.confirm_delivery(ack_nack_callback=self._on_confirm,
                                            callback=lambda _frame: selected.append(True))
        deadline = time.monotonic() + timeout_s
        while not selected:
            if time.monotonic() > deadline:
                raise ConfirmTimeout("confirm.select not answered")
            connection.process_data_events(time_limit=0.05)

    @property
    def is_closed(self) -> bool:
        """True once the channel or its connection is gone."""
        return self.channel.is_closed or self.connection.is_closed

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tags = [t for t in self._outstanding if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        done = self._acked if isinstance(method, pika.spec.Basic.Ack) else self._nacked
        for tag in tags:
            message_id = self._outstanding.pop(tag, None)
            if message_id is not None:
                done.append(message_id)
        if not self._outstanding:
            # A confirm on the underlying channel does not end process_data_events early
            # (only BlockingChannel events do); a ready connection callback does.
            self.connection.add_callback_threadsafe(_nothing)

    def publish(self, *, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties) -> None:
        """Send one message (``properties.message_id`` identifies it in :meth:`wait`); does not wait."""
        self._tag += 1
        self._outstanding[self._tag] = properties.message_id or ""
        # Queued on the underlying channel without a flush per message (BlockingChannel
        # flushes each one); :meth:`wait` sends the batch in one go.
        self.channel._impl.basic_publish(exchange=exchange, routing_key=routing_key, body=body, properties=properties)

    def wait(self, timeout_s: float = 30.0) -> tuple[list[str], list[str]]:
        """Wait until every publish so far is confirmed; returns (acked, nacked) message ids.

        Raises :class:`ConfirmTimeout` after ``timeout_s`` seconds, or one of
        :data:`BROKER_ERRORS` if the connection drops: then nothing unconfirmed
        may be assumed delivered.
        """
        deadline = time.monotonic() + timeout_s
        self.connection.process_data_events(time_limit=0)  # flush what publish() queued
        while self._outstanding:
            if self.is_closed:
                raise pika.exceptions.ChannelWrongStateError("channel closed with publishes unconfirmed")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConfirmTimeout(f"{len(self._outstanding)} publishes not confirmed in {timeout_s:.0f} s")
            self.connection.process_data_events(time_limit=min(1.0, left))
        acked, nacked = self._acked, self._nacked
        self._acked, self._nacked = [], []
        return acked, nacked


def queue_exists(url: str, queue: str) -> bool:
    """Whether ``queue`` is declared on the broker at ``url``. Raises ``BROKER_ERRORS`` when unreachable."""
    connection = connect(url, name="erx queue probe")
    try:
        connection.channel().queue_declare(queue=queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:  # 404 NOT_FOUND: not declared (yet)
        return False
    finally:
        close_quietly(connection)


def delete_topology(url: str, *, exchanges: tuple[str, ...], queues: tuple[str, ...]) -> None:
    """Delete ``queues`` then ``exchanges`` (missing ones are fine). Raises ``BROKER_ERRORS`` when unreachable."""
    connection = connect(url, name="erx topology cleanup")
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue=queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange=exchange)
    finally:
        close_quietly(connection)
