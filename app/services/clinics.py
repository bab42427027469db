"""Checking the clinic id mapping against the platform (contract §3: display id vs internal id).

A clinic has a display id (what people see, e.g. ``201334``) and an internal
id (what the issue call needs, e.g. ``994``). ``GET /clinics`` lists both; a
mismatch means every send for that clinic would be refused. A clinic with no
internal id mapped yet (``platform_id`` NULL) gets nothing sent: its sends are
dead letters naming the fix, and :func:`verify_clinics` maps it from the platform.
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


def unmapped_clinic_cause(display_id: str) -> str:
    """The one-line cause of a send for clinic ``display_id``, which has no API clinic id mapped.

    The same sentence on the dead letter (``last_error``, ``outbox list-dead``) and in
    the API's dispatch state; it names the fix.
    """
    return (
        f"clinic {display_id} has no API clinic id mapped: run `flask --app app clinics verify`, "
        "then `flask --app app outbox requeue` the send"
    )


class UnmappedClinic(Exception):
    """A send names a clinic with no API clinic id mapped: a configuration fault no retry fixes.

    ``display_id``: the clinic's display id; ``str(exc)`` is :func:`unmapped_clinic_cause`.
    """

    def __init__(self, display_id: str) -> None:
        super().__init__(unmapped_clinic_cause(display_id))
        self.display_id = display_id


@dataclass(frozen=True)
class ClinicCheck:
    """One clinic: our display id -> platform id, and whether the platform agrees.

    ``platform_id`` is None when the clinic has no mapping and the platform does not list
    its display id; ``mapped`` is True when this check stored the platform's id.
    """

    display_id: str
    platform_id: int | None
    ok: bool
    mapped: bool = False


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

    A clinic with no internal id mapped gets the one the platform lists for its display
    id. Stamps ``verified_at`` (``now``, aware UTC) on the clinics that agree and
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
        try:
            credentials = prescriber_credentials(prescriber, cipher)
        except (MissingCredentials, CredentialError) as exc:
            raise Invalid(unusable_credentials_cause(email, exc)) from None
    try:
        remote = {c.display_id: c.id for c in client.list_clinics(credentials)}
    except ConnectorError as exc:
        raise platform_failure(exc, base_url=base_url, login=email) from None
    checks = []
    with db.session() as session:
        for clinic in session.scalars(select(Clinic).order_by(Clinic.id)):
            listed = remote.get(clinic.display_id)
            mapped = clinic.platform_id is None and listed is not None
            if mapped:
                clinic.platform_id = listed
            ok = listed is not None and listed == clinic.platform_id
            clinic.verified_at = now if ok else None
            checks.append(
                ClinicCheck(
                    display_id=clinic.display_id,
                    platform_id=clinic.platform_id,
                    ok=ok,
                    mapped=mapped,
                )
            )
    return checks
