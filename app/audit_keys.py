"""Signed checkpoints of the audit log: Ed25519 keys and the C2SP signed-note text form.

A checkpoint states the size and root hash of the audit tree (app/merkle.py) at
one seal. It is written in the C2SP ``tlog-checkpoint`` form
(https://c2sp.org/tlog-checkpoint): the origin line, the tree size in decimal,
the base64 root hash, then one extension line ``time <UTC ISO 8601>``. It is
signed as a C2SP signed note (https://c2sp.org/signed-note): after the text, a
blank line and one line per signature, ``\u2014 <key name> <base64(key id || sig)>``,
where the 4-byte key id is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``
and the signature is Ed25519 (RFC 8032) over the text. Auditors get the public
keys as verifier keys, ``<name>+<hex key id>+<base64(0x01 || public key)>``.

Keys come from the ``AUDIT_SIGNING_KEYS`` setting: base64 of raw 32-byte Ed25519
private keys, newest first. The newest signs; every listed key verifies, so
rotation is: prepend a new key, deploy, keep the old one listed while its
checkpoints must verify. Outside production, when the setting is empty, a fixed
development key is used (logged once), so every local process signs and verifies
with the same key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.config import Settings

log = logging.getLogger(__name__)

ED25519_TYPE = b"\x01"
DEFAULT_ORIGIN = "erx-connector.example/audit"
# Development only: a key anyone can derive, so local processes agree; production refuses it.
_DEV_SEED = hashlib.sha256(b"erx-connector development audit signing key").digest()
_dev_logged = False


class AuditKeyError(ValueError):
    """The signing keys are missing or malformed; the message never contains a key."""


@dataclass(frozen=True)
class SigningKey:
    """One Ed25519 key of the audit log.

    ``name``: the signed-note key name (the log origin); ``key_id``: the 4-byte
    signed-note key hash; ``public``: the raw 32-byte public key; ``private``:
    None for a verify-only key.
    """

    name: str
    key_id: bytes
    public: bytes
    private: Ed25519PrivateKey | None = field(default=None, repr=False, compare=False)

    @property
    def key_id_hex(self) -> str:
        """The key id as 8 lowercase hex digits (the form stored with each checkpoint)."""
        return self.key_id.hex()

    @property
    def vkey(self) -> str:
        """The C2SP verifier key: ``<name>+<hex key id>+<base64(0x01 || public key)>``."""
        return (
            f"{self.name}+{self.key_id_hex}+{base64.b64encode(ED25519_TYPE + self.public).decode()}"
        )

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's Ed25519 signature of ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def key_id_for(name: str, public: bytes) -> bytes:
    """The signed-note key hash: ``SHA-256(name || 0x0A || 0x01 || public)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public).digest()[:4]


def _from_private(name: str, private: Ed25519PrivateKey) -> SigningKey:
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SigningKey(name=name, key_id=key_id_for(name, public), public=public, private=private)


def parse_private_keys(values: tuple[str, ...], *, origin: str) -> tuple[SigningKey, ...]:
    """Decode base64 raw Ed25519 private keys (32 bytes each), newest first.

    Raises :class:`AuditKeyError` naming the position of a bad key (never its value).
    """
    out = []
    for position, value in enumerate(values, start=1):
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise AuditKeyError(f"AUDIT_SIGNING_KEYS entry {position} is not base64") from None
        if len(raw) != 32:
            raise AuditKeyError(f"AUDIT_SIGNING_KEYS entry {position} is not a 32-byte Ed25519 key")
        out.append(_from_private(origin, Ed25519PrivateKey.from_private_bytes(raw)))
    return tuple(out)


def generate_private_key() -> str:
    """A new Ed25519 private key, base64 of its raw 32 bytes (for ``AUDIT_SIGNING_KEYS``)."""
    raw = Ed25519PrivateKey.generate().private_bytes_raw()
    return base64.b64encode(raw).decode()


