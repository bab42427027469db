"""Translating the connector's typed errors into domain errors that name their cause.

Operator commands (``clinics verify``, ``reconcile``) must say in one line
which setting, URL or prescriber is at fault; this is the one place that
words it. Messages carry setting names, the platform's base URL and the
prescriber's login (their email, a work login as ``prescribers list`` shows
it, never the internal id), never a password, PIN, token or secret.
"""

from __future__ import annotations

from app.foundation.errors import DomainError, Forbidden, NotFound, Unavailable
from connector.errors import (
    AuthError,
    ConnectorError,
    PlatformRejected,
    PlatformUnavailable,
    RateLimited,
    TransportError,
)


def platform_failure(
    exc: ConnectorError, *, base_url: str, login: str | None = None
) -> DomainError:
    """Return the domain error for ``exc``, raised by a call to the platform at ``base_url``.

    ``login``: the email of the prescriber the call was made as, named in the
    message when their credentials are refused (``None``: "the prescriber").

    - refused client credentials (two-step auth, step 1; contract §1a) ->
      :class:`Forbidden` naming ``ERX_CLIENT_ID``/``ERX_CLIENT_SECRET``;
    - refused prescriber login or session (step 2; §1b) -> :class:`Forbidden`
      naming the prescriber's login;
    - unreachable, 5xx, 429 (§2) -> :class:`Unavailable` naming ``ERX_BASE_URL``;
    - ``not_found`` (HTTP 200 ``success:false``, §5) -> :class:`NotFound`;
    - anything else the platform refused -> :class:`Unavailable` with its code.
    """
    who = f"prescriber {login}" if login is not None else "the prescriber"
    if isinstance(exc, AuthError):
        if exc.step == "access_token":
            return Forbidden(
                f"the platform at ERX_BASE_URL={base_url} refused the client credentials "
                "(check ERX_CLIENT_ID and ERX_CLIENT_SECRET)",
                code="platform_auth_refused",
            )
        return Forbidden(
            f"the platform at ERX_BASE_URL={base_url} refused the credentials of {who} "
            f"({exc.step} step); store them again with `prescribers set-credentials`",
            code="prescriber_auth_refused",
        )
    if isinstance(exc, (TransportError, PlatformUnavailable, RateLimited)):
        reason = exc.code or type(exc).__name__
        return Unavailable(
            f"the platform at ERX_BASE_URL={base_url} is unavailable ({reason})",
            code="platform_unavailable",
        )
    if isinstance(exc, PlatformRejected) and exc.code == "not_found":
        return NotFound(
            f"the platform at ERX_BASE_URL={base_url} does not know it (not_found)",
            code="not_found",
        )
    return Unavailable(
        f"the platform at ERX_BASE_URL={base_url} refused the request ({exc.code or type(exc).__name__})",
        code="platform_refused",
    )
