"""The calling patient: their region (which decides the route) and their prescriptions.

A patient is found by the token's subject, which is ``Patient.external_ref``.
Results carry ids, codes and statuses only: no name, date of birth or address.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import Database
from app.models import Patient, Pharmacy, Prescription
from app.services.errors import NotFound
from app.services.paging import Page, page_offset
from app.services.prescriptions import status_url
from app.services.regions import RegionInfo, region_or_invalid


@dataclass(frozen=True)
class PatientProfile:
    """``subject`` (external ref) and the patient's :class:`RegionInfo`."""

    subject: str
    region: RegionInfo


@dataclass(frozen=True)
class PrescriptionSummary:
    """One of the patient's prescriptions: ids, status and times (aware UTC)."""

    id: int
    reference: str
    status: str
    created_at: datetime
    updated_at: datetime | None
    pharmacy_id: int | None
    pharmacy_name: str | None
    status_url: str


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
        return PatientProfile(subject=subject, region=region_or_invalid(session, patient.region_code))


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


def patient_prescriptions(db: Database, subject: str, *, page: int = 1, per_page: int = 20) -> Page[PrescriptionSummary]:
    """Return one page of the patient's prescriptions, newest first (created_at, then id).

    ``page`` is 1-based, ``per_page`` 1..50 (``ValueError`` otherwise); :class:`NotFound`
    when ``subject`` is no patient.
    """
    offset = page_offset(page=page, per_page=per_page)
    with db.session() as session:
        patient = _patient(session, subject)
        total = session.scalar(
            select(func.count()).select_from(Prescription).where(Prescription.patient_id == patient.id)
        ) or 0
        rows = session.execute(
            select(Prescription, Pharmacy.name)
            .outerjoin(Pharmacy, Pharmacy.id == Prescription.pharmacy_id)
            .where(Prescription.patient_id == patient.id)
            .order_by(Prescription.created_at.desc(), Prescription.id.desc())
            .limit(per_page)
            .offset(offset)
        ).all()
        items = tuple(
            PrescriptionSummary(
                id=rx.id,
                reference=rx.reference,
                status=rx.status,
                created_at=rx.created_at,
                updated_at=rx.updated_at,
                pharmacy_id=rx.pharmacy_id,
                pharmacy_name=pharmacy_name,
                status_url=status_url(rx.id),
            )
            for rx, pharmacy_name in rows
        )
    return Page(items=items, page=page, per_page=per_page, total=int(total))
