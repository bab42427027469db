"""Commands for the events: ``flask --app app events publish`` and ``flask --app app notify``.

``events publish`` runs the publisher (a Deployment of its own in k8s/);
``notify`` runs the reference consumer, and ``notify dlq list|replay``
inspects and replays its dead letters. Output names ids only; a broker that
cannot be reached is one line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from app import queue_wakeup
from app.config import Settings
from app.connection_names import broker_unreachable
from app.events.amqp import BROKER_ERRORS, delete_topology, queue_exists
from app.events.notify import (
    NotifyConfig,
    NotifyConsumer,
    PatientNotifier,
    list_dead_letters,
    replay_dead_letters,
)
from app.events.publisher import EventPublisher, PublisherConfig
from app.extensions import services


def publisher_config(settings: Settings) -> PublisherConfig:
    """The publisher's knobs from the service settings (EVENTS_*, AMQP_URL)."""
    return PublisherConfig(
        amqp_url=settings.amqp_url,
        exchange=settings.events_exchange,
        dlx=settings.events_dlx,
        batch=settings.events_batch,
        lease_s=settings.events_lease_s,
        poll_s=settings.events_poll_s,
        backoff_base_s=settings.events_backoff_base_s,
        backoff_cap_s=settings.events_backoff_cap_s,
    )


def notify_config(settings: Settings) -> NotifyConfig:
    """The reference consumer's knobs from the service settings (NOTIFY_*, EVENTS_*, AMQP_URL)."""
    return NotifyConfig(
        amqp_url=settings.amqp_url,
        exchange=settings.events_exchange,
        dlx=settings.events_dlx,
        queue=settings.notify_queue,
        max_attempts=settings.notify_max_attempts,
        backoff_base_s=settings.events_backoff_base_s,
        backoff_cap_s=settings.events_backoff_cap_s,
    )


def _stop_on_signals(stop: threading.Event, interrupt: Callable[[], None] | None = None) -> None:
    # SIGTERM (kubectl, the stack) and SIGINT: finish the message/batch in hand, then stop;
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
@click.option("--exit-after-confirms", type=int, default=None, hidden=True,
              help="Test hook: die (exit 137) after N confirms, before marking them.")
def publish_command(max_seconds: float | None, until_idle: bool, exit_after_confirms: int | None) -> None:
    """Publish the event outbox to the events exchange until SIGTERM."""
    from app.worker import worker_id

    svc = services()
    stop = threading.Event()
    confirms = 0

    def crash_hook(_row_id: int) -> None:
        nonlocal confirms
        confirms += 1
        if exit_after_confirms is not None and confirms >= exit_after_confirms:
            os._exit(137)  # the chaos test's "killed between publish and mark"

    waiter = queue_wakeup.waiter_for(svc.settings.worker_wakeup, svc.db.engine, [queue_wakeup.EVENTS_CHANNEL], stop)
    publisher = EventPublisher(
        svc.db, publisher_config(svc.settings), worker_id=worker_id(), stop=stop,
        after_confirm=crash_hook if exit_after_confirms is not None else None, waiter=waiter,
    )
    _stop_on_signals(stop, waiter.interrupt)
    publisher.run(max_seconds=max_seconds, until_idle=until_idle)


@click.group("notify", cls=AppGroup, invoke_without_command=True)
@click.option("--max-seconds", type=float, default=None, help="Stop after this many seconds.")
@click.option("--idle-s", type=float, default=None, help="Stop after this many seconds without a message.")
@click.pass_context
@with_appcontext
def notify_group(ctx: click.Context, max_seconds: float | None, idle_s: float | None) -> None:
    """Run the reference consumer (patient notifications) until SIGTERM; or a dlq command."""
    if ctx.invoked_subcommand is not None:
        return
    from app.services.mail import Mailer

    svc = services()
    stop = threading.Event()
    consumer = NotifyConsumer(PatientNotifier(svc.db, Mailer(svc.settings)), notify_config(svc.settings), stop=stop)
    _stop_on_signals(stop)
    consumer.run(max_seconds=max_seconds, idle_s=idle_s)


dlq_group = AppGroup("dlq", help="The notification consumer's dead letters.")
notify_group.add_command(dlq_group)


@dlq_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array ([] when empty).")
def dlq_list(as_json: bool) -> None:
    """List dead-lettered messages: message id, routing key, reason, deaths. Leaves them in place."""
    try:
        letters = list_dead_letters(notify_config(services().settings))
    except BROKER_ERRORS as exc:
        raise click.ClickException(broker_unreachable(exc, services().settings.amqp_url)) from None
    items = [{"message_id": letter.message_id, "routing_key": letter.routing_key,
              "reason": letter.reason, "deaths": letter.deaths} for letter in letters]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for item in items:
        click.echo("  ".join(f"{k}={v}" for k, v in item.items()))
    if not letters:
        click.echo("no dead letters")


@dlq_group.command("replay")
@click.argument("message_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
def dlq_replay(message_ids: tuple[str, ...], replay_all: bool) -> None:
    """Send dead letters (MESSAGE_ID..., or --all) back to the notification queue."""
    if bool(message_ids) == replay_all:
        raise click.UsageError("give MESSAGE_ID(s) or --all, not both")
    try:
        replayed = replay_dead_letters(notify_config(services().settings),
                                       message_ids=None if replay_all else set(message_ids))
    except BROKER_ERRORS as exc:
        raise click.ClickException(broker_unreachable(exc, services().settings.amqp_url)) from None
    missing = set(message_ids) - set(replayed)
    for message_id in replayed:
        click.echo(f"replayed {message_id}")
    if missing:
        raise click.ClickException(f"not in the dead-letter queue: {', '.join(sorted(missing))}")
    if not replayed:
        click.echo("no dead letters")


@notify_group.command("wait-ready")
@click.option("--timeout", "timeout_s", type=float, default=20.0, show_default=True, help="Seconds to wait.")
def notify_wait_ready(timeout_s: float) -> None:
    """Wait until the consumer has declared NOTIFY_QUEUE (messages published before that are not kept)."""
    config = notify_config(services().settings)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if queue_exists(config.amqp_url, config.queue):
                click.echo(f"queue {config.queue} is ready")
                return
        except BROKER_ERRORS as exc:
            raise click.ClickException(broker_unreachable(exc, config.amqp_url)) from None
        if time.monotonic() >= deadline:
            raise click.ClickException(f"queue {config.queue} was not declared within {timeout_s:g} s (NOTIFY_QUEUE)")
        time.sleep(0.3)


@events_group.command("teardown")
def events_teardown() -> None:
    """Delete this configuration's exchanges and queues (EVENTS_EXCHANGE, EVENTS_DLX, NOTIFY_QUEUE).

    For throwaway names (the demo, tests); refused in production.
    """
    settings = services().settings
    if settings.env == "production":
        raise click.ClickException("events teardown is refused when ERX_ENV=production")
    config = notify_config(settings)
    try:
        delete_topology(config.amqp_url, exchanges=(config.exchange, config.dlx),
                        queues=(config.queue, config.dlq))
    except BROKER_ERRORS as exc:
        raise click.ClickException(broker_unreachable(exc, config.amqp_url)) from None
    click.echo(f"deleted {config.exchange}, {config.dlx}, {config.queue} and its dead-letter queue")


def init_app(app: Flask) -> None:
    """Register ``events`` and ``notify`` on ``app`` (called from :func:`app.cli.init_app`)."""
    app.cli.add_command(events_group)
    app.cli.add_command(notify_group)
