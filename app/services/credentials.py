"""Turning stored prescribers into connector credentials (decrypting password and PIN)."""

from __future__ import annotations

from app.crypto import CredentialCipher
from app.models import Prescriber
from connector import PrescriberCredentials


class MissingCredentials(RuntimeError):
    """The prescriber has no platform credentials set (``prescribers set-credentials``)."""


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
