"""Operator commands: ``flask --app app <command>``. Each parses, calls a service, prints.

seed, prescribers set-credentials / list, clinics verify, worker, outbox
list-dead / list-blocked / requeue, webhooks list / replay, reconcile. Every
``--json`` output is ONE JSON document (an array, ``[]`` when empty), so that
``jq`` and scripts read it whole. Output names ids and statuses only. A
command that fails prints ONE line naming the cause (the setting, URL or
prescriber at fault) and exits non-zero, never a traceback: services raise
domain errors (``app.foundation.errors``) and :func:`_one_line_failures` turns
them, and an unreachable database, into that line.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import OperationalError

from app.foundation.connection_names import url_location
from app.foundation.db import utcnow
from app.foundation.errors import DomainError
from app.interfaces import audit_cli, identity_cli, keys_cli
from app.mechanisms.runtime import runtime
from app.services.credentials import credential_cipher, store_credentials, verify_credentials
from app.services.dead_letters import list_blocked, list_dead, requeue
from app.services.mail import confirm_sent
from app.services.operator_lists import list_inbox, list_prescribers
from app.services.seeding import run_seed_scripts

F = TypeVar("F", bound=Callable[..., Any])


def _print_rows(rows: list[dict[str, Any]], *, as_json: bool, empty: str) -> None:
    """Print ``rows``: one JSON array (``[]`` when empty) with ``as_json``, else one
    ``key=value`` line per row, or ``empty`` when there are none."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo("  ".join(f"{k}={v}" for k, v in row.items()))
    if not rows:
        click.echo(empty)


