"""``python -m notifier``: run the reference consumer, inspect what it handled, manage its DLQ.

- ``run [--max-seconds S] [--idle-s S]``: consume until SIGTERM (or the limits).
- ``received [--prescription ID] [--json]``: the messages handled (ids only).
- ``dlq list [--json]``, ``dlq replay MESSAGE_ID... | --all``: dead letters.

Output names ids only. A setting that is malformed, or a broker that cannot
be reached, is one line on stderr naming the cause, and exit status 1.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

import click
from sqlalchemy.exc import SQLAlchemyError

from notifier.broker import BROKER_ERRORS, unreachable
from notifier.consumer import (
    NotifyConsumer,
    PatientNotifier,
    list_dead_letters,
    replay_dead_letters,
)
from notifier.mailer import NoticeMailer
from notifier.settings import ConfigError, NotifierSettings, load_settings
from notifier.store import create_schema, open_engine, received, unavailable


def _settings(ctx: click.Context) -> NotifierSettings:
    settings: NotifierSettings = ctx.obj
    return settings


@click.group(help="The reference notification consumer of status events (docs/events.md).")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Load the settings once (unless given as ``obj``); commands read them from the context."""
    if isinstance(ctx.obj, NotifierSettings):
        return
    try:
        ctx.obj = load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("run")
@click.option("--max-seconds", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--idle-s", type=float, default=None, help="Stop after this many seconds without a message."
)
@click.pass_context
def run_command(ctx: click.Context, max_seconds: float | None, idle_s: float | None) -> None:
    """Consume NOTIFY_QUEUE until SIGTERM: dedupe each event, notify the patient."""
    settings = _settings(ctx)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    engine = open_engine(settings.database_url)
    try:
        create_schema(engine)
    except SQLAlchemyError as exc:
        raise click.ClickException(unavailable(engine, exc)) from None
    stop = threading.Event()

    def _handler(_signum: int, _frame: object) -> None:
        stop.set()  # finish the message in hand, then stop

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    consumer = NotifyConsumer(PatientNotifier(engine, NoticeMailer(settings)), settings, stop=stop)
    try:
        consumer.run(max_seconds=max_seconds, idle_s=idle_s)
    finally:
        engine.dispose()


@main.command("received")
@click.option(
    "--prescription", "prescription_id", type=int, default=None, help="Only this prescription id."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@click.pass_context
def received_command(ctx: click.Context, prescription_id: int | None, as_json: bool) -> None:
    """List the events handled, in order: event id, prescription id, status, outcome."""
    engine = open_engine(_settings(ctx).database_url)
    try:
        rows = received(engine, prescription_id=prescription_id)
    except SQLAlchemyError as exc:
        raise click.ClickException(unavailable(engine, exc)) from None
    finally:
        engine.dispose()
    items = [
        {
            "message_id": r.message_id,
            "prescription_id": r.prescription_id,
            "to": r.to_status,
            "outcome": r.outcome,
        }
        for r in rows
    ]
    _print_listing(items, as_json=as_json, empty="nothing received yet")


def _print_listing(items: list[dict[str, object]], *, as_json: bool, empty: str) -> None:
    """Print ``items`` as one JSON array (``[]`` when empty), or one ``key=value`` line each."""
    if as_json:
        click.echo(json.dumps(items))
        return
    for item in items:
        click.echo("  ".join(f"{k}={v}" for k, v in item.items()))
    if not items:
        click.echo(empty)


@main.group("dlq")
def dlq_group() -> None:
    """The notification queue's dead letters."""


@dlq_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@click.pass_context
def dlq_list(ctx: click.Context, as_json: bool) -> None:
    """List dead letters: message id, routing key, reason, deaths. Leaves them in place."""
    settings = _settings(ctx)
    try:
        letters = list_dead_letters(settings)
    except BROKER_ERRORS as exc:
        raise click.ClickException(unreachable(settings.amqp_url, exc)) from None
    items = [
        {
            "message_id": letter.message_id,
            "routing_key": letter.routing_key,
            "reason": letter.reason,
            "deaths": letter.deaths,
        }
        for letter in letters
    ]
    _print_listing(items, as_json=as_json, empty="no dead letters")


@dlq_group.command("replay")
@click.argument("message_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
@click.pass_context
def dlq_replay(ctx: click.Context, message_ids: tuple[str, ...], replay_all: bool) -> None:
    """Send dead letters (MESSAGE_ID..., or --all) back to the notification queue."""
    if bool(message_ids) == replay_all:
        raise click.UsageError("give MESSAGE_ID(s) or --all, not both")
    settings = _settings(ctx)
    try:
        replayed = replay_dead_letters(
            settings, message_ids=None if replay_all else set(message_ids)
        )
    except BROKER_ERRORS as exc:
        raise click.ClickException(unreachable(settings.amqp_url, exc)) from None
    missing = set(message_ids) - set(replayed)
    for message_id in replayed:
        click.echo(f"replayed {message_id}")
    if missing:
        raise click.ClickException(f"not in the dead-letter queue: {', '.join(sorted(missing))}")
    if not replayed:
        click.echo("no dead letters")
