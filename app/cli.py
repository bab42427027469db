"""Operator commands: ``flask --app app <command>``.

seed, prescribers set-credentials, clinics verify, worker, outbox list-dead /
requeue, webhooks replay, reconcile. Output names ids and statuses only.
"""

from __future__ import annotations

import json

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from app.crypto import CredentialCipher
from app.db import utcnow
from app.extensions import services
from app.models import Clinic, DispatchOutbox, Prescriber, Prescription
from app.seeding import run_seed_scripts
from webhooks.history import record_local_status


@click.command("seed")
@click.option("--reference-only", is_flag=True, help="Load reference data only, no test prescriptions.")
@with_appcontext
def seed_command(reference_only: bool) -> None:
    """Run the SQL seed scripts (scripts/seed/*.sql, in name order). Safe to run twice."""
    for name in run_seed_scripts(services().db.engine, reference_only=reference_only):
        click.echo(f"seeded {name}")


prescribers = AppGroup("prescribers", help="Prescriber credentials.")


@prescribers.command("set-credentials")
@click.argument("email")
@click.option("--password", envvar="ERX_PRESCRIBER_PASSWORD", prompt=True, hide_input=True)
@click.option("--pin", envvar="ERX_PRESCRIBER_PIN", prompt=True, hide_input=True)
def set_credentials(email: str, password: str, pin: str) -> None:
    """Encrypt and store a prescriber's platform password and secure PIN.

    Values come from a hidden prompt or ERX_PRESCRIBER_PASSWORD / ERX_PRESCRIBER_PIN,
    never from arguments (they would show in the process list).
    """
    if not password or not pin:
        raise click.UsageError("password and PIN must not be empty")
    svc = services()
    cipher = CredentialCipher(svc.settings.encryption_keys)
    with svc.db.session() as session:
        prescriber = session.scalars(select(Prescriber).where(Prescriber.email == email)).first()
        if prescriber is None:
            raise click.ClickException(f"no prescriber with email {email}")
        prescriber.password_enc = cipher.encrypt(password)
        prescriber.pin_enc = cipher.encrypt(pin)
        click.echo(f"credentials stored for prescriber {prescriber.id}")


clinics = AppGroup("clinics", help="Clinic id mapping.")


@clinics.command("verify")
@click.argument("email")
def verify_clinics(email: str) -> None:
    """Check every clinic's display id -> internal id mapping against GET /clinics (§3)."""
    from app.services.credentials import prescriber_credentials
    from app.services.platform import make_client

    svc = services()
    client = make_client(svc.settings)
    cipher = CredentialCipher(svc.settings.encryption_keys)
    with svc.db.session() as session:
        prescriber = session.scalars(select(Prescriber).where(Prescriber.email == email)).first()
        if prescriber is None:
            raise click.ClickException(f"no prescriber with email {email}")
        remote = {c.display_id: c.id for c in client.list_clinics(prescriber_credentials(prescriber, cipher))}
        bad = 0
        for clinic in session.scalars(select(Clinic)):
            ok = remote.get(clinic.display_id) == clinic.platform_id
            clinic.verified_at = utcnow() if ok else None
            bad += not ok
            click.echo(f"clinic display_id={clinic.display_id} platform_id={clinic.platform_id}: {'ok' if ok else 'MISMATCH'}")
    if bad:
        raise click.ClickException(f"{bad} clinic mapping(s) disagree with the platform")


@click.command("worker")
@click.option("--max-seconds", type=float, default=None, help="Stop after this many seconds.")
@click.option("--until-idle", is_flag=True, help="Stop when nothing is due.")
@click.option("--no-dispatch", is_flag=True, help="Only process the webhook inbox.")
@click.option("--no-inbox", is_flag=True, help="Only dispatch the outbox.")
@with_appcontext
def worker_command(max_seconds: float | None, until_idle: bool, no_dispatch: bool, no_inbox: bool) -> None:
    """Run a worker: dispatch the outbox and apply webhook events until SIGTERM."""
    from app.services.dispatch import Dispatcher
    from app.services.platform import make_client
    from app.worker import WorkerLoop, worker_id
    from webhooks.processing import InboxProcessor

    svc = services()
    s = svc.settings
    wid = worker_id()
    dispatcher = None if no_dispatch else Dispatcher(svc.db, s, make_client(s), worker_id=wid)
    inbox = None if no_inbox else InboxProcessor(
        svc.db,
        worker_id=wid,
        lease_s=s.lease_s,
        batch=s.worker_batch * 5,  # one transaction per batch: no outbound calls here
        max_attempts=s.inbox_max_attempts,
        base_s=s.inbox_backoff_base_s,
        cap_s=s.inbox_backoff_cap_s,
    )
    loop = WorkerLoop(dispatcher, inbox, poll_s=s.worker_poll_s)
    loop.install_signal_handlers()
    loop.run(max_seconds=max_seconds, until_idle=until_idle)