def signing_keys(settings: Settings) -> tuple[SigningKey, ...]:
    """The log's keys, newest (the signer) first, from ``settings.audit_signing_keys``.

    Outside production an empty setting gives the fixed development key (logged
    once per process). Raises :class:`AuditKeyError` in production when the
    setting is empty, or when an entry is malformed.
    """
    global _dev_logged
    origin = settings.audit_log_origin
    if settings.audit_signing_keys:
        return parse_private_keys(settings.audit_signing_keys, origin=origin)
    if settings.env == "production":
        raise AuditKeyError("AUDIT_SIGNING_KEYS is required in production")
    if not _dev_logged:
        log.warning(
            "audit checkpoints are signed with the development key (AUDIT_SIGNING_KEYS is empty)"
        )
        _dev_logged = True
    return (_from_private(origin, Ed25519PrivateKey.from_private_bytes(_DEV_SEED)),)


def checkpoint_text(*, origin: str, size: int, root: bytes, at: datetime) -> str:
    """The C2SP tlog-checkpoint body: origin, size, base64 root, ``time`` extension line.

    ``at``: aware datetime, written in UTC with microseconds. Every line ends in ``\\n``.
    """
    when = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\ntime {when}\n"


def sign_note(text: str, key: SigningKey) -> str:
    """``text`` as a signed note with ``key``'s signature line.

    Raises :class:`AuditKeyError` for a verify-only key.
    """
    if key.private is None:
        raise AuditKeyError("a verify-only key cannot sign")
    signature = key.private.sign(text.encode())
    return f"{text}\n\u2014 {key.name} {base64.b64encode(key.key_id + signature).decode()}\n"


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint note: ``origin``, ``size`` (leaves), ``root`` (32 bytes),
    ``time`` (the extension line's text, UTC), ``text`` (what was signed) and
    ``signatures`` as ``(key id, signature)`` pairs."""

    origin: str
    size: int
    root: bytes
    time: str | None
    text: str
    signatures: tuple[tuple[bytes, bytes], ...]


def parse_note(note: str) -> Checkpoint:
    """Parse a signed checkpoint note; raises ValueError naming what is malformed."""
    text, sep, sigs = note.rpartition("\n\n")
    if not sep:
        raise ValueError("checkpoint note has no signature block")
    text += "\n"
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise ValueError("checkpoint has fewer than three lines")
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("checkpoint size or root hash is malformed") from None
    if size < 0 or len(root) != 32:
        raise ValueError("checkpoint size or root hash is malformed")
    time = next((line[5:] for line in lines[3:] if line.startswith("time ")), None)
    signatures = []
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            raise ValueError("checkpoint signature line is malformed")
        try:
            blob = base64.b64decode(line.rsplit(" ", 1)[1], validate=True)
        except (IndexError, binascii.Error):
            raise ValueError("checkpoint signature is not base64") from None
        if len(blob) < 5:
            raise ValueError("checkpoint signature is too short")
        signatures.append((blob[:4], blob[4:]))
    return Checkpoint(lines[0], size, root, time, text, tuple(signatures))


def verify_note(note: str, keys: tuple[SigningKey, ...]) -> Checkpoint | None:
    """The parsed checkpoint if one of ``keys`` signed it (by key id), else None.

    Raises ValueError for a malformed note.
    """
    checkpoint = parse_note(note)
    by_id = {k.key_id: k for k in keys}
    for key_id, signature in checkpoint.signatures:
        key = by_id.get(key_id)
        if key is not None and key.verify(checkpoint.text.encode(), signature):
            return checkpoint
    return None


def public_keys_document(keys: tuple[SigningKey, ...]) -> dict[str, object]:
    """What auditors need to check checkpoints: JSON-ready, no private material.

    ``{"keys": [{"key_id", "name", "algorithm": "ed25519", "public_key" (base64 raw),
    "vkey" (C2SP verifier key)}, ...]}``, newest first.
    """
    return {
        "keys": [
            {
                "key_id": k.key_id_hex,
                "name": k.name,
                "algorithm": "ed25519",
                "public_key": base64.b64encode(k.public).decode(),
                "vkey": k.vkey,
            }
            for k in keys
        ]
    }
