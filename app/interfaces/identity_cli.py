"""``flask --app app tokens mint``: development bearer tokens (never in production)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.foundation.config import is_generated_jwt_secret
from app.foundation.errors import Forbidden
from app.interfaces.identity import ROLES, mint_token
from app.mechanisms.runtime import runtime

tokens = AppGroup("tokens", help="Development bearer tokens.")


@tokens.command("mint")
@click.option("--role", type=click.Choice(ROLES), required=True, help="The role claim.")
@click.option(
    "--sub", "subject", required=True, help="The subject: a patient's external ref, e.g. pt-0001."
)
@click.option(
    "--ttl",
    "ttl_s",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="Lifetime in seconds.",
)
def mint(role: str, subject: str, ttl_s: int) -> None:
    """Print an HS256 token signed with JWT_SECRET. Refused when ERX_ENV=production."""
    svc = runtime()
    if is_generated_jwt_secret(svc.settings.jwt_secret):
        # The secret was made for this process alone: no server would accept the token.
        raise click.ClickException(
            "JWT_SECRET is not set: export the server's JWT_SECRET before minting a token."
        )
    if ttl_s > svc.settings.jwt_max_ttl_s:
        raise click.UsageError(
            f"--ttl must be at most {svc.settings.jwt_max_ttl_s} seconds (JWT_MAX_TTL_S)"
        )
    try:
        token = mint_token(
            svc.settings, role=role, subject=subject, ttl_s=ttl_s, now=svc.unix_time()
        )
    except Forbidden as exc:
        raise click.ClickException(exc.message) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(token)
