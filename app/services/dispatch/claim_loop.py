"""The dispatch worker's loop: claim outbox rows, run one attempt each, store what it came to.

For each claimed row (contract §1, §2, §4):

1. In a short transaction: check the lease, count the attempt, and snapshot
   what the route needs (:func:`~app.services.dispatch.erx_route.erx_job` or
   :func:`~app.services.dispatch.email_route.email_job`); mark the intent
   (outcome unknown) before an e-prescription send.
2. With no transaction open: the route's call.
3. In a short transaction, if the lease is still ours: store the
   :class:`~app.services.dispatch.outcome.Attempt` through
   :mod:`app.history` and the one queue mechanism (:mod:`app.queue`) with the
   one retry policy (:mod:`app.retry`).

Success -> ``issued`` + token; HTTP 200 ``success:false`` -> ``rejected``
with the platform's message and field errors, never retried; transient
failures -> rescheduled with full-jitter backoff (``Retry-After`` honoured,
capped); after ``dispatch_max_attempts`` -> ``dead``. While the circuit
breaker is open, rows wait without counting an attempt. A refused prescriber
login (``login_failed``) -> ``blocked_credentials``, and the prescriber is
marked refused: their other rows are blocked when claimed, with no login, until
``prescribers set-credentials`` reopens them (issue 9: retrying a wrong
password can lock the account).

Each row is processed under ``request_id_scope(row.request_id)``: its log lines
carry the id of the API request that queued it. Sends are counted in
``erx_sends_total{route,outcome}`` and ``erx_send_queued_to_issued_seconds``.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from datetime import datetime

import pybreaker
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from app import metrics
from app.config import Settings
from app.db import Database, utcnow
from app.history import record_local_status
from app.logs import request_id_scope
from app.models import DispatchOutbox, Prescription, WebhookInbox
from app.queue import (
    block_credentials,
    claim,
    extend_lease,
    holds_lease,
    mark_dead,
    park,
    release,
    release_row,
    reopen_matching,
    retry_or_dead,
)
from app.retry import RetryPolicy
from app.services.credentials import credential_cipher, mark_credentials_refused
from app.services.dispatch.email_route import email_job, send_email
from app.services.dispatch.erx_route import ErxJob, ErxRoute, erx_job, make_breaker
from app.services.dispatch.outcome import Attempt, Outcome, mark_intent, outcome_unknown_after
from app.services.errors import Invalid
from app.services.mail import EmailJob, Mailer
from connector import ConnectorClient

log = logging.getLogger("app.dispatch")


class OutboxRowVanished(RuntimeError):
    """An outbox row's prescription is gone while the row is leased (a broken foreign key)."""


