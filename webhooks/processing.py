"""Applying stored webhook events: the inbox worker's half of contract §7.

Each claimed inbox row is processed in one transaction: the prescription is
found by its platform token and locked, the transition is appended to the
history (once per event id and lifecycle step), and the current status moves
forward only. An event for a token we don't know yet (the send's commit may
still be in flight) is retried with backoff, then goes dead.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import or_, select

from app.db import Database, utcnow
from app.models import Prescription, WebhookInbox
from app.queue import claim
from connector.backoff import full_jitter_delay
from connector.statuses import LIFECYCLE
from webhooks.errors import PayloadError
from webhooks.events import envelope, parse_status_event
from webhooks.history import Transition, record_transition

log = logging.getLogger("webhooks.processing")


class UnknownPrescription(Exception):
    """No prescription holds the event's token (yet)."""


class InboxProcessor:
    """Claims pending inbox rows and applies them.

    ``clock`` returns aware UTC datetimes and ``rand`` floats in [0, 1), so
    retry timing is testable without sleeping. Backoff is full jitter over
    ``base_s * 2**attempt`` capped at ``cap_s`` seconds; after ``max_attempts``
    the row goes ``dead`` (replayable with ``flask webhooks replay``).
    """

    def __init__(
        self,
        db: Database,
        *,
        worker_id: str,
        lease_s: float = 60.0,
        batch: int = 20,
        max_attempts: int = 8,
        base_s: float = 1.0,
        cap_s: float = 300.0,
        clock: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.batch = batch
        self.max_attempts = max_attempts
        self.base_s = base_s
        self.cap_s = cap_s
        self.clock = clock
        self.rand = rand

    def claim(self) -> list[int]:
        """Lease up to ``batch`` due inbox rows; returns their ids."""
        return claim(
            self.db,
            WebhookInbox,
            worker_id=self.worker_id,
            now=self.clock(),
            lease_s=self.lease_s,
            limit=self.batch,
        )

    def process(self, inbox_id: int, *, force: bool = False) -> str:
        """Apply one inbox row; returns its new state (``processed``, ``pending``, ``dead``...).

        The row must be leased to this worker (:meth:`claim`) unless ``force``
        (used by ``webhooks replay``); otherwise returns ``lost_lease``.
        """
        with self.db.session() as session:
            row = session.get(WebhookInbox, inbox_id, with_for_update=True)
            if row is None or row.state != "pending":
                return row.state if row else "missing"
            if not force and row.locked_by != self.worker_id:
                return "lost_lease"
            return self._handle(session, row, self.clock())

    def _handle(self, session, row: WebhookInbox, now: datetime) -> str:  # type: ignore[no-untyped-def]
        """Apply ``row`` in a savepoint and set its state; one failure undoes only itself."""
        try:
            with session.begin_nested():
                self._apply(session, row, now)
        except PayloadError as exc:
            row.state, row.last_error, row.processed_at = "dead", exc.reason, now
            log.warning("webhook dead: event_id=%s reason=%s", row.event_id, exc.reason)
        except UnknownPrescription:
            self._reschedule(row, "unknown_prescription", now)
        except Exception as exc:  # noqa: BLE001 - any failure is counted, then dead-lettered
            self._reschedule(row, type(exc).__name__, now)
        else:
            row.state, row.processed_at, row.last_error = "processed", now, None
            log.debug("webhook applied: event_id=%s", row.event_id)
        row.locked_by = row.locked_until = None
        return row.state

    def _reschedule(self, row: WebhookInbox, error: str, now: datetime) -> None:
        row.attempts += 1
        row.last_error = error
        if row.attempts >= self.max_attempts:
            row.state, row.processed_at = "dead", now
            log.warning("webhook dead: event_id=%s reason=%s", row.event_id, error)
            return
        delay = full_jitter_delay(row.attempts - 1, base_s=self.base_s, cap_s=self.cap_s, rand=self.rand)
        row.next_attempt_at = now + timedelta(seconds=max(delay, self.base_s / 2))
        log.info("webhook retry: event_id=%s attempt=%s reason=%s", row.event_id, row.attempts, error)

    def _apply(self, session, row: WebhookInbox, now: datetime) -> None:  # type: ignore[no-untyped-def]
        event = parse_status_event(row.body)
        if event.status not in LIFECYCLE:
            raise PayloadError("unknown_status", "event status is not a lifecycle status")
        prescription = session.scalars(
            select(Prescription).where(Prescription.platform_token == event.token).with_for_update()
        ).first()
        if prescription is None:
            raise UnknownPrescription(event.token)
        record_transition(
            session,
            prescription,
            Transition(
                to_status=event.status,
                from_status=event.previous_status,
                occurred_at=event.occurred_at,
                received_at=row.received_at,
                source="webhook",
                event_id=row.event_id,
            ),
        )

    def run_batch(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Take up to ``batch`` due events and apply them in ONE transaction.

        Inbox work makes no outbound call, so rows are locked for the
        transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) instead of
        leased, and one commit covers the batch. Each event runs in a
        savepoint, so a failure undoes only that event. Events are applied in
        token order, so two workers lock prescriptions in the same order and
        cannot deadlock. If ``should_stop()`` turns true, the rest of the batch
        is left pending. Returns how many events were handled.
        """
        now = self.clock()
        handled = 0
        with self.db.session() as session:
            query = (
                select(WebhookInbox)
                .where(
                    WebhookInbox.state == "pending",
                    WebhookInbox.next_attempt_at <= now,
                    or_(WebhookInbox.locked_until.is_(None), WebhookInbox.locked_until < now),
                )
                .order_by(WebhookInbox.next_attempt_at, WebhookInbox.id)
                .limit(self.batch)
            )
            if self.db.is_postgres:
                query = query.with_for_update(skip_locked=True)
            rows = sorted(session.scalars(query), key=lambda r: (r.prescription_token or "", r.id))
            for row in rows:
                if should_stop():
                    break
                # Per event, so processed_at is when this event was applied, not when the batch began.
                self._handle(session, row, self.clock())
                handled += 1
        return handled

    def replay(self, *, event_id: str | None = None, dead: bool = False) -> list[tuple[str, str]]:
        """Reset stored events to pending and process them now.

        ``event_id``: one event; ``dead``: every dead event. Returns
        ``[(event_id, new_state)]``. History never duplicates: its inserts are
        idempotent per event id and lifecycle step.
        """
        with self.db.session() as session:
            query = select(WebhookInbox)
            if event_id is not None:
                query = query.where(WebhookInbox.event_id == event_id)
            elif dead:
                query = query.where(WebhookInbox.state == "dead")
            else:
                raise ValueError("replay needs an event id or dead=True")
            rows = list(session.scalars(query))
            for row in rows:
                # Re-classify: an event of another type stays ignored, an unreadable one dead.
                env = envelope(row.body.encode("utf-8"))
                row.state, row.attempts, row.next_attempt_at = env.state, 0, self.clock()
                row.last_error = env.error
                row.locked_by = row.locked_until = None
            targets = [(row.id, row.event_id, row.state) for row in rows]
        return [
            (eid, self.process(iid, force=True) if state == "pending" else state)
            for iid, eid, state in targets
        ]
