"""``flask --app app keys rotate``: re-encrypt stored credentials under the newest key.

Registered by app/interfaces/cli.py. Failures print one line naming the cause and exit 1.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.foundation.config import ConfigError
from app.mechanisms.runtime import runtime
from app.services.keys import rotate_credentials

keys = AppGroup("keys", help="Encryption keys of stored credentials (ERX_ENCRYPTION_KEYS).")


@keys.command("rotate")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Prescribers per transaction.",
)
def rotate_command(batch_size: int) -> None:
    """Re-encrypt every prescriber password and PIN under the newest key. Safe to interrupt and rerun."""
    svc = runtime()
    try:
        report = rotate_credentials(svc.db, svc.settings.encryption_keys, batch_size=batch_size)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"rotated {report.rotated} value(s), {report.current} already under the newest key, "
        f"{report.prescribers} prescriber(s) in {report.batches} batch(es)"
    )
    if report.unreadable:
        logins = ", ".join(report.unreadable)
        raise click.ClickException(
            f"{len(report.unreadable)} prescriber(s) have credentials no configured key decrypts: {logins}"
        )
