"""Mapping stored rows to the connector's :class:`connector.IssueRequest` (contract §4)."""

from __future__ import annotations

from app.foundation.models import Prescription
from app.services.clinics import UnmappedClinic
from connector import IssueRequest, MedicineLine, PatientDetails
from connector.errors import PayloadError


def issue_request(prescription: Prescription) -> IssueRequest:
    """Return the issue request for ``prescription`` (patient, pharmacy, clinic, medicines loaded).

    ``clinic_id`` is the clinic's platform (internal) id, never its display id
    (contract §3). Raises :class:`app.services.clinics.UnmappedClinic` when the
    clinic has no internal id mapped, :class:`connector.errors.PayloadError` when
    the pharmacy has no platform branch id.
    """
    clinic = prescription.clinic
    if clinic.platform_id is None:
        raise UnmappedClinic(clinic.display_id)
    patient = prescription.patient
    pharmacy = prescription.pharmacy
    if pharmacy is None or pharmacy.branch_id is None:
        raise PayloadError(
            {"contact_id": ["missing"]}, message="The pharmacy has no platform branch id."
        )
    return IssueRequest(
        clinic_id=clinic.platform_id,
        contact_id=pharmacy.branch_id,
        client_ref_id=prescription.reference,
        patient=PatientDetails(
            first_name=patient.first_name,
            last_name=patient.last_name,
            gender=patient.gender,
            date_of_birth=patient.date_of_birth,
            email=patient.email or "",
            phone=patient.phone or "",
            address_line1=patient.address_line1,
            address_line2=patient.address_line2 or "",
            city=patient.city,
            post_code=patient.post_code,
            country=patient.country,
        ),
        medicines=tuple(
            MedicineLine(
                vpid=m.vpid or "",
                description=m.description,
                quantity=m.quantity,
                directions=m.directions,
            )
            for m in prescription.medicines
        ),
    )