class Dispatcher:
    """Claims due outbox rows and fulfils them (one process or many; see module docs).

    ``now`` returns aware UTC datetimes and ``rand`` floats in [0, 1), both
    injectable so backoff is testable without sleeping. Raises
    :class:`app.services.errors.Misconfigured` for unusable ``ERX_ENCRYPTION_KEYS``.
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
        now: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.settings = settings
        self.worker_id = worker_id
        self.mailer = mailer or Mailer(settings)
        self.breaker = breaker or make_breaker(settings)
        self.erx = ErxRoute(client, self.breaker)
        self.cipher = credential_cipher(settings.encryption_keys)
        self.now = now
        self.policy = RetryPolicy(
            base_s=settings.dispatch_backoff_base_s,
            cap_s=settings.dispatch_backoff_cap_s,
            max_attempts=settings.dispatch_max_attempts,
            rand=rand,
        )

    def run_batch(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Claim one batch and process it; returns how many rows were handled.

        If ``should_stop()`` turns true, the rows not yet started are released.
        """
        ids = claim(
            self.db,
            DispatchOutbox,
            worker_id=self.worker_id,
            now=self.now(),
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
        """Run one attempt for a row leased to this worker; returns the row's new state.

        ``"skipped"`` when the row is not (or no longer) leased to this worker.
        Every log line of the job carries the request id stored with the row.
        """
        with self.db.session() as session:
            request_id = session.scalar(select(DispatchOutbox.request_id).where(DispatchOutbox.id == outbox_id))
        with request_id_scope(request_id):
            return self._process(outbox_id)

    def _process(self, outbox_id: int) -> str:
        began = self.now()
        started = self._begin(outbox_id)
        if started is None:
            return "skipped"
        job, unknown_before = started
        if isinstance(job, str):  # blocked without an attempt
            return job
        if isinstance(job, Attempt):  # could not even build the request
            attempt = job
        elif isinstance(job, EmailJob):
            attempt = send_email(self.mailer, self.db, job, now=self.now)
        else:
            attempt = self.erx.send(job)
        try:
            return self._finish(outbox_id, attempt, unknown_before=unknown_before, began=began)
        except Exception as exc:  # noqa: BLE001 - e.g. a token the schema can't hold
            # Count it like any failed attempt so the row reaches the dead letters
            # instead of coming back every lease period; the outcome stays unknown.
            log.error("storing the outcome failed: outbox_id=%s error=%s", outbox_id, type(exc).__name__)
            # Only a send that went out can have left a prescription on the platform.
            kind = Outcome.RETRY_UNKNOWN if isinstance(job, ErxJob) else Outcome.RETRY_UNSENT
            return self._finish(outbox_id, Attempt(kind, error=exc), unknown_before=unknown_before, began=began)

    # -- step 1: claim-time snapshot -----------------------------------------

    def _begin(self, outbox_id: int) -> tuple[ErxJob | EmailJob | Attempt | str, bool] | None:
        with self.db.session() as session:
            row = session.get(DispatchOutbox, outbox_id, with_for_update=True)
            if row is None or not holds_lease(row, self.worker_id):
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
            now = self.now()
            if row.flow != "email" and prescription.prescriber.credentials_refused_at is not None:
                # The platform refused these credentials and they have not changed
                # since: no login, no attempt; set-credentials reopens the row.
                block_credentials(row, error="login_failed")
                row.updated_at = now
                self._count_send(row, "blocked_credentials", now)
                log.warning(
                    "blocked_credentials (prescriber refused earlier): prescription_id=%s prescriber_id=%s",
                    prescription.id,
                    prescription.prescriber_id,
                )
                return "blocked_credentials", row.outcome_unknown
            # The batch's lease started at claim time; each row gets a full lease of
            # its own, longer than one attempt can take (Settings checks lease_s).
            extend_lease(row, now=now, lease_s=self.settings.lease_s)
            row.attempts += 1
            row.updated_at = now
            unknown_before = row.outcome_unknown
            if row.flow == "email":
                try:
                    return email_job(prescription), unknown_before
                except Invalid as exc:
                    return Attempt(Outcome.INVALID, message=exc.message, errors=exc.errors), unknown_before
            job = erx_job(row.id, prescription, self.cipher, lookup_first=unknown_before)
            if isinstance(job, ErxJob):
                # From here until a definite answer, a crash or a lost response
                # means "look it up before sending again".
                mark_intent(row)
            return job, unknown_before

    # -- step 3: store the outcome -------------------------------------------

    def _finish(
        self, outbox_id: int, attempt: Attempt, *, unknown_before: bool, began: datetime | None = None
    ) -> str:
        now = self.now()
        with self.db.session() as session:
            row = session.get(DispatchOutbox, outbox_id, with_for_update=True)
            if row is None or row.locked_by != self.worker_id:
                # Our lease ran out and another worker owns the row now; it will
                # look the reference up first (outcome_unknown), so nothing is lost.
                issued = attempt.outcome in (Outcome.ISSUED, Outcome.ADOPTED)
                log.log(
                    logging.ERROR if issued else logging.WARNING,
                    "lease lost before storing outcome=%s: outbox_id=%s",
                    attempt.outcome.value,
                    outbox_id,
                )
                return "lost_lease"
            # The outbox row's lock serialises this prescription's dispatch; webhooks
            # and reconciliation can't touch it before its token is stored here.
            prescription = session.get(Prescription, row.prescription_id)
            if prescription is None:
                raise OutboxRowVanished(f"outbox row {outbox_id} has no prescription {row.prescription_id}")
            row.updated_at = now
            release_row(row)
            row.outcome_unknown = outcome_unknown_after(attempt.outcome, unknown_before=unknown_before)
            if attempt.outcome in (Outcome.ISSUED, Outcome.ADOPTED):
                return self._issued(session, row, prescription, attempt, now)
            if attempt.outcome is Outcome.EMAILED:
                record_local_status(
                    session, prescription, "emailed", source="service", detail=attempt.message, now=now
                )
                row.state, row.last_error = "done", None
                self._count_send(row, "emailed", now, queued_at=row.created_at)
                return "done"
            if attempt.outcome is Outcome.CREDENTIALS_REFUSED:
                return self._credentials_refused(row, prescription, attempt, now, began)
            if attempt.outcome is Outcome.EMAIL_IN_DOUBT:
                # The server may have the message: never resent automatically; an operator
                # confirms (`outbox confirm-sent`) or requeues (same Message-ID).
                record_local_status(
                    session, prescription, "email_in_doubt", source="service", detail=attempt.message, now=now
                )
                mark_dead(row, error=f"email_in_doubt: {attempt.message}")
                self._count_send(row, "email_in_doubt", now)
                log.warning("email in doubt, dead letter: prescription_id=%s", prescription.id)
                return "dead"
            if attempt.outcome in (Outcome.REJECTED, Outcome.INVALID):
                prescription.rejection_message = attempt.message
                prescription.rejection_errors = json.dumps(attempt.errors)
                record_local_status(
                    session, prescription, "rejected", source="api", detail=attempt.message, now=now
                )
                row.state, row.last_error = "done", "rejected"
                self._count_send(row, attempt.outcome.value, now)
                log.info("rejected: prescription_id=%s", prescription.id)
                return "done"
            return self._retry(session, row, prescription, attempt, now)

    def _issued(
        self, session: Session, row: DispatchOutbox, prescription: Prescription, attempt: Attempt, now: datetime
    ) -> str:
        prescription.platform_token = attempt.platform_token
        # Webhooks may have beaten this commit; let the ones waiting for this token be applied now.
        reopen_matching(
            session,
            WebhookInbox,
            WebhookInbox.platform_token == attempt.platform_token,
            WebhookInbox.state.in_(("pending", "dead")),
            WebhookInbox.awaiting_prescription.is_(True),
            now=now,
            processed_at=None,
        )
        detail = "adopted after unknown outcome" if attempt.outcome is Outcome.ADOPTED else None
        record_local_status(session, prescription, "issued", source="api", detail=detail, now=now)
        row.state, row.last_error = "done", None
        self._count_send(row, attempt.outcome.value, now, queued_at=row.created_at)
        log.info("issued: prescription_id=%s attempts=%s", prescription.id, row.attempts)
        return "done"

    def _credentials_refused(
        self,
        row: DispatchOutbox,
        prescription: Prescription,
        attempt: Attempt,
        now: datetime,
        began: datetime | None,
    ) -> str:
        prescriber = prescription.prescriber
        changed = prescriber.credentials_changed_at
        if began is not None and changed is not None and changed >= began:
            # New credentials were stored while this attempt used the old ones:
            # the refusal is about those; try again with the new ones.
            row.last_error = attempt.error_code
            park(row, delay_s=0, now=now)
            log.info("login refused for replaced credentials, retrying: prescription_id=%s", prescription.id)
            return "pending"
        block_credentials(row, error=attempt.error_code or "login_failed")
        mark_credentials_refused(prescriber, now=now)
        self._count_send(row, "blocked_credentials", now)
        log.warning(
            "blocked_credentials (platform refused the login): prescription_id=%s prescriber_id=%s",
            prescription.id,
            prescription.prescriber_id,
        )
        return "blocked_credentials"

    @staticmethod
    def _count_send(row: DispatchOutbox, outcome: str, now: datetime, *, queued_at: datetime | None = None) -> None:
        """Count a send that came to ``outcome`` on ``row.flow``'s route; with ``queued_at``
        (the outbox row's creation, when it was queued) observe queued -> issued/emailed seconds."""
        metrics.SENDS.labels(route=row.flow, outcome=outcome).inc()
        if queued_at is not None:
            metrics.SEND_QUEUED_TO_ISSUED.observe(max(0.0, (now - queued_at).total_seconds()))

    def _retry(
        self, session: Session, row: DispatchOutbox, prescription: Prescription, attempt: Attempt, now: datetime
    ) -> str:
        if attempt.outcome is Outcome.CIRCUIT_OPEN:
            # The platform was not asked: no attempt counted; wait out the breaker.
            row.attempts = max(row.attempts - 1, 0)
            row.last_error = "circuit_open"
            park(row, delay_s=self.policy.breaker_wait_s(self.settings.breaker_reset_s), now=now)
            return "pending"
        state = retry_or_dead(
            row,
            policy=self.policy,
            error=attempt.error_code,
            now=now,
            retry_after_s=getattr(attempt.error, "retry_after_s", None),
        )
        if state == "dead":
            record_local_status(session, prescription, "dead", source="service", detail=row.last_error, now=now)
            self._count_send(row, "dead", now)
            log.warning("dead letter: prescription_id=%s last_error=%s", prescription.id, row.last_error)
            return "dead"
        log.info(
            "retry scheduled: prescription_id=%s attempt=%s error=%s next_attempt_at=%s",
            prescription.id,
            row.attempts,
            row.last_error,
            row.next_attempt_at.isoformat(),
        )
        return "pending"
