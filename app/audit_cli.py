"""``flask --app app audit verify | export``: check the audit chain, export one prescription's record.

Registered by app/cli.py. Failures print one line naming the cause and exit 1.
"""

from __future__ import annotations

import getpass
import json

import click
from flask.cli import AppGroup

from app.audit import export_prescription, verify
from app.db import utcnow
from app.extensions import services
from app.logs import current_request_id, new_request_id
from app.services.errors import NotFound

audit = AppGroup("audit", help="The tamper-evident audit trail.")


@audit.command("verify")
def verify_command() -> None:
    """Check every row's hash and link; exit 1 naming the first bad row."""
    result = verify(services().db)
    if not result.ok:
        raise click.ClickException(
            f"audit chain broken at row {result.first_bad_id}: {result.reason} ({result.count} rows checked)"
        )
    click.echo(f"audit chain ok: {result.count} rows")


@audit.command("export")
@click.argument("prescription")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), default=None, help="Write here, not stdout.")
@click.option("--actor", default=None, help="Who is exporting (default: the operating-system user).")
def export_command(prescription: str, out: str | None, actor: str | None) -> None:
    """Write PRESCRIPTION's (id or reference) complete record as JSON; the export is itself audited."""
    try:
        who = actor or getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        who = "unknown"
    try:
        record = export_prescription(
            services().db,
            prescription,
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
        f"{len(record['status_history'])} transitions, {len(record['webhook_events'])} webhook events, "
        f"{len(record['audit_events'])} audit rows"
    )
