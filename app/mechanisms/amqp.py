"""RabbitMQ connections and the topology the publisher and the consumer share (pika).

The exchange names come from settings (``EVENTS_EXCHANGE``, ``EVENTS_DLX``)
so that parallel test runs on one broker never collide; production uses
``erx.events`` and ``erx.events.dlq`` (docs/events.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pika

from app.foundation.connection_names import url_location

# What a broker outage looks like to pika: connection/channel errors and socket errors.
BROKER_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)


def connection_parameters(url: str, *, name: str) -> pika.URLParameters:
    """Parameters for ``url`` (``amqp://user:pass@host:port/vhost``): one attempt, short timeouts.

    ``name`` shows in the management UI / ``rabbitmqctl list_connections``.
    The caller owns the retry policy.
    """
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5.0
    params.blocked_connection_timeout = 30.0
    params.heartbeat = 30
    params.client_properties = {"connection_name": name}
    return params


def connect(url: str, *, name: str) -> pika.BlockingConnection:
    """Open a blocking connection to ``url`` (see :func:`connection_parameters`).

    Raises one of :data:`BROKER_ERRORS` when the broker is unreachable.
    """
    return pika.BlockingConnection(connection_parameters(url, name=name))


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Close ``connection`` if it is still open; errors of a dead connection are ignored."""
    if connection is None or connection.is_closed:
        return
    try:
        connection.close()
    except BROKER_ERRORS:
        pass


class ConfirmTimeout(pika.exceptions.AMQPError):
    """The broker did not answer (a confirm, a declare, the handshake) in time: it is broken."""


def unreachable(url: str, exc: BaseException) -> str:
    """The one line for a broker that cannot be reached: address and error class, no credentials.

    ``RabbitMQ unreachable at 127.0.0.1:5672 (AMQPConnectionError)``.
    """
    return f"RabbitMQ unreachable at {url_location(url)} ({type(exc).__name__})"


class ConfirmingChannel:
    """A channel in publisher-confirm mode whose publishes do not each wait for their confirm.

    pika's ``BlockingChannel.confirm_delivery`` makes every ``basic_publish``
    wait for its own confirm: one broker round trip (and, for a durable queue,
    one disk sync) per message. Here a batch is published first and
    :meth:`wait` then collects the confirms (RabbitMQ confirms by delivery tag,
    one per publish since ``confirm.select``, possibly ``multiple``: RabbitMQ
    docs, "Consumer Acknowledgements and Publisher Confirms").

    Built on pika's asynchronous ``SelectConnection`` through its public API
    only: ``Channel.confirm_delivery(ack_nack_callback=...)`` for the confirms,
    and the I/O loop's ``start``/``stop``/``call_later``/``remove_timeout`` to
    run it until what we wait for has happened. The blocking-style
    :meth:`exchange_declare`, :meth:`queue_declare` and :meth:`queue_bind`
    let :func:`contracts.event_topology.declare` run on it.
    """

    def __init__(self, params: pika.ConnectionParameters, *, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._tag = 0
        self._outstanding: dict[int, str] = {}
        self._acked: list[str] = []
        self._nacked: list[str] = []
        self._error: BaseException | None = None
        self._selected = False
        self.channel: Any = None
        self.connection = pika.SelectConnection(
            params,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_connection_closed,
        )
        try:
            self._run_until(lambda: self._selected, what="connection and confirm.select")
        except BaseException:
            self.close()
            raise

    # -- callbacks (run inside the I/O loop) ------------------------------------------

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_selected)

    def _on_selected(self, _frame: Any) -> None:
        self._selected = True
        self._wake()

    def _on_open_error(self, _connection: Any, error: BaseException | str) -> None:
        self._error = (
            error
            if isinstance(error, BaseException)
            else pika.exceptions.AMQPConnectionError(error)
        )
        self._wake()

    def _on_connection_closed(self, _connection: Any, reason: BaseException) -> None:
        self._error = self._error or reason
        self._wake()

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        self._error = self._error or reason
        if self.connection.is_open:
            self.connection.close()
        self._wake()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if method.multiple:
            tags = [t for t in self._outstanding if t <= method.delivery_tag]
        else:
            tags = [method.delivery_tag]
        done = self._acked if isinstance(method, pika.spec.Basic.Ack) else self._nacked
        for tag in tags:
            message_id = self._outstanding.pop(tag, None)
            if message_id is not None:
                done.append(message_id)
        if not self._outstanding:
            self._wake()

    def _wake(self) -> None:
        self.connection.ioloop.stop()

    # -- driving the loop ---------------------------------------------------------------

    def _run_until(
        self, done: Callable[[], bool], *, what: str, timeout_s: float | None = None
    ) -> None:
        """Run the I/O loop until ``done()``; raises the broker's error or a timeout."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        ioloop = self.connection.ioloop
        while True:
            if self._error is not None:
                raise self._error
            if done():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConfirmTimeout(f"{what}: no answer from the broker in {limit:g} s")
            handle = ioloop.call_later(min(1.0, left), ioloop.stop)
            try:
                ioloop.start()
            finally:
                ioloop.remove_timeout(handle)

    def _call(self, method: Callable[..., Any], what: str, **kwargs: Any) -> Any:
        answers: list[Any] = []

        def answered(frame: Any) -> None:
            answers.append(frame)
            self._wake()

        method(callback=answered, **kwargs)
        self._run_until(lambda: bool(answers), what=what)
        return answers[0]

    @property
    def is_closed(self) -> bool:
        """True once the channel or its connection is gone (or failed)."""
        return (
            self._error is not None
            or self.connection.is_closed
            or self.channel is None
            or self.channel.is_closed
        )

    def service(self) -> None:
        """Let the connection do its housekeeping (heartbeats, a close from the broker); no wait.

        Raises the broker's error if the connection or the channel was closed.
        """
        ioloop = self.connection.ioloop
        handle = ioloop.call_later(0, ioloop.stop)
        try:
            ioloop.start()
        finally:
            ioloop.remove_timeout(handle)
        if self._error is not None:
            raise self._error

    # -- declarations (blocking, for contracts.event_topology.declare) -----------------

    def exchange_declare(self, *, exchange: str, exchange_type: str, durable: bool) -> None:
        """Declare an exchange and wait for the broker's answer."""
        self._call(
            self.channel.exchange_declare,
            f"exchange.declare {exchange}",
            exchange=exchange,
            exchange_type=exchange_type,
            durable=durable,
        )

    def queue_declare(self, *, queue: str, durable: bool, arguments: dict[str, Any] | None) -> None:
        """Declare a queue and wait for the broker's answer."""
        self._call(
            self.channel.queue_declare,
            f"queue.declare {queue}",
            queue=queue,
            durable=durable,
            arguments=arguments,
        )

    def queue_bind(self, *, queue: str, exchange: str, routing_key: str) -> None:
        """Bind ``queue`` to ``exchange`` with ``routing_key`` and wait for the broker's answer."""
        self._call(
            self.channel.queue_bind,
            f"queue.bind {queue}",
            queue=queue,
            exchange=exchange,
            routing_key=routing_key,
        )

    # -- publishing ---------------------------------------------------------------------

    def publish(
        self, *, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties
    ) -> None:
        """Queue one message (``properties.message_id`` names it in :meth:`wait`); does not wait.

        Raises pika's ``ChannelWrongStateError`` (one of :data:`BROKER_ERRORS`)
        on a closed channel.
        """
        if self._error is not None:
            raise self._error
        self.channel.basic_publish(
            exchange=exchange, routing_key=routing_key, body=body, properties=properties
        )
        self._tag += 1
        self._outstanding[self._tag] = properties.message_id or ""

    def wait(self, timeout_s: float = 30.0) -> tuple[list[str], list[str]]:
        """Send what :meth:`publish` queued and wait until all of it is confirmed.

        Returns (acked, nacked) message ids. Raises :class:`ConfirmTimeout`
        after ``timeout_s`` seconds, or one of :data:`BROKER_ERRORS` if the
        connection drops: then nothing unconfirmed may be assumed delivered.
        """
        self._run_until(
            lambda: not self._outstanding,
            what=f"{len(self._outstanding)} publisher confirms",
            timeout_s=timeout_s,
        )
        acked, nacked = self._acked, self._nacked
        self._acked, self._nacked = [], []
        return acked, nacked

    def close(self) -> None:
        """Close the connection (briefly waiting for the broker's close-ok) and release its I/O loop.

        Errors are ignored: a dead socket or a broker gone away leaves nothing to
        close politely. Safe to call more than once.
        """
        with contextlib.suppress(Exception):
            if not (self.connection.is_closed or self.connection.is_closing):
                self.connection.close()
            self._error = None
            if not self.connection.is_closed:
                self._run_until(
                    lambda: self.connection.is_closed, what="connection.close", timeout_s=2.0
                )
        # Each connection has its own I/O loop, holding a socket pair for wake-ups:
        # without this, every reconnect during an outage would leak two descriptors.
        with contextlib.suppress(Exception):
            self.connection.ioloop.close()


def queue_exists(url: str, queue: str) -> bool:
    """Whether ``queue`` is declared at ``url``. Raises ``BROKER_ERRORS`` when unreachable."""
    connection = connect(url, name="erx queue probe")
    try:
        connection.channel().queue_declare(queue=queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:  # 404 NOT_FOUND: not declared (yet)
        return False
    finally:
        close_quietly(connection)


def delete_topology(url: str, *, exchanges: tuple[str, ...], queues: tuple[str, ...]) -> None:
    """Delete ``queues`` then ``exchanges`` (missing ones are fine).

    Raises ``BROKER_ERRORS`` when unreachable.
    """
    connection = connect(url, name="erx topology cleanup")
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue=queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange=exchange)
    finally:
        close_quietly(connection)
