"""The reference consumer: the patient notification service's side of the events.

It binds a durable quorum queue (``NOTIFY_QUEUE``) to
``prescription.status_changed.*.{signed,dispensed,rejected}``, and for each
message, in ONE database transaction, records the ``message_id`` in its own
dedupe table (``notify_inbox``) and sends the patient an email through the
service's :class:`~app.services.mail.Mailer`. A redelivered or re-published
message finds its row and is only acknowledged. A message that fails
``NOTIFY_MAX_ATTEMPTS`` times is dead-lettered by the broker (the queue's
``x-delivery-limit``) to ``EVENTS_DLX`` and lands in ``<NOTIFY_QUEUE>.dlq``;
a message that does not match its contract goes there at once (retrying
cannot fix it). ``flask notify dlq list|replay`` inspects and replays it.

In production the notification service has its own database and patient
directory; here it shares the service's database as an example and test fixture.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import pika
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import select

from app.db import Database, insert_ignore, utcnow
from app.events.amqp import BROKER_ERRORS, close_quietly, connect, declare_exchanges
from app.events.contract import STATUS_CHANGED, ContractError, validate_event
from app.models import NotifyInbox, Patient, Prescription
from app.retry import RetryPolicy
from app.services.mail import Notice

log = logging.getLogger("app.events.notify")

NOTIFY_STATUSES = ("signed", "dispensed", "rejected")
SUBJECTS = {
    "signed": "Your prescription has been sent to your pharmacy",
    "dispensed": "Your prescription is ready to collect",
    "rejected": "We could not send your prescription",
}


class SendsEmail(Protocol):
    """What the consumer needs from a mailer: :meth:`app.services.mail.Mailer.send`."""

    def send(self, notice: Notice) -> str: ...


@dataclass(frozen=True, kw_only=True)
class NotifyConfig:
    """Consumer knobs: broker URL, exchange names, queue, attempts before the DLQ, prefetch."""

    amqp_url: str
    exchange: str
    dlx: str
    queue: str
    max_attempts: int = 5
    prefetch: int = 20
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0

    @property
    def dlq(self) -> str:
        """The dead-letter queue's name: ``<queue>.dlq``."""
        return f"{self.queue}.dlq"


def binding_keys() -> tuple[str, ...]:
    """The routing keys the notification queue binds: any region, three statuses."""
    return tuple(f"{STATUS_CHANGED}.*.{status}" for status in NOTIFY_STATUSES)


def declare_topology(channel: BlockingChannel, config: NotifyConfig) -> None:
    """Declare exchanges, the quorum queue with its delivery limit and DLX, the DLQ, bindings.

    ``x-delivery-limit`` counts returns: a message nacked ``max_attempts``
    times (returned ``max_attempts - 1`` times, then failing once more) is
    dead-lettered (RabbitMQ docs, "Quorum Queues", poison message handling).
    """
    declare_exchanges(channel, exchange=config.exchange, dlx=config.dlx)
    channel.queue_declare(queue=config.dlq, durable=True)
    channel.queue_bind(queue=config.dlq, exchange=config.dlx, routing_key="#")
    channel.queue_declare(
        queue=config.queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": max(0, config.max_attempts - 1),
            "x-dead-letter-exchange": config.dlx,
        },
    )
    for key in binding_keys():
        channel.queue_bind(queue=config.queue, exchange=config.exchange, routing_key=key)


