"""Encryption at rest for prescriber credentials (password and secure PIN).

Keys come from ``ERX_ENCRYPTION_KEYS``: comma-separated Fernet keys, newest
first. Encryption uses the newest; decryption tries each, so keys rotate by
prepending a new one and running ``flask --app app keys rotate``
(app/services/keys.py), after which the old key can be removed.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.foundation.config import ConfigError


class CredentialError(RuntimeError):
    """A stored credential could not be decrypted with any configured key."""


class CredentialCipher:
    """Encrypt and decrypt short secrets with rotating Fernet keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        """``keys``: url-safe base64 32-byte Fernet keys, newest first.

        Raises :class:`~app.foundation.config.ConfigError` (a ValueError) naming
        ``ERX_ENCRYPTION_KEYS`` and the key's position, never its value.
        """
        if not keys:
            raise ConfigError("ERX_ENCRYPTION_KEYS must list at least one key")
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise ConfigError(
                    f"ERX_ENCRYPTION_KEYS: key {position} of {len(keys)} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes)"
                ) from None
        self._newest = fernets[0]
        self._fernet = MultiFernet(fernets)

    def encrypt(self, plaintext: str) -> str:
        """Return the Fernet token (ASCII) for ``plaintext``."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """Return the plaintext of ``token``; raises :class:`CredentialError` if no key fits."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise CredentialError(
                "stored credential does not decrypt with any configured key"
            ) from None

    def uses_newest_key(self, token: str) -> bool:
        """True when ``token`` decrypts with the newest key alone (nothing to rotate)."""
        try:
            self._newest.decrypt(token.encode("ascii"))
        except (InvalidToken, ValueError):
            return False
        return True

    def rotate(self, token: str) -> str:
        """Return ``token`` re-encrypted under the newest key (MultiFernet.rotate: the plaintext
        stays in memory). Raises :class:`CredentialError` if no configured key decrypts it."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError):
            raise CredentialError(
                "stored credential does not decrypt with any configured key"
            ) from None
