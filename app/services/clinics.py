"""Checking the clinic id mapping against the platform (contract §3: display id vs internal id).

A clinic has a display id (what people see, e.g. ``201334``) and an internal
id (what the issue call needs, e.g. ``994``). ``GET /clinics`` lists both; a
mismatch means every send for that clinic would be refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from app.foundation.crypto import CredentialCipher, CredentialError
from app.foundation.db import Database
from app.foundation.errors import Invalid, NotFound
from app.foundation.models import Clinic, Prescriber
from app.services.credentials import (
    MissingCredentials,
    prescriber_credentials,
    unusable_credentials_cause,
)
from app.services.platform_failures import platform_failure
from connector import ConnectorClient
from connector.errors import ConnectorError


@dataclass(frozen=True)
class ClinicCheck:
    """One clinic: our display id -> platform id, and whether the platform agrees."""

    display_id: str
    platform_id: int
    ok: bool


def verify_clinics(
    db: Database,
    client: ConnectorClient,
    cipher: CredentialCipher,
    email: str,
    *,
    base_url: str,
    now: datetime,
) -> list[ClinicCheck]:
    """Compare every clinic's mapping with ``GET /clinics`` as the prescriber with login ``email``.

    Stamps ``verified_at`` (``now``, aware UTC) on the clinics that agree and
    clears it on the others. ``base_url`` is named in errors. Returns one
    :class:`ClinicCheck` per clinic. Raises :class:`NotFound` (no such
    prescriber), :class:`Invalid` (the prescriber has no usable stored
    credentials), or the domain error of :func:`platform_failure`
    (:class:`Forbidden` refused credentials, :class:`Unavailable` platform down).
    """
    with db.session() as session:
        prescriber = session.scalars(select(Prescriber).where(Prescriber.email == email)).first()
        if prescriber is None:
            raise NotFound("no prescriber has that login email")
        prescriber_id = prescriber.id
        try:
            credentials = prescriber_credentials(prescriber, cipher)
        except (MissingCredentials, CredentialError) as exc:
            raise Invalid(unusable_credentials_cause(prescriber_id, exc)) from None
    try:
        remote = {c.display_id: c.id for c in client.list_clinics(credentials)}
    except ConnectorError as exc:
        raise platform_failure(exc, base_url=base_url, prescriber_id=prescriber_id) from None
    checks = []
    with db.session() as session:
        for clinic in session.scalars(select(Clinic).order_by(Clinic.id)):
            ok = remote.get(clinic.display_id) == clinic.platform_id
            clinic.verified_at = now if ok else None
            checks.append(
                ClinicCheck(display_id=clinic.display_id, platform_id=clinic.platform_id, ok=ok)
            )
    return checks
