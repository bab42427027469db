"""Prescriber credentials: checking them against the platform, storing them encrypted,
and turning them into connector credentials.

Storing new credentials is what unblocks a prescriber whose login the platform
refused: :func:`store_credentials` clears the refusal and reopens their
``blocked_credentials`` sends through :func:`app.mechanisms.queue.reopen`, in
the same transaction, so a send is never left parked on credentials that were fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select

from app.foundation.crypto import CredentialCipher, CredentialError
from app.foundation.db import Database, utcnow
from app.foundation.errors import Invalid, Misconfigured, NotFound
from app.foundation.models import DispatchOutbox, Prescriber, Prescription
from app.mechanisms.queue import BLOCKED_CREDENTIALS, reopen
from app.services.platform_failures import platform_failure
from connector import ConnectorClient, PrescriberCredentials
from connector.errors import AuthError, ConnectorError


class MissingCredentials(RuntimeError):
    """The prescriber has no platform credentials set (``prescribers set-credentials``)."""


class CredentialsRefused(RuntimeError):
    """The platform refused this prescriber's stored credentials (login_failed) and they have
    not changed since: no login is attempted until ``prescribers set-credentials``."""


def mark_credentials_refused(prescriber: Prescriber, *, now: datetime) -> None:
    """Record in the caller's transaction that the platform refused ``prescriber``'s login at
    ``now`` (aware UTC; an earlier refusal keeps its time). Cleared by :func:`store_credentials`."""
    if prescriber.credentials_refused_at is None:
        prescriber.credentials_refused_at = now


def unusable_credentials_cause(login: str, exc: MissingCredentials | CredentialError) -> str:
    """The one-line cause an operator reads when the stored credentials of the prescriber with
    login ``login`` (their email, as ``prescribers list`` shows it) can't be used.

    The same sentence in the CLI (``clinics verify``), on dead letters and blocked
    rows (``last_error``) and in the API's dispatch state; it names the fix.
    """
    if isinstance(exc, MissingCredentials):
        return f"prescriber {login} has no platform credentials; run `prescribers set-credentials`"
    return (
        f"the credentials of prescriber {login} do not decrypt with any key in ERX_ENCRYPTION_KEYS"
    )


def refused_login_cause(login: str) -> str:
    """The one-line cause of a row blocked because the platform refused the login ``login``
    (the prescriber's email)."""
    return (
        f"the platform refused the login of prescriber {login} (login_failed); "
        "run `prescribers set-credentials`"
    )


def credential_cipher(keys: Sequence[str]) -> CredentialCipher:
    """Return the cipher for ``keys`` (``Settings.encryption_keys``).

    Raises :class:`Misconfigured` naming ``ERX_ENCRYPTION_KEYS`` and the
    position of the bad key (never its value) when a key is not a Fernet key.
    """
    if not keys:
        raise Misconfigured("ERX_ENCRYPTION_KEYS is empty: set at least one Fernet key")
    for position, key in enumerate(keys, start=1):
        try:
            CredentialCipher([key])
        except ValueError:
            raise Misconfigured(
                f"ERX_ENCRYPTION_KEYS: key {position} of {len(keys)} is not a Fernet key "
                "(32 url-safe base64-encoded bytes)"
            ) from None
    return CredentialCipher(keys)


def prescriber_credentials(
    prescriber: Prescriber, cipher: CredentialCipher
) -> PrescriberCredentials:
    """Return :class:`connector.PrescriberCredentials` for ``prescriber``.

    The cache key is the platform prescriber id, so sessions are never shared
    between prescribers. Raises :class:`MissingCredentials` or
    :class:`app.foundation.crypto.CredentialError`.
    """
    if not prescriber.password_enc or not prescriber.pin_enc:
        raise MissingCredentials(f"prescriber {prescriber.email} has no platform credentials")
    return PrescriberCredentials(
        key=str(prescriber.platform_prescriber_id),
        email=prescriber.email,
        password=cipher.decrypt(prescriber.password_enc),
        secure_pin=cipher.decrypt(prescriber.pin_enc),
    )


def verify_credentials(
    db: Database, client: ConnectorClient, email: str, *, password: str, pin: str, base_url: str
) -> int:
    """Log in on the platform as the prescriber with login ``email`` with ``password`` (contract §1b).

    Nothing is stored. Returns the prescriber's id when the platform accepts
    the login. Raises :class:`NotFound` (no prescriber has that email),
    :class:`Invalid` ``code="credentials_refused"`` when the platform refuses
    the login (``login_failed``: the credentials are wrong, and storing them
    would only risk locking the account), or the domain error of
    :func:`~app.services.platform_failures.platform_failure` (``Unavailable``
    naming ``ERX_BASE_URL``, ``Forbidden`` for refused client credentials)
    when the check itself could not be made.
    """
    with db.session() as session:
        prescriber = session.scalars(select(Prescriber).where(Prescriber.email == email)).first()
        if prescriber is None:
            raise NotFound("no prescriber has that login email")
        prescriber_id, platform_id = prescriber.id, prescriber.platform_prescriber_id
    credentials = PrescriberCredentials(
        key=str(platform_id), email=email, password=password, secure_pin=pin
    )
    try:
        client.tokens.session_token(credentials)
    except AuthError as exc:
        if exc.step == "login":
            raise Invalid(
                f"the platform at ERX_BASE_URL={base_url} refused the login of prescriber {email} "
                f"({exc.code or 'login_failed'}); nothing stored",
                code="credentials_refused",
            ) from None
        raise platform_failure(exc, base_url=base_url, login=email) from None
    except ConnectorError as exc:
        raise platform_failure(exc, base_url=base_url, login=email) from None
    return prescriber_id


def store_credentials(
    db: Database,
    cipher: CredentialCipher,
    email: str,
    *,
    password: str,
    pin: str,
    now: datetime | None = None,
) -> int:
    """Encrypt and store the platform password and secure PIN of the prescriber with login ``email``.

    In the same transaction: ``credentials_changed_at`` becomes ``now`` (aware
    UTC), a remembered login refusal is cleared, and the prescriber's
    ``blocked_credentials`` outbox rows are reopened (pending, due now, attempts
    from zero) so they go out with the new credentials by themselves.

    Returns the prescriber's id. Raises :class:`Invalid` for an empty password
    or PIN, :class:`NotFound` when no prescriber has that email (the message
    does not repeat the email).
    """
    if not password or not pin:
        raise Invalid(
            "password and PIN must not be empty",
            errors={"password": ["required"], "pin": ["required"]},
        )
    now = now or utcnow()
    with db.session() as session:
        prescriber = session.scalars(
            select(Prescriber).where(Prescriber.email == email).with_for_update()
        ).first()
        if prescriber is None:
            raise NotFound("no prescriber has that login email")
        prescriber.password_enc = cipher.encrypt(password)
        prescriber.pin_enc = cipher.encrypt(pin)
        prescriber.credentials_changed_at = now
        prescriber.credentials_refused_at = None
        reopen(
            session,
            DispatchOutbox,
            DispatchOutbox.state == BLOCKED_CREDENTIALS,
            DispatchOutbox.prescription_id.in_(
                select(Prescription.id).where(Prescription.prescriber_id == prescriber.id)
            ),
            now=now,
            updated_at=now,
        )
        return prescriber.id
