"""Commands for the events: ``flask --app app events publish`` and ``events teardown``.

``events publish`` runs the publisher (a Deployment of its own in production).
The reference consumer is a separate program, ``python -m notifier``
(docs/events.md). Output names ids only; a broker that cannot be reached is
one line on stderr naming its host and port, and exit status 1.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

import click
from flask import Flask
from flask.cli import AppGroup

from app.foundation.config import Settings
from app.mechanisms import wakeup as queue_wakeup
from app.mechanisms.amqp import BROKER_ERRORS, delete_topology, unreachable
from app.mechanisms.runtime import runtime
from app.services.event_publisher import EventPublisher, PublisherConfig


def publisher_config(settings: Settings) -> PublisherConfig:
    """The publisher's knobs from the service settings (EVENTS_*, NOTIFY_QUEUE, AMQP_URL)."""
    return PublisherConfig(
        amqp_url=settings.amqp_url,
        exchange=settings.events_exchange,
        dlx=settings.events_dlx,
        notify_queue=settings.notify_queue,
        notify_max_attempts=settings.notify_max_attempts,
        batch=settings.events_batch,
        lease_s=settings.events_lease_s,
        poll_s=settings.events_poll_s,
        backoff_base_s=settings.events_backoff_base_s,
        backoff_cap_s=settings.events_backoff_cap_s,
    )


def _stop_on_signals(stop: threading.Event, interrupt: Callable[[], None] | None = None) -> None:
    # SIGTERM (kubectl, the stack) and SIGINT: finish the batch in hand, then stop;
    # ``interrupt`` ends an idle wait on a LISTEN connection at once.
    def _handler(_signum: int, _frame: object) -> None:
        stop.set()
        if interrupt is not None:
            interrupt()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


events_group = AppGroup("events", help="Status events out over RabbitMQ (docs/events.md).")


@events_group.command("publish")
@click.option("--max-seconds", type=float, default=None, help="Stop after this many seconds.")
@click.option("--until-idle", is_flag=True, help="Stop when nothing is due.")
@click.option(
    "--exit-after-confirms",
    type=int,
    default=None,
    hidden=True,
    help="Test hook: die (exit 137) after N confirms, before marking them.",
)
def publish_command(
    max_seconds: float | None, until_idle: bool, exit_after_confirms: int | None
) -> None:
    """Publish the event outbox to the events exchange until SIGTERM."""
    from app.interfaces.worker import worker_id

    svc = runtime()
    stop = threading.Event()
    confirms = 0

    def crash_hook(_row_id: int) -> None:
        nonlocal confirms
        confirms += 1
        if exit_after_confirms is not None and confirms >= exit_after_confirms:
            os._exit(137)  # the chaos test's "killed between publish and mark"

    waiter = queue_wakeup.waiter_for(
        svc.settings.worker_wakeup, svc.db.engine, [queue_wakeup.EVENTS_CHANNEL], stop
    )
    publisher = EventPublisher(
        svc.db,
        publisher_config(svc.settings),
        worker_id=worker_id(),
        stop=stop,
        after_confirm=crash_hook if exit_after_confirms is not None else None,
        waiter=waiter,
    )
    _stop_on_signals(stop, waiter.interrupt)
    publisher.run(max_seconds=max_seconds, until_idle=until_idle)


@events_group.command("teardown")
def events_teardown() -> None:
    """Delete this configuration's exchanges and queues (EVENTS_EXCHANGE, EVENTS_DLX, NOTIFY_QUEUE).

    For throwaway names (the demo, tests); refused in production.
    """
    settings = runtime().settings
    if settings.env == "production":
        raise click.ClickException("events teardown is refused when ERX_ENV=production")
    queues = (
        (settings.notify_queue, f"{settings.notify_queue}.dlq") if settings.notify_queue else ()
    )
    try:
        delete_topology(
            settings.amqp_url,
            exchanges=(settings.events_exchange, settings.events_dlx),
            queues=queues,
        )
    except BROKER_ERRORS as exc:
        raise click.ClickException(unreachable(settings.amqp_url, exc)) from None
    deleted = ", ".join((settings.events_exchange, settings.events_dlx, *queues))
    click.echo(f"deleted {deleted}")


def init_app(app: Flask) -> None:
    """Register ``events`` on ``app`` (called from :func:`app.interfaces.cli.init_app`)."""
    app.cli.add_command(events_group)
