"""Prescriber credentials: storing them encrypted, and turning them into connector credentials."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from app.crypto import CredentialCipher
from app.db import Database
from app.models import Prescriber
from app.services.errors import Invalid, Misconfigured, NotFound
from connector import PrescriberCredentials


class MissingCredentials(RuntimeError):
    """The prescriber has no platform credentials set (``prescribers set-credentials``)."""


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


def prescriber_credentials(prescriber: Prescriber, cipher: CredentialCipher) -> PrescriberCredentials:
    """Return :class:`connector.PrescriberCredentials` for ``prescriber``.

    The cache key is the platform prescriber id, so sessions are never shared
    between prescribers. Raises :class:`MissingCredentials` or
    :class:`app.crypto.CredentialError`.
    """
    if not prescriber.password_enc or not prescriber.pin_enc:
        raise MissingCredentials(f"prescriber {prescriber.id} has no platform credentials")
    return PrescriberCredentials(
        key=str(prescriber.platform_prescriber_id),
        email=prescriber.email,
        password=cipher.decrypt(prescriber.password_enc),
        secure_pin=cipher.decrypt(prescriber.pin_enc),
    )


def store_credentials(db: Database, cipher: CredentialCipher, email: str, *, password: str, pin: str) -> int:
    """Encrypt and store the platform password and secure PIN of the prescriber with login ``email``.

    Returns the prescriber's id. Raises :class:`Invalid` for an empty password
    or PIN, :class:`NotFound` when no prescriber has that email (the message
    does not repeat the email).
    """
    if not password or not pin:
        raise Invalid("password and PIN must not be empty", errors={"password": ["required"], "pin": ["required"]})
    with db.session() as session:
        prescriber = session.scalars(select(Prescriber).where(Prescriber.email == email)).first()
        if prescriber is None:
            raise NotFound("no prescriber has that login email")
        prescriber.password_enc = cipher.encrypt(password)
        prescriber.pin_enc = cipher.encrypt(pin)
        return prescriber.id
