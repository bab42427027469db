"""The dispatch worker's loop: claim outbox rows, run one attempt each, store what it came to.

A batch is claimed in one statement (:func:`app.mechanisms.queue.claim_batch`,
which also returns each row's request id, flow and ``outcome_unknown``), and
its prescriptions with everything a send needs are read in one query. Then,
for each claimed row (contract §1, §2, §4), on up to ``WORKER_SEND_THREADS``
threads at once, each with its own database session:

1. Snapshot what the route needs (:func:`~app.services.dispatch.erx_route.erx_job`
   or :func:`~app.services.dispatch.email_route.email_job`), then ONE guarded
   UPDATE checks the lease (``locked_by`` = this worker, ``pending``), counts
   the attempt, gives the row a full lease of its own and marks the intent
   (outcome unknown) before an e-prescription send; it also returns the
   prescriber's refusal mark and credentials date, so a refused login blocks
   the row without a login and credentials changed since the snapshot are
   read again.
2. With no transaction open: the route's call.
3. In a short transaction, if the lease is still ours: store the
   :class:`~app.services.dispatch.outcome.Attempt` through
   :mod:`app.mechanisms.history` and the one queue mechanism (:mod:`app.mechanisms.queue`) with the
   one retry policy (:mod:`app.mechanisms.retry`). An issued send costs five statements
   on PostgreSQL (step 1's guarded UPDATE; the guarded outbox UPDATE, history +
   event row in one statement, the reopen of webhooks waiting for the token,
   the prescription UPDATE), plus its share of the batch's claim and read;
   other outcomes lock and read the row first.

Stopping (``should_stop``) releases the rows not started; the ones in flight
finish. The circuit breaker, the token cache and the metrics are shared by the
threads (:class:`app.mechanisms.circuit_breaker.CircuitBreaker`).

Success -> ``issued`` + token; HTTP 200 ``success:false`` -> ``rejected``
with the platform's message and field errors, never retried; transient
failures -> rescheduled with full-jitter backoff (``Retry-After`` honoured,
capped); after ``dispatch_max_attempts`` -> ``dead``. While the circuit
breaker is open, rows wait without counting an attempt. A refused prescriber
login (``login_failed``) -> ``blocked_credentials``, and the prescriber is
marked refused: their other rows are blocked when claimed, with no login, until
``prescribers set-credentials`` reopens them (retrying a wrong password can
lock the account). Missing or undecryptable stored credentials, a configuration
fault no retry fixes, block the row at once too; a clinic with no API clinic id
mapped makes it a dead letter at once, nothing sent. Dead and blocked rows carry the
one-line cause an operator acts on as ``last_error``; metrics count them by a
reason code (``erx_sends_stopped_total``).

Each row is processed under ``request_id_scope(row.request_id)``: its log lines
carry the id of the API request that queued it. Sends are counted in
``erx_sends_total{route,outcome}`` and ``erx_send_queued_to_issued_seconds``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, or_, select
from sqlalchemy.orm import Session, joinedload, make_transient_to_detached

from app.foundation.config import Settings
from app.foundation.db import Database, utcnow
from app.foundation.errors import Invalid
from app.foundation.logs import request_id_scope
from app.foundation.models import DispatchOutbox, Prescriber, Prescription, WebhookInbox
from app.mechanisms import metrics
from app.mechanisms.circuit_breaker import CircuitBreaker
from app.mechanisms.history import Change, local, record
from app.mechanisms.queue import (
    PENDING,
    attempt_statement,
    block_credentials,
    claim_batch,
    finish,
    finish_statement,
    holds_lease,
    mark_dead,
    park,
    release,
    release_row,
    reopen,
    retry_or_dead,
    uncount_attempt,
)
from app.mechanisms.retry import RetryPolicy
from app.services.credentials import (
    credential_cipher,
    mark_credentials_refused,
    refused_login_cause,
)
from app.services.dispatch.email_route import email_job, send_email
from app.services.dispatch.erx_route import ErxJob, ErxRoute, erx_job, make_breaker
from app.services.dispatch.outcome import (
    Attempt,
    Outcome,
    intent_values,
    mark_intent,
    outcome_unknown_after,
    settle,
    store_emailed,
    undo_intent,
)
from app.services.mail import EmailJob, Mailer, in_doubt_cause
from connector import ConnectorClient

log = logging.getLogger("app.dispatch")

# What the claim returns for each row (besides id and next_attempt_at).
_CLAIMED = (
    DispatchOutbox.prescription_id,
    DispatchOutbox.flow,
    DispatchOutbox.request_id,
    DispatchOutbox.outcome_unknown,
    DispatchOutbox.created_at,
)


# Everything a payload needs, eagerly: one query with joins (the medicines order by position).
_FOR_A_SEND = (
    joinedload(Prescription.patient),
    joinedload(Prescription.prescriber),
    joinedload(Prescription.clinic),
    joinedload(Prescription.pharmacy),
    joinedload(Prescription.medicines),
)


def _count_attempt_statement(intent: bool) -> Any:
    """Before a send: the guarded UPDATE counting the attempt (built once per ``intent``).

    Matches only while the row is ``pending`` and leased to ``:worker_id``; sets
    attempts + 1, a fresh lease (``:until``), ``updated_at`` (``:now``) and, with
    ``intent``, the intent mark; returns the attempts and the prescriber's
    refusal and credentials-change times (``:prescriber_id``).
    """
    prescriber = select(Prescriber).where(Prescriber.id == bindparam("prescriber_id"))
    values: dict[str, Any] = {"updated_at": bindparam("now")}
    if intent:
        values.update(intent_values())
    return attempt_statement(
        DispatchOutbox,
        DispatchOutbox.id == bindparam("outbox_id"),
        holds_lease(DispatchOutbox, bindparam("worker_id")),
        DispatchOutbox.state == PENDING,
        **values,
    ).returning(
        DispatchOutbox.attempts,
        prescriber.with_only_columns(Prescriber.credentials_refused_at).scalar_subquery(),
        prescriber.with_only_columns(Prescriber.credentials_changed_at).scalar_subquery(),
    )


# Built once: building a statement costs more Python than executing a cached one.
_COUNT_ATTEMPT = {intent: _count_attempt_statement(intent) for intent in (False, True)}
# After a token: the outbox row is done if the lease is still ours (no row: it was lost).
_STORE_ISSUED = finish_statement(
    DispatchOutbox,
    DispatchOutbox.id == bindparam("outbox_id"),
    holds_lease(DispatchOutbox, bindparam("worker_id")),
    last_error=None,
    outcome_unknown=bindparam("unknown"),  # outcome_unknown_after(), computed per send
    updated_at=bindparam("now"),
)
# Storing an outcome: the outbox row, locked, if the lease is still ours (no row: it was lost).
_LOCK_LEASED = (
    select(DispatchOutbox)
    .where(
        DispatchOutbox.id == bindparam("outbox_id"),
        holds_lease(DispatchOutbox, bindparam("worker_id")),
    )
    .with_for_update()
)
# Webhooks may have beaten the token's commit: the ones waiting for it are applied now
# (reopened with these conditions, built once). Two equalities, not IN (...): an
# expanding IN is re-rendered on every execution.
_WAITING_FOR_TOKEN = (
    WebhookInbox.platform_token
    == bindparam("token"),  # not a column's name: those are the SET clause's
    or_(WebhookInbox.state == "pending", WebhookInbox.state == "dead"),
    WebhookInbox.awaiting_prescription.is_(True),
)


class OutboxRowVanished(RuntimeError):
    """An outbox row, or its prescription, is gone while the row is leased (a broken foreign key)."""


@dataclass(frozen=True)
class _Snapshot:
    """One prescription as read for a batch: relations loaded, detached (read only), and when it was read."""

    prescription: Prescription
    read_at: datetime


class Dispatcher:
    """Claims due outbox rows and fulfils them (one process or many; see module docs).

    ``now`` returns aware UTC datetimes and ``rand`` floats in [0, 1), both
    injectable so backoff is testable without sleeping. ``settings.worker_send_threads``
    sends run at once (1: one after the other). Raises
    :class:`app.foundation.errors.Misconfigured` for unusable ``ERX_ENCRYPTION_KEYS``.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        client: ConnectorClient,
        *,
        worker_id: str,
        mailer: Mailer | None = None,
        breaker: CircuitBreaker | None = None,
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
        self.threads = max(1, settings.worker_send_threads)
        self.policy = RetryPolicy(
            base_s=settings.dispatch_backoff_base_s,
            cap_s=settings.dispatch_backoff_cap_s,
            max_attempts=settings.dispatch_max_attempts,
            rand=rand,
        )

    def run_batch(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Claim one batch and process it; returns how many rows were started.

        ``should_stop()`` is asked before each row starts (in claim order, as a
        send thread comes free); once it is true, the rows not yet started are
        released and the ones in flight finish. An error in one row's job does
        not stop the others; the first one is raised once they have finished.
        """
        claimed = claim_batch(
            self.db,
            DispatchOutbox,
            *_CLAIMED,
            worker_id=self.worker_id,
            now=self.now(),
            lease_s=self.settings.lease_s,
            limit=max(self.settings.worker_batch, self.threads),
        )
        if not claimed:
            return 0
        snapshots = self._snapshots(row.prescription_id for row in claimed)
        threads = min(self.threads, len(claimed))
        if threads == 1:
            for done, row in enumerate(claimed):
                if should_stop():
                    release(
                        self.db,
                        DispatchOutbox,
                        [r.id for r in claimed[done:]],
                        worker_id=self.worker_id,
                    )
                    return done
                self._run(row, snapshots.get(row.prescription_id))
            return len(claimed)
        return self._run_threaded(claimed, snapshots, threads, should_stop)

    def _run_threaded(
        self,
        claimed: list[Row[Any]],
        snapshots: dict[int, _Snapshot],
        threads: int,
        should_stop: Callable[[], bool],
    ) -> int:
        free = threading.Semaphore(threads)
        futures: list[Future[str]] = []
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dispatch-send") as pool:
            for row in claimed:
                free.acquire()  # a row starts only when a thread is free for it
                if should_stop():
                    free.release()
                    break
                future = pool.submit(self._run, row, snapshots.get(row.prescription_id))
                future.add_done_callback(lambda _f: free.release())
                futures.append(future)
            if len(futures) < len(claimed):
                unstarted = [r.id for r in claimed[len(futures) :]]
                release(self.db, DispatchOutbox, unstarted, worker_id=self.worker_id)
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]
        return len(futures)

    def process(self, outbox_id: int) -> str:
        """Run one attempt for a row leased to this worker; returns the row's new state.

        ``"skipped"`` when the row is not (or no longer) leased to this worker.
        Every log line of the job carries the request id stored with the row.
        """
        with self.db.session() as session:
            row = session.execute(
                select(DispatchOutbox.id, *_CLAIMED).where(DispatchOutbox.id == outbox_id)
            ).one_or_none()
        if row is None:
            return "skipped"
        return self._run(row, self._snapshots([row.prescription_id]).get(row.prescription_id))

    def _run(self, row: Row[Any], snapshot: _Snapshot | None) -> str:
        with request_id_scope(row.request_id):
            return self._process(row, snapshot)

    def _snapshots(self, prescription_ids: Iterable[int]) -> dict[int, _Snapshot]:
        """Read the prescriptions with everything a send needs, in one query; keyed by id."""
        read_at = self.now()
        with self.db.session() as session:
            found = session.scalars(
                select(Prescription)
                .where(Prescription.id.in_(sorted(set(prescription_ids))))
                .options(*_FOR_A_SEND)
            ).unique()
            return {p.id: _Snapshot(p, read_at) for p in found}

    def _process(self, row: Row[Any], snapshot: _Snapshot | None) -> str:
        if snapshot is None:
            raise OutboxRowVanished(
                f"outbox row {row.id} has no prescription {row.prescription_id}"
            )
        began = snapshot.read_at
        started = self._begin(row, snapshot)
        if started is None:
            return "skipped"
        job, began, attempts = started
        if isinstance(job, str):  # blocked without an attempt
            return job
        unknown_before = bool(row.outcome_unknown)
        if isinstance(job, Attempt):  # could not even build the request
            attempt = job
        elif isinstance(job, EmailJob):
            attempt = send_email(self.mailer, self.db, job, now=self.now)
        else:
            attempt = self.erx.send(job)
        try:
            if attempt.outcome in (Outcome.ISSUED, Outcome.ADOPTED):
                return self._finish_issued(row, snapshot.prescription, attempt, attempts=attempts)
            return self._finish(row.id, attempt, unknown_before=unknown_before, began=began)
        except Exception as exc:  # noqa: BLE001 - e.g. a token the schema can't hold
            # Count it like any failed attempt so the row reaches the dead letters
            # instead of coming back every lease period; the outcome stays unknown.
            log.error(
                "storing the outcome failed: outbox_id=%s error=%s", row.id, type(exc).__name__
            )
            # Only a send that went out can have left a prescription on the platform.
            kind = Outcome.RETRY_UNKNOWN if isinstance(job, ErxJob) else Outcome.RETRY_UNSENT
            return self._finish(
                row.id, Attempt(kind, error=exc), unknown_before=unknown_before, began=began
            )

    # -- step 1: count the attempt ---------------------------------------------

    def _job(self, row: Row[Any], prescription: Prescription) -> ErxJob | EmailJob | Attempt:
        """What the route needs for ``row``, from ``prescription`` (relations loaded); no SQL."""
        if row.flow == "email":
            try:
                return email_job(prescription)
            except Invalid as exc:
                return Attempt(Outcome.INVALID, message=exc.message, errors=exc.errors)
        return erx_job(row.id, prescription, self.cipher, lookup_first=bool(row.outcome_unknown))

    def _begin(
        self, row: Row[Any], snapshot: _Snapshot
    ) -> tuple[ErxJob | EmailJob | Attempt | str, datetime, int] | None:
        """Count the attempt in one guarded UPDATE; returns ``(job, credentials read at, attempts)``.

        None when the row is not (or no longer) leased to this worker; the job
        is ``"blocked_credentials"`` when the prescriber's login was refused
        earlier (no attempt counted).
        """
        prescription = snapshot.prescription
        job = self._job(row, prescription)
        now = self.now()
        erx = row.flow != "email"
        params = {
            "outbox_id": row.id,
            "worker_id": self.worker_id,
            # The batch's lease started at claim time; each row gets a full lease of
            # its own, longer than one attempt can take (Settings checks lease_s).
            "until": now + timedelta(seconds=self.settings.lease_s),
            "now": now,
            "prescriber_id": prescription.prescriber_id,
        }
        # From here until a definite answer, a crash or a lost response means
        # "look it up before sending again" (the intent mark, for an e-prescription send).
        stmt = _COUNT_ATTEMPT[isinstance(job, ErxJob)]
        with self.db.session() as session:
            counted = session.connection().execute(stmt, params).one_or_none()
            if counted is None:
                return None  # not (or no longer) leased to this worker
            attempts, refused_at, changed_at = counted
            if erx and refused_at is not None:
                return (
                    self._blocked(session, row, prescription, now),
                    snapshot.read_at,
                    attempts - 1,
                )
            began = snapshot.read_at
            if erx and changed_at != prescription.prescriber.credentials_changed_at:
                # New credentials since the batch was read: send with those.
                began = now
                prescription = (
                    session.scalars(
                        select(Prescription)
                        .where(Prescription.id == prescription.id)
                        .options(*_FOR_A_SEND)
                    )
                    .unique()
                    .one()
                )
                fresh = self._job(row, prescription)
                if isinstance(fresh, ErxJob) != isinstance(job, ErxJob):
                    outbox = _leased_row(session, row.id)
                    if isinstance(fresh, ErxJob):
                        mark_intent(outbox)
                    else:
                        undo_intent(outbox, unknown_before=bool(row.outcome_unknown))
                job = fresh
            return job, began, attempts

    def _blocked(
        self, session: Session, row: Row[Any], prescription: Prescription, now: datetime
    ) -> str:
        """The platform refused these credentials and they have not changed since: no login, no attempt."""
        outbox = _leased_row(session, row.id)
        # Undo what the guarded UPDATE counted: this is not an attempt.
        uncount_attempt(outbox)
        undo_intent(outbox, unknown_before=bool(row.outcome_unknown))
        block_credentials(outbox, error=refused_login_cause(prescription.prescriber.email))
        outbox.updated_at = now
        self._count_send(outbox, "blocked_credentials", now, reason="login_failed")
        log.warning(
            "blocked_credentials (prescriber refused earlier): prescription_id=%s prescriber_id=%s",
            prescription.id,
            prescription.prescriber_id,
        )
        return "blocked_credentials"

    # -- step 3, happy path: issued ---------------------------------------------

    def _finish_issued(
        self, row: Row[Any], snapshot: Prescription, attempt: Attempt, *, attempts: int
    ) -> str:
        """Store a token (ISSUED/ADOPTED); ``"lost_lease"`` if the lease is gone (see the module docs)."""
        now = self.now()
        with self.db.session() as session:
            # The guarded UPDATE takes the row's lock: it serialises this prescription's
            # dispatch; webhooks and reconciliation can't touch it before its token is stored.
            stored = session.connection().execute(
                _STORE_ISSUED,
                {
                    "outbox_id": row.id,
                    "worker_id": self.worker_id,
                    "unknown": outcome_unknown_after(
                        attempt.outcome, unknown_before=bool(row.outcome_unknown)
                    ),
                    "now": now,
                },
            )
            if not stored.rowcount:
                return self._lost_lease(row.id, attempt)
            prescription = _attached(session, snapshot)
            # Webhooks may have beaten this commit; let the ones waiting for this token be applied now.
            reopen(
                session,
                WebhookInbox,
                *_WAITING_FOR_TOKEN,
                now=now,
                params={"token": attempt.platform_token},
                processed_at=None,
            )
            detail = "adopted after unknown outcome" if attempt.outcome is Outcome.ADOPTED else None
            issued = local(prescription, "issued", source="api", detail=detail, now=now)
            record(
                session,
                [
                    Change(
                        prescription,
                        issued,
                        region=snapshot.patient.region_code,
                        route=row.flow,
                    )
                ],
            )
            prescription.platform_token = attempt.platform_token
        metrics.SENDS.labels(route=row.flow, outcome=attempt.outcome.value).inc()
        metrics.SEND_QUEUED_TO_ISSUED.observe(max(0.0, (now - row.created_at).total_seconds()))
        log.info("issued: prescription_id=%s attempts=%s", snapshot.id, attempts)
        return "done"

    @staticmethod
    def _lost_lease(outbox_id: int, attempt: Attempt) -> str:
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

    # -- step 3: store the outcome -------------------------------------------

    def _finish(
        self,
        outbox_id: int,
        attempt: Attempt,
        *,
        unknown_before: bool,
        began: datetime | None = None,
    ) -> str:
        now = self.now()
        with self.db.session() as session:
            row = session.scalars(
                _LOCK_LEASED, {"outbox_id": outbox_id, "worker_id": self.worker_id}
            ).one_or_none()
            if row is None:
                return self._lost_lease(outbox_id, attempt)
            # The outbox row's lock serialises this prescription's dispatch; webhooks
            # and reconciliation can't touch it before its token is stored here.
            prescription = session.get(Prescription, row.prescription_id)
            if prescription is None:
                raise OutboxRowVanished(
                    f"outbox row {outbox_id} has no prescription {row.prescription_id}"
                )
            row.updated_at = now
            release_row(row)
            settle(row, attempt.outcome, unknown_before=unknown_before)
            if attempt.outcome in (Outcome.ISSUED, Outcome.ADOPTED):
                raise ValueError("a token is stored by _finish_issued")
            if attempt.outcome is Outcome.EMAILED:
                store_emailed(
                    session, row, prescription, source="service", detail=attempt.message, now=now
                )
                self._count_send(row, "emailed", now, queued_at=row.created_at)
                return "done"
            if attempt.outcome is Outcome.CREDENTIALS_REFUSED:
                return self._credentials_refused(row, prescription, attempt, now, began)
            if attempt.outcome is Outcome.CREDENTIALS_UNUSABLE:
                # A configuration fault: no retry can fix it and nothing was sent, so it
                # is not an attempt; parked with its cause until the credentials (or the
                # keys, then `outbox requeue`) are fixed.
                uncount_attempt(row)
                block_credentials(row, error=attempt.cause)
                self._count_send(row, "blocked_credentials", now, reason=attempt.error_code)
                log.warning(
                    "blocked_credentials (%s): prescription_id=%s prescriber_id=%s",
                    attempt.error_code,
                    prescription.id,
                    prescription.prescriber_id,
                )
                return "blocked_credentials"
            if attempt.outcome is Outcome.MISCONFIGURED:
                # Nothing was sent and no retry can fix it: not an attempt, a dead letter
                # with its cause at once (`outbox requeue` once the data is fixed).
                uncount_attempt(row)
                mark_dead(row, error=attempt.cause)
                return self._dead(session, row, prescription, attempt, now)
            if attempt.outcome is Outcome.EMAIL_IN_DOUBT:
                # The server may have the message: never resent automatically; an operator
                # confirms (`outbox confirm-sent`) or requeues (same Message-ID).
                record(
                    session,
                    [
                        Change(
                            prescription,
                            local(
                                prescription,
                                "email_in_doubt",
                                source="service",
                                detail=attempt.message,
                                now=now,
                            ),
                        )
                    ],
                )
                mark_dead(row, error=in_doubt_cause(row.id, attempt.message))
                self._count_send(row, "email_in_doubt", now, reason="email_in_doubt")
                log.warning("email in doubt, dead letter: prescription_id=%s", prescription.id)
                return "dead"
            if attempt.outcome in (Outcome.REJECTED, Outcome.INVALID):
                prescription.rejection_message = attempt.message
                prescription.rejection_errors = json.dumps(attempt.errors)
                record(
                    session,
                    [
                        Change(
                            prescription,
                            local(
                                prescription,
                                "rejected",
                                source="api",
                                detail=attempt.message,
                                now=now,
                            ),
                        )
                    ],
                )
                finish(row, note="rejected")
                self._count_send(row, attempt.outcome.value, now)
                log.info("rejected: prescription_id=%s", prescription.id)
                return "done"
            return self._retry(session, row, prescription, attempt, now)

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
            park(row, delay_s=0, now=now, error=attempt.error_code)
            log.info(
                "login refused for replaced credentials, retrying: prescription_id=%s",
                prescription.id,
            )
            return "pending"
        block_credentials(row, error=refused_login_cause(prescriber.email))
        mark_credentials_refused(prescriber, now=now)
        self._count_send(row, "blocked_credentials", now, reason="login_failed")
        log.warning(
            "blocked_credentials (platform refused the login): prescription_id=%s prescriber_id=%s",
            prescription.id,
            prescription.prescriber_id,
        )
        return "blocked_credentials"

    @staticmethod
    def _count_send(
        row: DispatchOutbox,
        outcome: str,
        now: datetime,
        *,
        queued_at: datetime | None = None,
        reason: str | None = None,
    ) -> None:
        """Count a send that came to ``outcome`` on ``row.flow``'s route.

        With ``queued_at`` (the outbox row's creation, when it was queued) observe
        queued -> issued/emailed seconds; with ``reason`` (a reason code) count a
        send stopped for an operator in ``erx_sends_stopped_total``.
        """
        metrics.SENDS.labels(route=row.flow, outcome=outcome).inc()
        if reason is not None:
            metrics.SENDS_STOPPED.labels(route=row.flow, outcome=outcome, reason=reason).inc()
        if queued_at is not None:
            metrics.SEND_QUEUED_TO_ISSUED.observe(max(0.0, (now - queued_at).total_seconds()))

    def _dead(
        self,
        session: Session,
        row: DispatchOutbox,
        prescription: Prescription,
        attempt: Attempt,
        now: datetime,
    ) -> str:
        """``row`` is dead (its ``last_error`` the cause): the prescription's history says so,
        and the send is counted as stopped by ``attempt``'s reason code."""
        record(
            session,
            [
                Change(
                    prescription,
                    local(prescription, "dead", source="service", detail=row.last_error, now=now),
                )
            ],
        )
        self._count_send(row, "dead", now, reason=attempt.error_code)
        log.warning(
            "dead letter: prescription_id=%s reason=%s", prescription.id, attempt.error_code
        )
        return "dead"

    def _retry(
        self,
        session: Session,
        row: DispatchOutbox,
        prescription: Prescription,
        attempt: Attempt,
        now: datetime,
    ) -> str:
        if attempt.outcome is Outcome.CIRCUIT_OPEN:
            # The platform was not asked: no attempt counted; wait out the breaker.
            uncount_attempt(row)
            park(
                row,
                delay_s=self.policy.breaker_wait_s(self.settings.breaker_reset_s),
                now=now,
                error="circuit_open",
            )
            return "pending"
        state = retry_or_dead(
            row,
            policy=self.policy,
            error=attempt.cause,
            now=now,
            retry_after_s=getattr(attempt.error, "retry_after_s", None),
        )
        if state == "dead":
            return self._dead(session, row, prescription, attempt, now)
        log.info(
            "retry scheduled: prescription_id=%s attempt=%s error=%s next_attempt_at=%s",
            prescription.id,
            row.attempts,
            attempt.error_code,
            row.next_attempt_at.isoformat(),
        )
        return "pending"


def _leased_row(session: Session, outbox_id: int) -> DispatchOutbox:
    """The outbox row this worker's guarded UPDATE just locked, as an ORM object."""
    outbox = session.get(DispatchOutbox, outbox_id)
    if outbox is None:  # the UPDATE matched it in this transaction: only a broken database
        raise OutboxRowVanished(f"outbox row {outbox_id} is gone while leased")
    return outbox


def _attached(session: Session, snapshot: Prescription) -> Prescription:
    """A persistent, clean copy of ``snapshot``'s own columns in ``session``, without a query.

    Only the columns read by :func:`app.mechanisms.history.record` and the
    status event are copied; what the caller then sets is flushed as one
    UPDATE of the changed columns. Relations are not carried over.
    """
    copy = Prescription(
        id=snapshot.id,
        reference=snapshot.reference,
        patient_id=snapshot.patient_id,
        prescriber_id=snapshot.prescriber_id,
        pharmacy_id=snapshot.pharmacy_id,
        status=snapshot.status,
        platform_token=snapshot.platform_token,
        last_event_at=snapshot.last_event_at,
        updated_at=snapshot.updated_at,
    )
    make_transient_to_detached(copy)  # as if freshly loaded: no pending changes
    session.add(copy)
    return copy