outbox = AppGroup("outbox", help="The dispatch outbox and its dead letters.")


@outbox.command("list-dead")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_dead(as_json: bool) -> None:
    """List dead-lettered sends: outbox id, prescription id, reference, attempts, last error."""
    with services().db.session() as session:
        rows = session.execute(
            select(DispatchOutbox, Prescription.reference)
            .join(Prescription, Prescription.id == DispatchOutbox.prescription_id)
            .where(DispatchOutbox.state == "dead")
            .order_by(DispatchOutbox.id)
        ).all()
        for row, reference in rows:
            item = {
                "outbox_id": row.id,
                "prescription_id": row.prescription_id,
                "reference": reference,
                "attempts": row.attempts,
                "last_error": row.last_error,
                "outcome_unknown": row.outcome_unknown,
            }
            click.echo(json.dumps(item) if as_json else "  ".join(f"{k}={v}" for k, v in item.items()))
        if not rows and not as_json:
            click.echo("no dead letters")


@outbox.command("requeue")
@click.argument("outbox_id", type=int)
def requeue(outbox_id: int) -> None:
    """Put a dead-lettered send back in the queue (attempts reset; a lookup still comes first)."""
    now = utcnow()
    with services().db.session() as session:
        row = session.get(DispatchOutbox, outbox_id, with_for_update=True)
        if row is None or row.state != "dead":
            raise click.ClickException(f"outbox row {outbox_id} is not a dead letter")
        row.state, row.attempts, row.next_attempt_at, row.updated_at = "pending", 0, now, now
        row.locked_by = row.locked_until = None
        prescription = session.get(Prescription, row.prescription_id, with_for_update=True)
        assert prescription is not None
        record_local_status(session, prescription, "queued", source="operator", detail="requeued", now=now)
        click.echo(f"requeued outbox row {outbox_id} (prescription {row.prescription_id})")


webhooks_group = AppGroup("webhooks", help="The webhook inbox.")


@webhooks_group.command("replay")
@click.argument("event_id", required=False)
@click.option("--dead", is_flag=True, help="Replay every dead event.")
def replay(event_id: str | None, dead: bool) -> None:
    """Reprocess stored events: one EVENT_ID, or --dead. Never duplicates history."""
    from app.worker import worker_id
    from webhooks.processing import InboxProcessor

    if bool(event_id) == dead:
        raise click.UsageError("give exactly one of EVENT_ID or --dead")
    svc = services()
    processor = InboxProcessor(svc.db, worker_id=worker_id(), max_attempts=svc.settings.inbox_max_attempts)
    results = processor.replay(event_id=event_id, dead=dead)
    if event_id and not results:
        raise click.ClickException(f"no stored event {event_id}")
    for eid, state in results:
        click.echo(f"{eid}: {state}")


@click.command("reconcile")
@click.option("--quiet-s", type=float, default=None, help="Seconds without events (default RECONCILE_AFTER_S).")
@click.option("--limit", type=int, default=500)
@with_appcontext
def reconcile_command(quiet_s: float | None, limit: int) -> None:
    """Ask the platform about non-final prescriptions with no recent event; record what was missed."""
    from app.services.platform import make_client
    from app.services.reconcile import reconcile

    svc = services()
    report = reconcile(
        svc.db,
        make_client(svc.settings),
        CredentialCipher(svc.settings.encryption_keys),
        quiet_s=svc.settings.reconcile_after_s if quiet_s is None else quiet_s,
        limit=limit,
    )
    click.echo(f"checked={report.checked} recorded={report.recorded} errors={report.errors}")


def init_app(app: Flask) -> None:
    """Register the commands on ``app``."""
    for command in (seed_command, prescribers, clinics, worker_command, outbox, webhooks_group, reconcile_command):
        app.cli.add_command(command)
    __import__("app.events.cli", fromlist=["init_app"]).init_app(app)  # events publish, notify (issue 11)
