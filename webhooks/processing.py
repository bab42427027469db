"""Applying stored webhook events: the inbox worker's half of contract §7.

Inbox rows go through the one queue mechanism (:mod:`app.mechanisms.queue`) and the one
retry policy (:mod:`app.mechanisms.retry`). Inbox work makes no outbound call, so a batch
is claimed and applied in ONE transaction: the claim's row locks (``FOR
UPDATE SKIP LOCKED`` on PostgreSQL) hold for the whole batch and a crash
rolls claim and work back together. For each row the prescription is found by
its platform token and locked, the transition is appended to the history
(once per event id and lifecycle step), and the current status moves forward
only. An event for a token we don't know yet (the send's commit may still be
in flight) is marked ``awaiting_prescription`` and retried with backoff, then
goes dead; dispatch reopens it when it stores that token.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.foundation.db import Database, utcnow
from app.foundation.models import Patient, Prescription, Region, WebhookInbox
from app.mechanisms.audit import PLATFORM, append_many
from app.mechanisms.history import Change, Transition, record
from app.mechanisms.queue import (
    claim_returning,
    count_attempt,
    finish,
    finish_rows,
    mark_dead,
    release_row,
    reopen,
    retry_or_dead,
)
from app.mechanisms.retry import RetryPolicy
from connector.statuses import LIFECYCLE
from webhooks.errors import EventPayloadError
from webhooks.events import StatusEvent, decode_body, envelope, parse_status_event

log = logging.getLogger("webhooks.processing")

# The batch's lease is stamped and released inside one transaction, so no other
# worker ever sees it; it only has to outlast the transaction if rows are
# given back unprocessed at shutdown, which releases them explicitly.
_BATCH_LEASE_S = 60.0


def unknown_token_cause(platform_token: str) -> str:
    """The one-line cause on an event whose ``platform_token`` names no prescription (yet).

    Stored as the inbox row's ``last_error`` while it is retried and once it is dead;
    a platform token is not PHI.
    """
    return f"event names platform token {platform_token} that matches no prescription"


def apply_failure_cause(platform_token: str | None, exc: BaseException) -> str:
    """The one-line cause on an event whose application raised ``exc``.

    Names what failed and the exception's type only: its text may quote SQL
    parameters or event data (PHI), so it is never stored.
    """
    what = (
        f"applying the event to the prescription with platform token {platform_token}"
        if platform_token
        else "applying the event"
    )
    where = " in the database" if isinstance(exc, SQLAlchemyError) else ""
    return (
        f"{what} failed{where} ({type(exc).__name__}); "
        "replay it with `webhooks replay` once the cause is fixed"
    )


class InboxProcessor:
    """Claims due inbox rows and applies them.

    ``now`` returns aware UTC datetimes and ``rand`` floats in [0, 1), so retry
    timing is testable without sleeping. Retries follow one
    :class:`app.mechanisms.retry.RetryPolicy` (``base_s``, ``cap_s`` seconds, never sooner
    than half of ``base_s``); after ``max_attempts`` the row goes ``dead``
    (replayable with ``flask webhooks replay``).
    """

    def __init__(
        self,
        db: Database,
        *,
        worker_id: str,
        batch: int = 20,
        max_attempts: int = 8,
        base_s: float = 1.0,
        cap_s: float = 300.0,
        now: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.worker_id = worker_id
        self.batch = batch
        self.now = now
        # The floor keeps a burst of early events from hammering the table.
        self.policy = RetryPolicy(
            base_s=base_s, cap_s=cap_s, max_attempts=max_attempts, floor_s=base_s / 2, rand=rand
        )

    def run_batch(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Claim up to ``batch`` due events and apply them in ONE transaction.

        Each event runs in a savepoint, so a failure undoes only that event.
        Events are applied in token order, so two workers lock prescriptions
        in the same order and cannot deadlock. If ``should_stop()`` turns
        true, the rest of the batch is released, still pending. Returns how
        many events were handled.
        """
        handled = 0
        applied: list[int] = []
        with self.db.session() as session:
            claimed = claim_returning(
                session,
                WebhookInbox,
                (WebhookInbox,),
                worker_id=self.worker_id,
                now=self.now(),
                lease_s=_BATCH_LEASE_S,
                limit=self.batch,
            )
            rows = sorted((row for (row,) in claimed), key=lambda r: (r.platform_token or "", r.id))
            todo = []
            for row in rows:
                if should_stop():
                    release_row(row)
                else:
                    todo.append(row)
            if len(todo) > 1 and self._apply_together(session, todo, applied):
                self._audit(session, applied)
                return len(todo)
            for row in todo:
                # Per event, so processed_at is when this event was applied, not when the batch began.
                self._handle(session, row, self.now(), applied)
                handled += 1
            self._audit(session, applied)
        return handled

    def apply_pending(self, event_id: str) -> str | None:
        """Apply the stored ``pending`` event ``event_id`` now, in one transaction of its own.

        The synchronous path (a batch of one, by event id): the row is locked as a
        claim locks it, applied with the same steps as :meth:`run_batch` (savepoint,
        history through :mod:`app.mechanisms.history`, forward-only status, event-outbox row,
        retry or dead on failure, audit). Returns the row's new state, or None
        when it is not pending (a worker or an earlier delivery applied it).
        Used by the synchronous reference receiver of ``bench/webhooks``.
        """
        applied: list[int] = []
        with self.db.session() as session:
            # Not a claim: wait for a worker that holds the row; PostgreSQL then re-checks "pending".
            row = session.scalars(
                select(WebhookInbox)
                .where(WebhookInbox.event_id == event_id, WebhookInbox.state == "pending")
                .with_for_update()
            ).first()
            if row is None:
                return None
            state = self._handle(session, row, self.now(), applied)
            self._audit(session, applied)
        return state

    def _apply_together(
        self, session: Session, rows: list[WebhookInbox], applied: list[int]
    ) -> bool:
        """Apply ``rows`` set-based (:meth:`_apply_rows`) in one savepoint.

        Returns False, with nothing changed, if anything fails: the caller then
        applies the rows one by one (:meth:`_handle`, the same steps for a
        batch of one), so that a failure undoes only its own event. The ids of
        the prescriptions events were applied to are appended to ``applied``.
        """
        now = self.now()
        session.flush()  # the claim's lease stamps stay outside the savepoint
        try:
            with session.begin_nested():
                batch_applied = self._apply_rows(session, rows, now)
                session.flush()
        except Exception as exc:  # noqa: BLE001 - fall back to one savepoint per event
            log.info("webhook batch applied one by one: %s", type(exc).__name__)
            # The batch's status moves and inbox marks were stored set-based and told to their
            # objects as committed values, which a savepoint rollback does not expire (the
            # FOR UPDATE reload refreshes the prescriptions anyway): reread them all.
            session.expire_all()
            return False
        applied.extend(batch_applied)
        return True

    def _apply_rows(self, session: Session, rows: list[WebhookInbox], now: datetime) -> list[int]:
        """Apply ``rows`` and settle each one; returns the ids of the prescriptions applied to.

        The one path of the inbox, for a batch or one row: one locking SELECT
        for every prescription the rows name (in token order, so two workers
        cannot deadlock), one :func:`app.mechanisms.history.record` for all their
        transitions (history, event-outbox rows, forward-only status), then
        each row is processed, dead (unreadable) or retried (its prescription
        is not known yet). Raises whatever else fails; the caller's savepoint
        undoes it.
        """
        parsed: list[tuple[WebhookInbox, StatusEvent | None, EventPayloadError | None]] = []
        for row in rows:
            try:
                event = parse_status_event(decode_body(row.body))
                if event.status not in LIFECYCLE:
                    raise EventPayloadError(
                        "unknown_status",
                        f"event status {event.status[:40]!r} is not a lifecycle status",
                    )
                parsed.append((row, event, None))
            except EventPayloadError as exc:
                parsed.append((row, None, exc))
        tokens = sorted({event.platform_token for _, event, _ in parsed if event is not None})
        found: dict[str, tuple[Prescription, str, str]] = {}
        if tokens:
            result = session.execute(
                select(Prescription, Patient.region_code, Region.flow)
                .join(Patient, Patient.id == Prescription.patient_id)
                .join(Region, Region.code == Patient.region_code)
                .where(Prescription.platform_token.in_(tokens))
                .order_by(Prescription.platform_token)
                .with_for_update(of=Prescription)
            )
            for prescription, region, route in result:
                found[prescription.platform_token] = (prescription, region, route)
        changes = [
            Change(
                prescription=found[event.platform_token][0],
                region=found[event.platform_token][1],
                route=found[event.platform_token][2],
                transition=Transition(
                    to_status=event.status,
                    from_status=event.previous_status,
                    occurred_at=event.occurred_at,
                    received_at=row.received_at,
                    source="webhook",
                    event_id=row.event_id,
                ),
            )
            for row, event, _ in parsed
            if event is not None and event.platform_token in found
        ]
        record(session, changes)
        applied: list[int] = []
        processed: list[WebhookInbox] = []
        for row, event, error in parsed:
            if error is not None:
                mark_dead(row, error=error.message)
                row.processed_at = now
                log.warning("webhook dead: event_id=%s reason=%s", row.event_id, error.reason)
            elif event is not None and event.platform_token not in found:
                self._retry(
                    row,
                    "unknown_prescription",
                    unknown_token_cause(event.platform_token),
                    now,
                    awaiting_prescription=True,
                )
            else:
                processed.append(row)
                applied.append(found[event.platform_token][0].id)
                continue
            release_row(row)
        # The batch's processed rows in one UPDATE, as the last write: the flush first sends
        # what the ORM still holds (a lone prescription's status move, retried or dead rows),
        # so nothing after it can fail.
        session.flush()
        finish_rows(
            session, processed, state="processed", processed_at=now, awaiting_prescription=False
        )
        return applied

    def _audit(self, session: Session, applied: list[int]) -> None:
        """One ``webhook-applied`` audit row per applied event: one multi-row INSERT, no lock."""
        append_many(
            session, PLATFORM, action="webhook-applied", prescription_ids=applied, now=self.now()
        )

    def _handle(
        self, session: Session, row: WebhookInbox, now: datetime, applied: list[int]
    ) -> str:
        """Apply ``row`` (:meth:`_apply_rows`) in a savepoint; one failure undoes only itself.

        A failure is counted as an attempt (retry, then dead). The id of a
        prescription the event was applied to is appended to ``applied``.
        """
        token = row.platform_token  # read before a rollback expires the row
        try:
            with session.begin_nested():
                applied_here = self._apply_rows(session, [row], now)
        except Exception as exc:  # noqa: BLE001 - any failure is counted, then dead-lettered
            self._retry(
                row,
                type(exc).__name__,
                apply_failure_cause(token, exc),
                now,
                awaiting_prescription=False,
            )
            release_row(row)
        else:
            applied.extend(applied_here)
        return row.state

    def _retry(
        self,
        row: WebhookInbox,
        reason: str,
        cause: str,
        now: datetime,
        *,
        awaiting_prescription: bool,
    ) -> None:
        """Count an attempt of ``row`` and retry it later, or dead-letter it after the last one.

        ``reason``: a short code for the log lines; ``cause``: the one-line sentence stored
        as ``last_error`` (shown by ``webhooks list``).
        """
        count_attempt(row)
        row.awaiting_prescription = awaiting_prescription
        if retry_or_dead(row, policy=self.policy, error=cause, now=now) == "dead":
            row.processed_at = now
            log.warning("webhook dead: event_id=%s reason=%s", row.event_id, reason)
        else:
            log.info(
                "webhook retry: event_id=%s attempt=%s reason=%s",
                row.event_id,
                row.attempts,
                reason,
            )

    def replay(self, *, event_id: str | None = None, dead: bool = False) -> list[tuple[str, str]]:
        """Reset stored events to pending and apply them now, in one transaction.

        ``event_id``: one event; ``dead``: every dead event. Returns
        ``[(event_id, new_state)]``. History never duplicates: its inserts are
        idempotent per event id and lifecycle step. Raises ValueError when
        neither is given.
        """
        if event_id is None and not dead:
            raise ValueError("replay needs an event id or dead=True")
        results: list[tuple[str, str]] = []
        applied: list[int] = []
        with self.db.session() as session:
            query = select(WebhookInbox).with_for_update()
            query = (
                query.where(WebhookInbox.event_id == event_id)
                if event_id is not None
                else query.where(WebhookInbox.state == "dead")
            )
            for row in session.scalars(query):
                # Re-classify: an event of another type stays ignored, an unreadable one dead.
                env = envelope(row.body)
                reopen(row, now=self.now())
                row.awaiting_prescription = False
                if env.state != "pending":
                    finish(row, state=env.state, note=env.error)
                else:
                    self._handle(session, row, self.now(), applied)
                results.append((row.event_id, row.state))
            self._audit(session, applied)
        return results
