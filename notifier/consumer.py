"""The reference consumer: one event in, at most one patient notice out, exactly once per event.

It consumes its durable quorum queue (``NOTIFY_QUEUE``), bound to
``prescription.status_changed.*.{signed,dispensed,rejected,emailed}``
(:mod:`contracts.event_topology`, which the publisher declares too, so events
published before this consumer first ran are waiting for it). For each
message, in ONE database transaction, it records the ``message_id`` in its
own dedupe table (``notifier_inbox``) and sends the patient a notice. A
redelivered or re-published message finds its row and is only acknowledged.
A message that fails ``NOTIFY_MAX_ATTEMPTS`` times is dead-lettered by the
broker (the queue's ``x-delivery-limit``) to ``EVENTS_DLX`` and lands in
``<NOTIFY_QUEUE>.dlq``; a message that does not match its contract goes there
at once (retrying cannot fix it). ``python -m notifier dlq list|replay``
inspects and replays it.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pika
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import Engine

from contracts.event_schemas import ContractError, validate_event
from contracts.event_topology import EventTopology, declare, event_topology
from notifier.broker import BROKER_ERRORS, close_quietly, connect, unreachable
from notifier.mailer import Notice
from notifier.settings import NotifierSettings
from notifier.store import patient_email, record_once

log = logging.getLogger("notifier.consumer")

SUBJECTS = {
    "signed": "Your prescription has been sent to your pharmacy",
    "emailed": "Your prescription has been sent to your pharmacy",
    "dispensed": "Your prescription is ready to collect",
    "rejected": "We could not send your prescription",
}
"""What the patient is told for each status the queue binds (plain words, no PHI)."""


class SendsNotices(Protocol):
    """What the consumer needs from a mailer: :meth:`notifier.mailer.NoticeMailer.send`."""

    def send(self, notice: Notice) -> str: ...


def topology_of(settings: NotifierSettings) -> EventTopology:
    """The exchanges, the notification queue and its DLQ, as the publisher declares them."""
    return event_topology(
        exchange=settings.exchange,
        dlx=settings.dlx,
        notify_queue=settings.queue,
        notify_max_attempts=settings.max_attempts,
    )


def backoff_s(failures: int, *, base_s: float, cap_s: float, rand: Callable[[], float]) -> float:
    """Full jitter: ``rand() * min(cap_s, base_s * 2**(failures - 1))`` seconds (``failures`` >= 1).

    AWS Architecture Blog, "Exponential Backoff And Jitter" (2015).
    """
    return rand() * min(cap_s, base_s * 2 ** max(0, failures - 1))


class PatientNotifier:
    """Applies one message: dedupe + notice, in one transaction. No broker code here."""

    def __init__(
        self,
        engine: Engine,
        mailer: SendsNotices,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.mailer = mailer
        self.now = now

    def handle(self, body: bytes, message_id: str | None) -> str:
        """Handle one message body; returns ``emailed``, ``no_email`` or ``duplicate``.

        Raises :class:`ContractError` for a message that is not a valid v1
        event (or whose ``message_id`` differs from its ``event_id``): a poison
        message. Any other exception (mail server down, database error) means
        "try again"; nothing was recorded.
        """
        try:
            message: dict[str, Any] = json.loads(body)
        except ValueError:
            raise ContractError("message is not JSON", {"$": "fails json"}) from None
        validate_event(message)
        if message_id != message["event_id"]:
            raise ContractError(
                "message_id differs from event_id", {"$.event_id": "fails message_id"}
            )
        ref = message["prescription"]
        with self.engine.begin() as conn:
            email = patient_email(conn, ref["id"])
            outcome = "emailed" if email else "no_email"
            inserted = record_once(
                conn,
                {
                    "message_id": message["event_id"],
                    "prescription_id": ref["id"],
                    "to_status": message["to"],
                    "outcome": outcome,
                    "occurred_at": datetime.fromisoformat(message["occurred_at"]),
                    "processed_at": self.now(),
                },
            )
            if not inserted:
                return "duplicate"
            if email:
                # Sent inside the transaction: if it raises, the dedupe row rolls back
                # and the message is retried. (A crash after the send but before the
                # commit re-sends it: the one at-least-once edge, docs/events.md.)
                subject = SUBJECTS.get(message["to"], "Your prescription has changed")
                self.mailer.send(
                    Notice(
                        key=message["event_id"],
                        prescription_id=ref["id"],
                        to=email,
                        subject=subject,
                        text=(
                            f"Prescription {ref['reference']}: {subject}.\n"
                            "This message was sent automatically; please do not reply.\n"
                        ),
                    )
                )
        log.info(
            "notify %s prescription=%s to=%s: %s",
            message["event_id"],
            ref["id"],
            message["to"],
            outcome,
        )
        return outcome


class NotifyConsumer:
    """Consumes the notification queue until :attr:`stop` is set; reconnects with backoff."""

    def __init__(
        self,
        notifier: PatientNotifier,
        settings: NotifierSettings,
        *,
        rand: Callable[[], float] = random.random,
        stop: threading.Event | None = None,
    ) -> None:
        self.notifier = notifier
        self.settings = settings
        self.rand = rand
        self.stop = stop or threading.Event()
        self.handled = 0

    def _on_message(
        self, channel: BlockingChannel, method: Any, props: pika.BasicProperties, body: bytes
    ) -> None:
        try:
            self.notifier.handle(body, props.message_id)
        except ContractError as exc:
            log.error("poison message %s (%s): dead-lettered", props.message_id, exc)
            channel.basic_nack(method.delivery_tag, requeue=False)
        except Exception as exc:  # noqa: BLE001 - any failure: let the broker count and retry
            log.warning(
                "message %s failed (%s); returned to the queue",
                props.message_id,
                type(exc).__name__,
            )
            channel.basic_nack(method.delivery_tag, requeue=True)
        else:
            channel.basic_ack(method.delivery_tag)
        self.handled += 1

    def run(self, *, max_seconds: float | None = None, idle_s: float | None = None) -> None:
        """Consume until stopped, ``max_seconds`` pass, or no message came for ``idle_s`` seconds.

        A broker failure never ends the loop: it waits :func:`backoff_s` (on
        :attr:`stop`, so SIGTERM still ends it at once) and reconnects.
        """
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        failures = 0
        last_activity = time.monotonic()
        log.info("notifier started: queue %s", self.settings.queue)
        while not self.stop.is_set():
            connection = None
            try:
                connection = connect(
                    self.settings.amqp_url, name=f"erx-notifier {self.settings.queue}"
                )
                channel = connection.channel()
                declare(channel, topology_of(self.settings))
                channel.basic_qos(prefetch_count=self.settings.prefetch)
                channel.basic_consume(self.settings.queue, self._on_message)
                failures = 0
                while not self.stop.is_set():
                    before = self.handled
                    connection.process_data_events(time_limit=0.1)
                    now = time.monotonic()
                    if self.handled != before:
                        last_activity = now
                    if deadline is not None and now >= deadline:
                        self.stop.set()
                    if idle_s is not None and now - last_activity >= idle_s:
                        self.stop.set()
            except BROKER_ERRORS as exc:
                failures += 1
                delay = backoff_s(
                    failures,
                    base_s=self.settings.backoff_base_s,
                    cap_s=self.settings.backoff_cap_s,
                    rand=self.rand,
                )
                log.warning(
                    "%s; reconnect %d in %.2f s",
                    unreachable(self.settings.amqp_url, exc),
                    failures,
                    delay,
                )
                self.stop.wait(delay)
            finally:
                close_quietly(connection)
        log.info("notifier stopped")


@dataclass(frozen=True)
class DeadLetter:
    """One message in the DLQ: its id, original routing key, why and how often it died."""

    message_id: str | None
    routing_key: str
    reason: str
    deaths: int


def _death(props: pika.BasicProperties, fallback_key: str) -> tuple[str, str, int]:
    deaths = (props.headers or {}).get("x-death") or []
    if not deaths:
        return fallback_key, "unknown", 0
    first = deaths[0]
    keys = first.get("routing-keys") or [fallback_key]
    key = keys[0].decode() if isinstance(keys[0], bytes) else keys[0]
    reason = first.get("reason", b"unknown")
    return (
        key,
        reason.decode() if isinstance(reason, bytes) else str(reason),
        sum(int(d.get("count", 1)) for d in deaths),
    )


def list_dead_letters(settings: NotifierSettings) -> list[DeadLetter]:
    """Read every message in the DLQ without removing it (each is returned afterwards).

    Raises one of :data:`BROKER_ERRORS` when the broker is unreachable.
    """
    connection = connect(settings.amqp_url, name=f"erx-notifier-dlq {settings.queue}")
    try:
        channel = connection.channel()
        declare(channel, topology_of(settings))
        found: list[DeadLetter] = []
        while True:
            method, props, _body = channel.basic_get(settings.dlq, auto_ack=False)
            if method is None:
                break
            key, reason, deaths = _death(props, method.routing_key)
            found.append(DeadLetter(props.message_id, key, reason, deaths))
        # Closing the channel returns every unacknowledged message to the DLQ.
        return found
    finally:
        close_quietly(connection)


def replay_dead_letters(settings: NotifierSettings, *, message_ids: set[str] | None) -> list[str]:
    """Move DLQ messages (all, or those in ``message_ids``) back to the notification queue.

    Each is re-published, with confirms, straight to the notification queue
    (default exchange), so other consumers of the events exchange never see it
    twice; its death history is dropped so it gets ``max_attempts`` fresh tries.
    The DLQ copy is acknowledged only after the confirm. Returns the replayed ids.
    """
    connection = connect(settings.amqp_url, name=f"erx-notifier-dlq {settings.queue}")
    replayed: list[str] = []
    try:
        channel = connection.channel()
        declare(channel, topology_of(settings))
        channel.confirm_delivery()
        while True:
            method, props, body = channel.basic_get(settings.dlq, auto_ack=False)
            if method is None:
                break
            if message_ids is not None and props.message_id not in message_ids:
                continue  # left unacknowledged: back in the DLQ when the channel closes
            headers = {k: v for k, v in (props.headers or {}).items() if not k.startswith("x-")}
            channel.basic_publish(
                exchange="",
                routing_key=settings.queue,
                body=body,
                properties=pika.BasicProperties(
                    content_type=props.content_type,
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=props.message_id,
                    type=props.type,
                    timestamp=props.timestamp,
                    app_id=props.app_id,
                    headers=headers,
                ),
            )
            channel.basic_ack(method.delivery_tag)
            replayed.append(props.message_id or "")
        return replayed
    finally:
        close_quietly(connection)
