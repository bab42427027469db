"""The dispatch worker: fulfils outbox rows, exactly one platform prescription per ours.

For each claimed row (contract §1, §2, §4):

1. In a short transaction: check the lease, count the attempt, mark
   ``outcome_unknown`` (an intent record), and snapshot what the send needs.
2. With no transaction open: if an earlier attempt's outcome is unknown, look
   the ``client_ref_id`` up and adopt a token found; otherwise issue once.
3. In a short transaction, if the lease is still ours: store the outcome.

Outcomes: success -> ``issued`` + token; HTTP 200 ``success:false`` -> ``rejected``
with the platform's message and field errors, never retried; transient
failures -> rescheduled through ``next_attempt_at`` with full-jitter backoff
(honouring ``Retry-After``); after ``max_attempts`` -> ``dead``. While the
circuit breaker is open, rows are rescheduled without counting an attempt
(the breaker itself decides when to let a trial call through: half-open).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pybreaker
from sqlalchemy import select, update
from sqlalchemy.orm import joinedload, selectinload

from app.config import Settings
from app.crypto import CredentialCipher, CredentialError
from app.db import Database, utcnow
from app.models import DispatchOutbox, Prescription, WebhookInbox
from app.queue import claim, release
from app.services.credentials import MissingCredentials, prescriber_credentials
from app.services.mail import EmailJob, Mailer, email_job
from connector import (
    ConnectorClient,
    IssueRequest,
    MedicineLine,
    PatientDetails,
    PrescriberCredentials,
    build_issue_payload,
)
from connector.backoff import full_jitter_delay, retry_delay
from connector.errors import (
    ConnectorError,
    PayloadError,
    PlatformRejected,
    PlatformUnavailable,
    RateLimited,
    TransportError,
)
from webhooks.history import record_local_status

log = logging.getLogger("app.dispatch")
MAX_DELAY_S = 86400.0  # a Retry-After beyond a day is taken as a day


def _trips_breaker(exc: BaseException) -> bool:
    """Only platform-health failures count towards opening the circuit."""
    return isinstance(exc, (TransportError, PlatformUnavailable, RateLimited))


def make_breaker(settings: Settings) -> pybreaker.CircuitBreaker:
    """Return the per-process circuit breaker around the platform."""
    return pybreaker.CircuitBreaker(
        fail_max=settings.breaker_fail_max,
        reset_timeout=settings.breaker_reset_s,
        exclude=[lambda exc: not _trips_breaker(exc)],
        # Keep the real error on the tripping call: it may have reached the platform.
        throw_new_error_on_trip=False,
        name="erx-platform",
    )


@dataclass(frozen=True)
class ErxJob:
    """A snapshot of one e-prescription send, taken inside the claim's transaction."""

    outbox_id: int
    prescription_id: int
    reference: str
    credentials: PrescriberCredentials
    request: IssueRequest
    lookup_first: bool


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt: ``kind`` in issued|rejected|retry|emailed|email_in_doubt."""

    kind: str
    token: str | None = None
    message: str | None = None
    errors: dict | None = None
    retry_error: ConnectorError | Exception | None = None
    definitely_not_sent: bool = False
    adopted: bool = False
    keep_unknown: bool | None = None


class Dispatcher:
    """Claims due outbox rows and fulfils them (one process or many; see module docs).

    ``clock`` returns aware UTC datetimes and ``rand`` floats in [0, 1), both
    injectable so backoff is testable without sleeping.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        client: ConnectorClient,
        *,
        worker_id: str,
        mailer: Mailer | None = None,
        breaker: pybreaker.CircuitBreaker | None = None,
        clock: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.settings = settings
        self.client = client
        self.worker_id = worker_id
        self.mailer = mailer or Mailer(settings)
        self.breaker = breaker or make_breaker(settings)
        self.cipher = CredentialCipher(settings.encryption_keys)
        self.clock = clock
        self.rand = rand

    # -- the loop -------------------------------------------------------------

    def run_batch(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Claim one batch and process it; returns how many rows were handled.

        If ``should_stop()`` turns true, the rows not yet started are released.
        """
        ids = claim(
            self.db,
            DispatchOutbox,
            worker_id=self.worker_id,
            now=self.clock(),
            lease_s=self.settings.lease_s,
            limit=self.settings.worker_batch,
        )
        for done, outbox_id in enumerate(ids):
            if should_stop():
                release(self.db, DispatchOutbox, ids[done:], worker_id=self.worker_id)
                return done
            self.process(outbox_id)
        return len(ids)

    def process(self, outbox_id: int) -> str:
        """Run one attempt for a row leased to this worker; returns the row's new state."""
        job = self._begin(outbox_id)
        if job is None:
            return "skipped"
        if isinstance(job, Outcome):  # could not even build the request
            return self._finish(outbox_id, job)
        if isinstance(job, EmailJob):
            return self._finish(outbox_id, self._email(job))
        outcome = self._send(job)
        if outcome.kind == "retry" and outcome.definitely_not_sent:
            outcome = replace(outcome, keep_unknown=job.lookup_first)
        try:
            return self._finish(outbox_id, outcome)
        except Exception as exc:  # noqa: BLE001 - e.g. a token the schema can't hold
            # Count it like any failed attempt so the row reaches the dead letters
            # instead of coming back every lease period; the outcome stays unknown.
            log.error("storing the outcome failed: outbox_id=%s error=%s", outbox_id, type(exc).__name__)
            return self._finish(outbox_id, Outcome("retry", retry_error=exc))

    # -- step 1: claim-time snapshot -----------------------------------------

    def _begin(self, outbox_id: int) -> ErxJob | EmailJob | Outcome | None:
        with self.db.session() as session:
            row = session.get(DispatchOutbox, outbox_id, with_for_update=True)
            if row is None or row.state != "pending" or row.locked_by != self.worker_id:
                return None
            # Everything the payload needs in two queries instead of a lazy load each.
            prescription = session.scalars(
                select(Prescription)
                .where(Prescription.id == row.prescription_id)
                .options(
                    joinedload(Prescription.patient),
                    joinedload(Prescription.prescriber),
                    joinedload(Prescription.clinic),
                    joinedload(Prescription.pharmacy),
                    selectinload(Prescription.medicines),
                )
            ).one()
            now = self.clock()
            # The batch's lease started at claim time; each row gets a full lease of
            # its own, longer than one attempt can take (Settings checks lease_s).
            row.locked_until = now + timedelta(seconds=self.settings.lease_s)
            row.attempts += 1
            row.updated_at = now
            if row.flow == "email":
                return email_job(prescription)
            lookup_first = row.outcome_unknown
            try:
                credentials = prescriber_credentials(prescription.prescriber, self.cipher)
            except (MissingCredentials, CredentialError) as exc:
                return Outcome("retry", retry_error=exc, definitely_not_sent=True)
            try:
                request = _issue_request(prescription)
                # Build once here so data the platform could never accept is
                # rejected now, without a call, instead of retried until dead.
                build_issue_payload(request, secure_pin=credentials.secure_pin)
            except PayloadError as exc:
                # Nothing is sent, so an earlier attempt's unknown outcome stays unknown.
                return Outcome("rejected", message=str(exc), errors=exc.errors, keep_unknown=lookup_first)
            # Intent record: from here until a definite answer, a crash or a lost
            # response means "look it up before sending again".
            row.outcome_unknown = True
            return ErxJob(
                outbox_id=row.id,
                prescription_id=prescription.id,
                reference=prescription.reference,
                credentials=credentials,
                request=request,
                lookup_first=lookup_first,
            )

    # -- step 2: the call, no transaction open -------------------------------

    def _send(self, job: ErxJob) -> Outcome:
        try:
            return self.breaker.call(self._lookup_then_issue, job)
        except pybreaker.CircuitBreakerError as exc:
            return Outcome("retry", retry_error=exc, definitely_not_sent=True)
        except PlatformRejected as exc:
            return Outcome("rejected", message=exc.message, errors=dict(exc.errors or {}))
        except ConnectorError as exc:
            return Outcome("retry", retry_error=exc, definitely_not_sent=not exc.outcome_unknown)

    def _lookup_then_issue(self, job: ErxJob) -> Outcome:
        if job.lookup_first:
            try:
                found = self.client.find_by_client_ref(job.credentials, job.reference)
            except PlatformRejected as exc:
                # The lookup itself was refused: we still don't know, so we may not send.
                raise ConnectorError(
                    "lookup by client_ref_id was refused",
                    code=exc.code or "lookup_refused",
                    retryable=True,
                    outcome_unknown=True,
                ) from None
            if found:
                if len(found) > 1:
                    log.error(
                        "platform holds %d prescriptions for client_ref_id=%s; adopting the first",
                        len(found),
                        job.reference,
                    )
                log.info("adopted existing token: client_ref_id=%s", job.reference)
                return Outcome("issued", token=found[0].id, adopted=True)
        issued = self.client.issue(job.credentials, job.request)
        return Outcome("issued", token=issued.token)

    def _email(self, job: EmailJob) -> Outcome:
        # Exactly-once policy and its stages: app/services/mail.py.
        delivery = self.mailer.deliver_once(self.db, job, clock=self.clock)
        if delivery.kind == "accepted":
            return Outcome("emailed", message="accepted earlier; not sent again" if delivery.already else None)
        if delivery.kind == "in_doubt":
            return Outcome("email_in_doubt", message=delivery.reason)
        return Outcome("retry", retry_error=delivery.error)

    # -- step 3: store the outcome -------------------------------------------

    def _finish(self, outbox_id: int, outcome: Outcome) -> str:
        now = self.clock()
        with self.db.session() as session:
            row = session.get(DispatchOutbox, outbox_id, with_for_update=True)
            if row is None or row.locked_by != self.worker_id:
                # Our lease ran out and another worker owns the row now; it will
                # look the reference up first (outcome_unknown), so nothing is lost.
                level = logging.ERROR if outcome.kind == "issued" else logging.WARNING
                log.log(level, "lease lost before storing outcome=%s: outbox_id=%s", outcome.kind, outbox_id)
                return "lost_lease"
            # The outbox row's lock serialises this prescription's dispatch; webhooks
            # and reconciliation can't touch it before its token is stored here.
            prescription = session.get(Prescription, row.prescription_id)
            assert prescription is not None
            row.updated_at = now
            row.locked_by = row.locked_until = None
            if outcome.kind == "issued":
                prescription.platform_token = outcome.token
                # Webhooks may have beaten this commit; let them be applied now.
                session.execute(
                    update(WebhookInbox)
                    .where(
                        WebhookInbox.prescription_token == outcome.token,
                        WebhookInbox.state.in_(("pending", "dead")),
                        WebhookInbox.last_error == "unknown_prescription",
                    )
                    .values(state="pending", attempts=0, next_attempt_at=now, processed_at=None)
                )
                detail = "adopted after unknown outcome" if outcome.adopted else None
                record_local_status(session, prescription, "issued", source="api", detail=detail, now=now)
                row.state, row.outcome_unknown, row.last_error = "done", False, None
                log.info("issued: prescription_id=%s attempts=%s", prescription.id, row.attempts)
                return "done"
            if outcome.kind == "emailed":
                record_local_status(session, prescription, "emailed", source="service", detail=outcome.message, now=now)
                row.state, row.outcome_unknown, row.last_error = "done", False, None
                return "done"
            if outcome.kind == "email_in_doubt":
                # The server may have the message: never resent automatically; an operator decides.
                record_local_status(
                    session, prescription, "email_in_doubt", source="service", detail=outcome.message, now=now
                )
                row.state, row.outcome_unknown = "dead", True
                row.last_error = f"email_in_doubt: {outcome.message}"
                log.warning("email in doubt, dead letter: prescription_id=%s", prescription.id)
                return "dead"
            if outcome.kind == "rejected":
                prescription.rejection_message = outcome.message
                prescription.rejection_errors = json.dumps(outcome.errors or {})
                record_local_status(
                    session, prescription, "rejected", source="api", detail=outcome.message, now=now
                )
                unknown = outcome.keep_unknown if outcome.keep_unknown is not None else False
                row.state, row.outcome_unknown, row.last_error = "done", unknown, "rejected"
                log.info("rejected: prescription_id=%s", prescription.id)
                return "done"
            return self._retry(session, row, prescription, outcome, now)

    def _retry(self, session, row: DispatchOutbox, prescription: Prescription, outcome: Outcome, now: datetime) -> str:  # type: ignore[no-untyped-def]
        error = outcome.retry_error
        code = getattr(error, "code", None) or type(error).__name__
        row.last_error = str(code)
        if outcome.keep_unknown is not None:
            # Nothing reached the platform this time: only what was unknown before stays so.
            row.outcome_unknown = outcome.keep_unknown
        if isinstance(error, pybreaker.CircuitBreakerError):
            # The platform was not asked: no attempt counted; wait out the breaker.
            row.attempts = max(row.attempts - 1, 0)
            row.last_error = "circuit_open"
            delay = self.settings.breaker_reset_s * (0.5 + self.rand() / 2)
            row.next_attempt_at = now + timedelta(seconds=delay)
            return "pending"
        if row.attempts >= self.settings.dispatch_max_attempts:
            row.state = "dead"
            record_local_status(session, prescription, "dead", source="service", detail=row.last_error, now=now)
            log.warning("dead letter: prescription_id=%s last_error=%s", prescription.id, row.last_error)
            return "dead"
        if isinstance(error, ConnectorError):
            delay = retry_delay(
                error,
                row.attempts - 1,
                base_s=self.settings.dispatch_backoff_base_s,
                cap_s=self.settings.dispatch_backoff_cap_s,
                rand=self.rand,
            )
        else:
            delay = full_jitter_delay(
                row.attempts - 1,
                base_s=self.settings.dispatch_backoff_base_s,
                cap_s=self.settings.dispatch_backoff_cap_s,
                rand=self.rand,
            )
        delay = min(delay, MAX_DELAY_S)
        row.next_attempt_at = now + timedelta(seconds=delay)
        log.info(
            "retry scheduled: prescription_id=%s attempt=%s error=%s delay_s=%.2f",
            prescription.id,
            row.attempts,
            row.last_error,
            delay,
        )
        return "pending"


def _issue_request(prescription: Prescription) -> IssueRequest:
    patient = prescription.patient
    pharmacy = prescription.pharmacy
    if pharmacy is None or pharmacy.branch_id is None:
        raise PayloadError({"contact_id": ["missing"]}, message="The pharmacy has no platform branch id.")
    return IssueRequest(
        clinic_id=prescription.clinic.platform_id,
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
            MedicineLine(vpid=m.vpid or "", description=m.description, quantity=m.quantity, directions=m.directions)
            for m in prescription.medicines
        ),
    )
