"""Encryption at rest for prescriber credentials (password and secure PIN).

Keys come from ``ERX_ENCRYPTION_KEYS``: comma-separated Fernet keys, newest
first. Encryption uses the newest; decryption tries each, so keys rotate by
prepending a new one and re-running ``prescribers set-credentials``.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class CredentialError(RuntimeError):
    """A stored credential could not be decrypted with any configured key."""


class CredentialCipher:
    """Encrypt and decrypt short secrets with rotating Fernet keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        """``keys``: url-safe base64 32-byte Fernet keys, newest first. Raises ValueError."""
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(key.encode("ascii")) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        """Return the Fernet token (ASCII) for ``plaintext``."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """Return the plaintext of ``token``; raises :class:`CredentialError` if no key fits."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise CredentialError("stored credential does not decrypt with any configured key") from None
