"""Re-encrypt every stored prescriber password and PIN under the newest key.

Operators prepend a new key to ``ERX_ENCRYPTION_KEYS`` and run ``flask --app app
keys rotate``. Prescribers are walked in id order, ``batch_size`` at a time, each
batch in its own transaction (rows locked FOR UPDATE on PostgreSQL, so a
concurrent ``set-credentials`` waits rather than being overwritten). A value
that already decrypts with the newest key alone is left untouched, so an
interrupted run can simply be run again. Plaintext exists only inside
``MultiFernet.rotate``: it is never written, logged or returned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from app.foundation.crypto import CredentialCipher, CredentialError
from app.foundation.db import Database
from app.foundation.models import Prescriber

log = logging.getLogger("app.keys")
_FIELDS = ("password_enc", "pin_enc")


@dataclass(frozen=True)
class RotationReport:
    """What a rotation run did.

    ``prescribers``: rows examined; ``rotated``: values re-encrypted (a
    prescriber has up to two: password and PIN); ``current``: values already
    under the newest key; ``batches``: transactions committed;
    ``unreadable``: logins (emails) of prescribers with a value no configured key
    decrypts, in id order (left as they are: re-store their credentials with
    ``set-credentials``).
    """

    prescribers: int
    rotated: int
    current: int
    batches: int
    unreadable: tuple[str, ...]


def rotate_credentials(
    db: Database,
    keys: Sequence[str],
    *,
    batch_size: int = 100,
    before_commit: Callable[[int], None] | None = None,
) -> RotationReport:
    """Re-encrypt every stored password and PIN under ``keys[0]``; return a :class:`RotationReport`.

    ``keys``: the Fernet keys of ``ERX_ENCRYPTION_KEYS``, newest first (a
    malformed key raises :class:`~app.foundation.config.ConfigError` naming the variable,
    before any row is touched). ``batch_size``: prescribers per transaction
    (>= 1, else ValueError). ``before_commit``: called with the 1-based batch
    number after the batch's changes, before its commit; an exception there
    rolls that batch back and propagates (tests use it to interrupt a run).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cipher = CredentialCipher(keys)
    examined = rotated = current = batches = 0
    unreadable: list[str] = []
    last_id = 0
    while True:
        with db.session() as session:
            rows = session.scalars(
                select(Prescriber)
                .where(Prescriber.id > last_id)
                .order_by(Prescriber.id)
                .limit(batch_size)
                .with_for_update()
            ).all()
            if not rows:
                break
            batch_rotated = 0
            for prescriber in rows:
                examined += 1
                for field in _FIELDS:
                    token = getattr(prescriber, field)
                    if not token:
                        continue
                    if cipher.uses_newest_key(token):
                        current += 1
                        continue
                    try:
                        setattr(prescriber, field, cipher.rotate(token))
                    except CredentialError:
                        if prescriber.email not in unreadable:
                            unreadable.append(prescriber.email)
                        continue
                    batch_rotated += 1
            batches += 1
            if before_commit is not None:
                before_commit(batches)
            last_id = rows[-1].id
        rotated += batch_rotated
        log.info(
            "key rotation batch committed",
            extra={"batch": batches, "last_prescriber_id": last_id, "rotated": batch_rotated},
        )
    return RotationReport(
        prescribers=examined,
        rotated=rotated,
        current=current,
        batches=batches,
        unreadable=tuple(unreadable),
    )
