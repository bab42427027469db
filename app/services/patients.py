"""The calling patient: their region (which decides the route) and their prescriptions.

A patient is found by the token's subject, which is ``Patient.external_ref``.
Results carry ids, codes and statuses only: no name, date of birth or address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.foundation.db import Database
from app.foundation.errors import NotFound
from app.foundation.models import Patient
from app.mechanisms.audit import Access
from app.services.paging import Page, page_offset
from app.services.prescription_reads import Viewer, patient_page, view_from_row
from app.services.prescriptions import status_url
from app.services.regions import RegionInfo, region_or_invalid


@dataclass(frozen=True)
class PatientProfile:
    """``subject`` (external ref) and the patient's :class:`RegionInfo`."""

    subject: str
    region: RegionInfo


def _patient(session: Session, subject: str, *, for_update: bool = False) -> Patient:
    query = select(Patient).where(Patient.external_ref == subject)
    patient = session.scalars(query.with_for_update() if for_update else query).first()
    if patient is None:
        raise NotFound("No patient record for this identity.", code="patient_not_found")
    return patient


def patient_profile(db: Database, subject: str) -> PatientProfile:
    """Return the profile of the patient ``subject``; :class:`NotFound` when there is none."""
    with db.session() as session:
        patient = _patient(session, subject)
        return PatientProfile(
            subject=subject, region=region_or_invalid(session, patient.region_code)
        )


def set_region(db: Database, subject: str, region: str) -> PatientProfile:
    """Set the region of the patient ``subject`` and return the new profile.

    Raises :class:`NotFound` (no such patient) or :class:`Invalid` (unknown region,
    field ``region``); nothing is written then.
    """
    with db.session() as session:
        patient = _patient(session, subject, for_update=True)
        info = region_or_invalid(session, region)
        patient.region_code = info.code
        return PatientProfile(subject=subject, region=info)


def patient_prescription_page(
    session: Session,
    subject: str,
    *,
    page: int = 1,
    per_page: int = 20,
    recorded: Access | None = None,
) -> Page[dict[str, Any]]:
    """Return one page of the patient's prescriptions, newest first (created_at, then id).

    Each item is the prescription's view (``app.services.prescription_reads``,
    as a patient sees it: no platform token, no patient block) plus the
    summary keys ``created_at``/``updated_at`` (aware UTC datetimes),
    ``pharmacy_name`` and ``status_url``. One query reads the page and the
    total, with the caller's patient record resolved in it; runs in the
    caller's ``session`` so the audit row can join its transaction. ``page``
    is 1-based, ``per_page`` 1..50 (``ValueError`` otherwise); :class:`NotFound`
    when ``subject`` is no patient. ``recorded``: the access to audit as the page is
    read (:func:`app.services.prescription_reads.patient_page`; none for an unknown
    subject).
    """
    offset = page_offset(page=page, per_page=per_page)
    viewer = Viewer(patient_ref=subject, privileged=False)
    found = patient_page(
        session, viewer=viewer, subject=subject, limit=per_page, offset=offset, recorded=recorded
    )
    if not found.patient_found:
        raise NotFound("No patient record for this identity.", code="patient_not_found")
    items = tuple(
        view_from_row(row, viewer=viewer)
        | {
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "pharmacy_name": row["pharmacy_name"],
            "status_url": status_url(row["id"]),
        }
        for row in found.rows
    )
    return Page(items=items, page=page, per_page=per_page, total=found.total)


def patient_prescriptions(
    db: Database, subject: str, *, page: int = 1, per_page: int = 20
) -> Page[dict[str, Any]]:
    """:func:`patient_prescription_page` in a transaction of its own; same arguments and errors."""
    with db.session() as session:
        return patient_prescription_page(session, subject, page=page, per_page=per_page)
