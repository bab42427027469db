"""Region A's route: the prescription goes to the pharmacy by email, once per attempt."""

from __future__ import annotations

from app.models import Prescription
from app.services.dispatch.outcome import Attempt, Outcome
from app.services.errors import Invalid
from app.services.mail import EmailJob, Mailer


def email_job(prescription: Prescription) -> EmailJob:
    """Build the email for ``prescription`` (patient, prescriber, clinic, medicines loaded).

    The text carries the patient's details because the pharmacy needs them; it
    is never logged. Raises :class:`app.services.errors.Invalid` when no
    pharmacy is chosen.
    """
    patient = prescription.patient
    pharmacy = prescription.pharmacy
    if pharmacy is None:
        raise Invalid("The prescription has no pharmacy.", errors={"pharmacy_id": ["missing"]})
    lines = [
        f"Prescription {prescription.reference}",
        f"Prescriber: {prescription.prescriber.name} (clinic {prescription.clinic.name})",
        f"Patient: {patient.first_name} {patient.last_name}, born {patient.date_of_birth.isoformat()}",
        f"Address: {patient.address_line1}, {patient.city} {patient.post_code}",
        "",
    ]
    lines += [f"- {m.description} x{m.quantity}: {m.directions}" for m in prescription.medicines]
    return EmailJob(
        prescription_id=prescription.id,
        reference=prescription.reference,
        to=pharmacy.email,
        subject=f"Prescription {prescription.reference}",
        text="\n".join(lines),
    )


def send_email(mailer: Mailer, job: EmailJob) -> Attempt:
    """Send ``job`` with ``mailer``; EMAILED, or RETRY_UNSENT on an OS/SMTP error."""
    try:
        mailer.send(job)
    except OSError as exc:  # smtplib's errors are OSErrors
        return Attempt(Outcome.RETRY_UNSENT, error=exc)
    return Attempt(Outcome.EMAILED)
