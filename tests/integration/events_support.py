"""Shared fixtures for the RabbitMQ event tests: a reachable broker, unique names, capture queues.

Every test run gets its own exchange, dead-letter exchange and queue names, so
parallel runs on one broker never see each other's messages; they are deleted
afterwards. Tests skip (with the reason) only when the broker cannot be reached.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
from sqlalchemy import delete

from app.foundation.config import Settings
from app.mechanisms.amqp import BROKER_ERRORS, close_quietly, connect
from notifier.settings import NotifierSettings
from notifier.store import create_schema, inbox, open_engine
from tests.conftest import make_settings

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


@dataclass(frozen=True)
class EventNames:
    """The per-run names: events exchange, dead-letter exchange, notification queue."""

    exchange: str
    dlx: str
    queue: str

    @property
    def dlq(self) -> str:
        return f"{self.queue}.dlq"


@pytest.fixture(scope="session")
def amqp_url() -> str:
    try:
        connection = connect(AMQP_URL, name="erx-tests probe")
    except BROKER_ERRORS as exc:
        pytest.skip(
            f"RabbitMQ not reachable at {AMQP_URL.split('@')[-1]} ({type(exc).__name__}); "
            "start it with `rabbitmq-server -detached` (.ci/run does)"
        )
    close_quietly(connection)
    return AMQP_URL


@pytest.fixture
def event_names(amqp_url: str) -> Iterator[EventNames]:
    suffix = uuid.uuid4().hex[:10]
    names = EventNames(
        f"erx.events.test-{suffix}", f"erx.events.dlq.test-{suffix}", f"erx.notify.test-{suffix}"
    )
    yield names
    connection = connect(amqp_url, name="erx-tests cleanup")
    try:
        channel = connection.channel()
        for queue in (names.queue, names.dlq):
            channel.queue_delete(queue=queue)
        for exchange in (names.exchange, names.dlx):
            channel.exchange_delete(exchange=exchange)
    finally:
        close_quietly(connection)


def event_settings(
    db_url: str, amqp_url: str, names: EventNames, mail_dir: Path, **overrides: object
) -> Settings:
    """Test settings with this run's exchange/queue names and fast backoff."""
    values: dict[str, object] = {
        "mail_dir": str(mail_dir),
        "amqp_url": amqp_url,
        "events_exchange": names.exchange,
        "events_dlx": names.dlx,
        "notify_queue": names.queue,
        "notify_max_attempts": 3,
        "events_poll_s": 0.02,
        "events_backoff_base_s": 0.05,
        "events_backoff_cap_s": 0.5,
    }
    values.update(overrides)
    return make_settings(db_url, **values)


def event_env(settings: Settings) -> dict[str, str]:
    """Environment for ``flask --app app events publish`` / ``python -m notifier`` subprocesses."""
    from scripts.stack import base_env

    return base_env(
        ERX_ENV="test",
        DATABASE_URL=settings.database_url,
        MAIL_DIR=settings.mail_dir,
        AMQP_URL=settings.amqp_url,
        EVENTS_EXCHANGE=settings.events_exchange,
        EVENTS_DLX=settings.events_dlx,
        NOTIFY_QUEUE=settings.notify_queue,
        NOTIFY_MAX_ATTEMPTS=str(settings.notify_max_attempts),
        EVENTS_POLL_S=str(settings.events_poll_s),
        EVENTS_BACKOFF_BASE_S=str(settings.events_backoff_base_s),
        EVENTS_BACKOFF_CAP_S=str(settings.events_backoff_cap_s),
    )


def notifier_settings(settings: Settings, **overrides: object) -> NotifierSettings:
    """The notifier's settings matching ``settings``: broker names, database, mail dir."""
    values: dict[str, object] = {
        "database_url": settings.database_url,
        "amqp_url": settings.amqp_url,
        "exchange": settings.events_exchange,
        "dlx": settings.events_dlx,
        "queue": settings.notify_queue,
        "max_attempts": settings.notify_max_attempts,
        "backoff_base_s": settings.events_backoff_base_s,
        "backoff_cap_s": settings.events_backoff_cap_s,
        "mail_dir": settings.mail_dir,
    }
    values.update(overrides)
    return NotifierSettings(**values)  # type: ignore[arg-type]


def empty_notifier_inbox(db_url: str) -> None:
    """Create the notifier's table if missing and empty it (the service's fixtures skip it)."""
    engine = open_engine(db_url)
    try:
        create_schema(engine)
        with engine.begin() as conn:
            conn.execute(delete(inbox))
    finally:
        engine.dispose()


def notifier_rows(db_url: str, *, prescription_ids: list[int] | None = None) -> list:
    """The notifier's inbox rows (message_id, prescription_id, to_status, outcome), in order."""
    from sqlalchemy import select

    engine = open_engine(db_url)
    try:
        statement = select(
            inbox.c.message_id, inbox.c.prescription_id, inbox.c.to_status, inbox.c.outcome
        ).order_by(inbox.c.id)
        if prescription_ids is not None:
            statement = statement.where(inbox.c.prescription_id.in_(prescription_ids))
        with engine.connect() as conn:
            return list(conn.execute(statement).all())
    finally:
        engine.dispose()


class Capture:
    """An exclusive, server-named queue bound to ``exchange`` with ``patterns``; drains it."""

    def __init__(self, amqp_url: str, exchange: str, *patterns: str) -> None:
        self.connection = connect(amqp_url, name=f"erx-tests capture {exchange}")
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
        self.queue = self.channel.queue_declare(queue="", exclusive=True).method.queue
        for pattern in patterns:
            self.channel.queue_bind(queue=self.queue, exchange=exchange, routing_key=pattern)

    def drain(self) -> list[tuple[str, pika.BasicProperties, dict]]:
        """Every message queued so far: (routing key, properties, decoded body)."""
        got = []
        while True:
            method, props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return got
            got.append((method.routing_key, props, json.loads(body)))

    def close(self) -> None:
        close_quietly(self.connection)


def close_connections_named(fragment: str) -> int:
    """Close only this run's broker connections (``rabbitmqctl close_connection``); a count.

    Less disruptive than ``close_all_connections``, which would also cut other
    test runs sharing the broker.
    """
    listing = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "list_connections",
            "pid",
            "client_properties",
            "--formatter",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    closed = 0
    for conn in json.loads(listing.stdout or "[]"):
        props = conn.get("client_properties")
        text = json.dumps(props)
        if fragment in text:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", conn["pid"], "chaos test"],
                capture_output=True,
                check=False,
                timeout=60,
            )
            closed += 1
    return closed
