"""``flask --app app audit verify | export | seal | public-keys | generate-key``: the audit log.

Registered by app/cli.py. Failures print one line naming the cause and exit 1
(``verify``: one line per problem, then exit 1).
"""

from __future__ import annotations

import getpass
import json
import signal

import click
from flask.cli import AppGroup

from app.audit_export import export_prescription
from app.audit_keys import (
    AuditKeyError,
    SigningKey,
    generate_private_key,
    public_keys_document,
    signing_keys,
)
from app.audit_sealer import seal_loop, seal_once, verify
from app.db import utcnow
from app.extensions import services
from app.logs import current_request_id, new_request_id
from app.services.errors import NotFound

audit = AppGroup("audit", help="The tamper-evident audit trail.")


def _keys() -> tuple[SigningKey, ...]:
    try:
        return signing_keys(services().settings)
    except AuditKeyError as exc:
        raise click.ClickException(str(exc)) from None


@audit.command("verify")
@click.option(
    "--full",
    is_flag=True,
    help="Check every leaf, not only those after the last verified checkpoint.",
)
@click.option(
    "--max-unsealed-age",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds an unsealed row may wait (default: AUDIT_UNSEALED_MAX_AGE_S).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=16),
    default=2,
    help="PostgreSQL connections recomputing leaf hashes at once (default 2).",
)
def verify_command(full: bool, max_unsealed_age: float | None, workers: int) -> None:
    """Check the sealed audit log; print one line per problem and exit 1 if any."""
    settings = services().settings
    limit = settings.audit_unsealed_max_age_s if max_unsealed_age is None else max_unsealed_age
    report = verify(services().db, _keys(), full=full, max_unsealed_age_s=limit, workers=workers)
    if not report.ok:
        for line in report.problems:
            click.echo(f"audit verify: {line}", err=True)
        raise SystemExit(1)
    click.echo(
        f"audit log ok: {report.tree_size} sealed rows, {report.leaves_checked} checked from leaf "
        f"{report.from_size}, {report.checkpoints_checked} checkpoints"
    )


@audit.command("seal")
@click.option("--loop", is_flag=True, help="Keep sealing (the sealer process) until SIGTERM.")
def seal_command(loop: bool) -> None:
    """Seal the audit rows committed since the last seal and sign a checkpoint."""
    svc = services()
    keys = _keys()
    origin = svc.settings.audit_log_origin
    if not loop:
        result = seal_once(svc.db, keys, origin=origin)
        click.echo(f"sealed {result.sealed} rows: tree size {result.tree_size}")
        return
    stopping: list[bool] = []

    def _stop(_signum: int, _frame: object) -> None:
        stopping.append(True)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if svc.settings.worker_metrics_port:
        from app.metrics import serve_worker_metrics

        serve_worker_metrics(svc.settings.worker_metrics_port)
    total = seal_loop(
        svc.db,
        keys,
        origin=origin,
        interval_s=svc.settings.audit_seal_interval_s,
        should_stop=lambda: bool(stopping),
        max_unsealed_age_s=svc.settings.audit_unsealed_max_age_s,
    )
    click.echo(f"audit sealer stopped: {total} rows sealed")


@audit.command("public-keys")
def public_keys_command() -> None:
    """Print the audit log's public keys (JSON, newest first) for auditors."""
    click.echo(json.dumps(public_keys_document(_keys()), indent=2))


@audit.command("generate-key")
def generate_key_command() -> None:
    """Print a new Ed25519 private key for AUDIT_SIGNING_KEYS (base64; keep it secret)."""
    click.echo(generate_private_key())


@audit.command("export")
@click.argument("prescription")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write here, not stdout.",
)
@click.option(
    "--actor", default=None, help="Who is exporting (default: the operating-system user)."
)
def export_command(prescription: str, out: str | None, actor: str | None) -> None:
    """Write PRESCRIPTION's (id or reference) complete record as JSON; the export is audited too."""
    try:
        who = actor or getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        who = "unknown"
    try:
        record = export_prescription(
            services().db,
            prescription,
            keys=_keys(),
            actor=who,
            role="operator",
            request_id=current_request_id() or new_request_id(),
            client_addr="cli",
            now=utcnow(),
        )
    except NotFound as exc:
        raise click.ClickException(exc.message) from None
    rendered = json.dumps(record, indent=2, ensure_ascii=False)
    if out is None:
        click.echo(rendered)
        return
    try:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(rendered + "\n")
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror}") from None
    click.echo(
        f"exported prescription {record['prescription']['id']} to {out}: "
        f"{len(record['status_history'])} transitions, "
        f"{len(record['webhook_events'])} webhook events, "
        f"{len(record['audit_events'])} audit rows"
    )