def _one_line_failures(command: F) -> F:
    """Turn a domain error or an unreachable database into one ``Error: ...`` line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DomainError as exc:
            raise click.ClickException(exc.message) from None
        except OperationalError as exc:
            # The URL may carry a password: name the setting, not its value.
            reason = type(exc.orig).__name__ if exc.orig is not None else "OperationalError"
            where = url_location(runtime().settings.database_url)
            raise click.ClickException(
                f"cannot reach the database at {where} (DATABASE_URL): {reason}"
            ) from None

    return wrapper  # type: ignore[return-value]


@click.command("seed")
@click.option(
    "--reference-only", is_flag=True, help="Load reference data only, no test prescriptions."
)
@with_appcontext
@_one_line_failures
def seed_command(reference_only: bool) -> None:
    """Run the SQL seed scripts (scripts/seed/*.sql, in name order). Safe to run twice."""
    for name in run_seed_scripts(runtime().db.engine, reference_only=reference_only):
        click.echo(f"seeded {name}")


prescribers = AppGroup("prescribers", help="Prescriber credentials.")


@prescribers.command("set-credentials")
@click.argument("email")
@click.option("--password", envvar="ERX_PRESCRIBER_PASSWORD", prompt=True, hide_input=True)
@click.option("--pin", envvar="ERX_PRESCRIBER_PIN", prompt=True, hide_input=True)
@click.option(
    "--verify",
    is_flag=True,
    help="Log in on the platform first; store nothing if the platform refuses.",
)
@_one_line_failures
def set_credentials(email: str, password: str, pin: str, verify: bool) -> None:
    """Encrypt and store a prescriber's platform password and secure PIN.

    Values come from a hidden prompt or ERX_PRESCRIBER_PASSWORD / ERX_PRESCRIBER_PIN,
    never from arguments (they would show in the process list). With --verify,
    one login is made first and refused credentials are not stored. Storing
    resumes the prescriber's sends parked in blocked_credentials.
    """
    if not password or not pin:
        raise click.UsageError("password and PIN must not be empty")
    svc = runtime()
    cipher = credential_cipher(svc.settings.encryption_keys)
    if verify:
        from app.services.connector_factory import make_client

        with make_client(svc.settings) as client:
            verify_credentials(
                svc.db,
                client,
                email,
                password=password,
                pin=pin,
                base_url=svc.settings.erx_base_url,
            )
    store_credentials(svc.db, cipher, email, password=password, pin=pin, now=utcnow())
    click.echo(f"credentials stored for prescriber {email}" + (" (verified)" if verify else ""))


@prescribers.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@_one_line_failures
def list_prescribers_command(as_json: bool) -> None:
    """List prescribers: login, name, clinic, and whether credentials are stored, blocked or missing."""
    rows = [row.as_dict() for row in list_prescribers(runtime().db)]
    _print_rows(rows, as_json=as_json, empty="no prescribers (run `flask --app app seed`)")


clinics = AppGroup("clinics", help="Clinic id mapping.")


@clinics.command("verify")
@click.argument("email")
@_one_line_failures
def verify_clinics_command(email: str) -> None:
    """Check every clinic's display id -> internal id mapping against GET /clinics (§3)."""
    from app.services.clinics import verify_clinics
    from app.services.connector_factory import make_client

    svc = runtime()
    checks = verify_clinics(
        svc.db,
        make_client(svc.settings),
        credential_cipher(svc.settings.encryption_keys),
        email,
        base_url=svc.settings.erx_base_url,
        now=utcnow(),
    )
    for check in checks:
        if check.platform_id is None:
            verdict = "NOT MAPPED (the platform does not list this display id)"
        else:
            verdict = ("ok (mapped now)" if check.mapped else "ok") if check.ok else "MISMATCH"
        click.echo(
            f"clinic display_id={check.display_id} platform_id={check.platform_id}: {verdict}"
        )
    bad = sum(not check.ok for check in checks)
    if bad:
        raise click.ClickException(f"{bad} clinic mapping(s) disagree with the platform")


@click.command("worker")
@click.option("--max-seconds", type=float, default=None, help="Stop after this many seconds.")
@click.option("--until-idle", is_flag=True, help="Stop when nothing is due.")
@click.option("--no-dispatch", is_flag=True, help="Only process the webhook inbox.")
@click.option("--no-inbox", is_flag=True, help="Only dispatch the outbox.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve this worker's /metrics on this port (default WORKER_METRICS_PORT; 0 = off).",
)
@with_appcontext
@_one_line_failures
def worker_command(
    max_seconds: float | None,
    until_idle: bool,
    no_dispatch: bool,
    no_inbox: bool,
    metrics_port: int | None,
) -> None:
    """Run a worker: dispatch the outbox and apply webhook events until SIGTERM."""
    from app.interfaces.worker import build_worker
    from app.mechanisms.metrics import serve_worker_metrics

    svc = runtime()
    port = svc.settings.worker_metrics_port if metrics_port is None else metrics_port
    if port:
        try:
            serve_worker_metrics(port)
        except OSError as exc:
            raise click.ClickException(
                f"cannot serve worker metrics on port {port} ({exc.strerror})"
            ) from None
        click.echo(f"worker metrics on :{port}/metrics")
    loop = build_worker(svc, dispatch=not no_dispatch, inbox=not no_inbox)
    loop.install_signal_handlers()
    loop.run(max_seconds=max_seconds, until_idle=until_idle)


outbox = AppGroup("outbox", help="The dispatch outbox and its dead letters.")


@outbox.command("list-dead")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@_one_line_failures
def list_dead_command(as_json: bool) -> None:
    """List dead-lettered sends: outbox id, prescription id, reference, attempts, last error."""
    rows = [letter.as_dict() for letter in list_dead(runtime().db)]
    _print_rows(rows, as_json=as_json, empty="no dead letters")


@outbox.command("list-blocked")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@_one_line_failures
def list_blocked_command(as_json: bool) -> None:
    """List sends parked because the platform refused their prescriber's login.

    They resume by themselves once `prescribers set-credentials` stores new credentials.
    """
    rows = [send.as_dict() for send in list_blocked(runtime().db)]
    _print_rows(rows, as_json=as_json, empty="no sends blocked on credentials")


@outbox.command("requeue")
@click.argument("outbox_id", type=int)
@_one_line_failures
def requeue_command(outbox_id: int) -> None:
    """Put a dead-lettered send back in the queue (attempts reset; a lookup still comes first)."""
    done = requeue(runtime().db, outbox_id, now=utcnow())
    click.echo(f"requeued outbox row {done.outbox_id} (prescription {done.prescription_id})")


@outbox.command("confirm-sent")
@click.argument("outbox_id", type=int)
@_one_line_failures
def confirm_sent_command(outbox_id: int) -> None:
    """Confirm that an email in doubt reached the pharmacy: records "emailed", sends nothing."""
    prescription_id = confirm_sent(runtime().db, outbox_id)
    click.echo(f"confirmed outbox row {outbox_id} as emailed (prescription {prescription_id})")


webhooks_group = AppGroup("webhooks", help="The webhook inbox.")


@webhooks_group.command("list")
@click.option(
    "--dead", is_flag=True, help="Only dead events (processing gave up; `webhooks replay`)."
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@_one_line_failures
def list_webhooks_command(dead: bool, limit: int, as_json: bool) -> None:
    """List stored webhook events, newest first: ids, type, state, attempts, times, last error.

    Bodies are never printed (they can carry patient details).
    """
    rows = [row.as_dict() for row in list_inbox(runtime().db, dead=dead, limit=limit)]
    _print_rows(
        rows, as_json=as_json, empty="no dead webhook events" if dead else "no webhook events"
    )


@webhooks_group.command("replay")
@click.argument("event_id", required=False)
@click.option("--dead", is_flag=True, help="Replay every dead event.")
@_one_line_failures
def replay(event_id: str | None, dead: bool) -> None:
    """Reprocess stored events: one EVENT_ID, or --dead. Never duplicates history."""
    from app.interfaces.worker import build_inbox_processor

    if bool(event_id) == dead:
        raise click.UsageError("give exactly one of EVENT_ID or --dead")
    results = build_inbox_processor(runtime()).replay(event_id=event_id, dead=dead)
    if event_id and not results:
        raise click.ClickException(f"no stored event {event_id}")
    for eid, state in results:
        click.echo(f"{eid}: {state}")


@click.command("reconcile")
@click.option(
    "--quiet-s",
    type=float,
    default=None,
    help="Seconds without events (default RECONCILE_AFTER_S).",
)
@click.option("--limit", type=int, default=500)
@with_appcontext
@_one_line_failures
def reconcile_command(quiet_s: float | None, limit: int) -> None:
    """Ask the platform about non-final prescriptions with no recent event; record what was missed."""
    from app.services.connector_factory import make_client
    from app.services.reconcile import reconcile

    svc = runtime()
    report = reconcile(
        svc.db,
        make_client(svc.settings),
        credential_cipher(svc.settings.encryption_keys),
        quiet_s=svc.settings.reconcile_after_s if quiet_s is None else quiet_s,
        limit=limit,
        base_url=svc.settings.erx_base_url,
    )
    click.echo(f"checked={report.checked} recorded={report.recorded} errors={report.errors}")
    if report.failures:
        more = f" (and {len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
        raise click.ClickException(f"{report.failures[0]}{more}")


def init_app(app: Flask) -> None:
    """Register the commands on ``app``."""
    for command in (
        seed_command,
        prescribers,
        clinics,
        worker_command,
        outbox,
        webhooks_group,
        reconcile_command,
    ):
        app.cli.add_command(command)
    app.cli.add_command(identity_cli.tokens)
    app.cli.add_command(audit_cli.audit)
    app.cli.add_command(keys_cli.keys)
    __import__("app.interfaces.events_cli", fromlist=["init_app"]).init_app(
        app
    )  # events publish, notify