class PatientNotifier:
    """Applies one message: dedupe + email, in one transaction. No broker code here."""

    def __init__(self, db: Database, mailer: SendsEmail, *, now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
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
            raise ContractError("message_id differs from event_id", {"$.event_id": "fails message_id"})
        ref = message["prescription"]
        with self.db.session() as session:
            found = session.execute(
                select(Patient.email).join(Prescription, Prescription.patient_id == Patient.id)
                .where(Prescription.id == ref["id"])
            ).first()
            email = found[0] if found else None
            outcome = "emailed" if email else "no_email"
            inserted = insert_ignore(session, NotifyInbox.__table__, {
                "message_id": message["event_id"],
                "prescription_id": ref["id"],
                "to_status": message["to"],
                "outcome": outcome,
                "occurred_at": datetime.fromisoformat(message["occurred_at"]),
                "processed_at": self.now(),
            })
            if not inserted:
                return "duplicate"
            if email:
                # Sent inside the transaction: if it raises, the dedupe row rolls back
                # and the message is retried. (A crash after the send but before the
                # commit re-sends it: the one at-least-once edge, docs/events.md.)
                self.mailer.send(Notice(
                    key=message["event_id"],
                    prescription_id=ref["id"],
                    to=email,
                    subject=SUBJECTS.get(message["to"], "Your prescription has changed"),
                    text=(f"Prescription {ref['reference']}: {SUBJECTS.get(message['to'], message['to'])}.\n"
                          "This message was sent automatically; please do not reply.\n"),
                ))
        log.info("notify %s prescription=%s to=%s: %s", message["event_id"], ref["id"], message["to"], outcome)
        return outcome


class NotifyConsumer:
    """Consumes the notification queue until :attr:`stop` is set; reconnects with backoff."""

    def __init__(
        self,
        notifier: PatientNotifier,
        config: NotifyConfig,
        *,
        rand: Callable[[], float] = random.random,
        stop: threading.Event | None = None,
    ) -> None:
        self.notifier = notifier
        self.config = config
        self.rand = rand
        # The shared retry policy (app/retry.py); nothing here is ever given up on, so no attempt cap.
        self.retry = RetryPolicy(
            base_s=self.config.backoff_base_s, cap_s=self.config.backoff_cap_s, max_attempts=2**31, rand=rand
        )
        self.stop = stop or threading.Event()
        self.handled = 0

    def _on_message(self, channel: BlockingChannel, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        try:
            self.notifier.handle(body, props.message_id)
        except ContractError as exc:
            log.error("poison message %s (%s): dead-lettered", props.message_id, exc)
            channel.basic_nack(method.delivery_tag, requeue=False)
        except Exception as exc:  # noqa: BLE001 - any failure: let the broker count and retry
            log.warning("message %s failed (%s); returned to the queue", props.message_id, type(exc).__name__)
            channel.basic_nack(method.delivery_tag, requeue=True)
        else:
            channel.basic_ack(method.delivery_tag)
        self.handled += 1

    def run(self, *, max_seconds: float | None = None, idle_s: float | None = None) -> None:
        """Consume until stopped, ``max_seconds`` pass, or no message came for ``idle_s`` seconds."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        failures = 0
        last_activity = time.monotonic()
        log.info("notify consumer started")
        while not self.stop.is_set():
            connection = None
            try:
                connection = connect(self.config.amqp_url, name=f"erx-notify-consumer {self.config.queue}")
                channel = connection.channel()
                declare_topology(channel, self.config)
                channel.basic_qos(prefetch_count=self.config.prefetch)
                channel.basic_consume(self.config.queue, self._on_message)
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
                delay = self.retry.delay_s(failures + 1)
                failures += 1
                log.warning("broker unavailable (%s); reconnect %d in %.2f s", type(exc).__name__, failures, delay)
                self.stop.wait(delay)
            finally:
                close_quietly(connection)
        log.info("notify consumer stopped")


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
    return key, reason.decode() if isinstance(reason, bytes) else str(reason), sum(int(d.get("count", 1)) for d in deaths)


def list_dead_letters(config: NotifyConfig) -> list[DeadLetter]:
    """Read every message in the DLQ without removing it (each is returned afterwards).

    Raises one of :data:`BROKER_ERRORS` when the broker is unreachable.
    """
    connection = connect(config.amqp_url, name=f"erx-notify-dlq {config.queue}")
    try:
        channel = connection.channel()
        declare_topology(channel, config)
        found: list[DeadLetter] = []
        while True:
            method, props, _body = channel.basic_get(config.dlq, auto_ack=False)
            if method is None:
                break
            key, reason, deaths = _death(props, method.routing_key)
            found.append(DeadLetter(props.message_id, key, reason, deaths))
        # Closing the channel returns every unacknowledged message to the DLQ.
        return found
    finally:
        close_quietly(connection)


def replay_dead_letters(config: NotifyConfig, *, message_ids: set[str] | None) -> list[str]:
    """Move DLQ messages (all, or those in ``message_ids``) back to the notification queue.

    Each is re-published, with confirms, straight to the notification queue
    (default exchange), so other consumers of the events exchange never see it
    twice; its death history is dropped so it gets ``max_attempts`` fresh tries.
    The DLQ copy is acknowledged only after the confirm. Returns the replayed ids.
    """
    connection = connect(config.amqp_url, name=f"erx-notify-dlq {config.queue}")
    replayed: list[str] = []
    try:
        channel = connection.channel()
        declare_topology(channel, config)
        channel.confirm_delivery()
        while True:
            method, props, body = channel.basic_get(config.dlq, auto_ack=False)
            if method is None:
                break
            if message_ids is not None and props.message_id not in message_ids:
                continue  # left unacknowledged: back in the DLQ when the channel closes
            headers = {k: v for k, v in (props.headers or {}).items() if not k.startswith("x-")}
            channel.basic_publish(
                exchange="",
                routing_key=config.queue,
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
