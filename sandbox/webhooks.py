"""Webhook events: building, signing (contract §7) and at-least-once delivery.

Signing: ``X-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`` where each
``v1`` is HMAC-SHA256 keyed with one secret (newest first) over
``f"{t}."`` + the raw body. The body is serialised once, when the event is
created; every (re)delivery sends those exact bytes, re-signed with a fresh ``t``.

Delivery: a queue served by a pool of worker threads (or drained by hand in
tests). A delivery succeeds on a 2xx within ``timeout_s`` (10 s); otherwise it
is retried after ``retry_base_s * 2**(attempts-1)`` seconds, jittered, up to 8
attempts, then given up. Control knobs add drops, duplicates, random initial
delays, shuffled ordering and a hold that accumulates events until released.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from sandbox.clock import Clock, iso_utc
from sandbox.config import WEBHOOK_MAX_ATTEMPTS, WEBHOOK_TIMEOUT_S
from sandbox.control import Controls
from sandbox.identifiers import new_event_id
from sandbox.store import Prescription, Transition

log = logging.getLogger(__name__)

EVENT_TYPE_STATUS_UPDATED = "prescription.status_updated"
OTHER_EVENT_TYPES: tuple[str, ...] = (
    "prescription.viewed",
    "prescription.note_added",
    "pharmacy.link_opened",
)
"""Event types the receiver must store and ignore, never refuse (§7)."""
SIGNATURE_HEADER = "X-Signature"

WebhookSender = Callable[[str, bytes, Mapping[str, str], float], int]
"""``sender(url, body, headers, timeout_s) -> HTTP status``; raises on transport errors."""

Jitter = Callable[[float, random.Random], float]
"""``jitter(delay_s, rng) -> delay_s`` actually waited before a retry."""


def build_status_event(
    *,
    event_id: str,
    created: str,
    prescription_id: str,
    client_ref_id: str | None,
    status: str,
    previous_status: str,
    occurred_at: str,
) -> dict[str, Any]:
    """The ``prescription.status_updated`` event body (§7), keys in contract order.

    ``created`` and ``occurred_at`` are ISO 8601 UTC strings ending in ``Z``.
    """
    return {
        "id": event_id,
        "type": EVENT_TYPE_STATUS_UPDATED,
        "created": created,
        "data": {
            "prescription": {
                "id": prescription_id,
                "client_ref_id": client_ref_id,
                "status": status,
                "previous_status": previous_status,
                "occurred_at": occurred_at,
            }
        },
    }


def build_other_event(
    *, event_id: str, event_type: str, created: str, prescription_id: str, client_ref_id: str | None
) -> dict[str, Any]:
    """An event of a type other than ``prescription.status_updated`` (noise for receivers, §7)."""
    return {
        "id": event_id,
        "type": event_type,
        "created": created,
        "data": {"prescription": {"id": prescription_id, "client_ref_id": client_ref_id}},
    }


def serialize_event(event: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes of an event, exactly as they will be sent and signed."""
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 keyed with ``secret`` over ``f"{timestamp}."`` + ``body`` (§7)."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The ``X-Signature`` value: ``t=<timestamp>`` then one ``v1=`` per secret, newest first."""
    parts = [f"t={timestamp}"]
    parts.extend(f"v1={compute_signature(secret, timestamp, body)}" for secret in secrets)
    return ",".join(parts)


def equal_jitter(delay_s: float, rng: random.Random) -> float:
    """Half the delay fixed, half random: a value in ``[delay_s / 2, delay_s]``."""
    return delay_s / 2 + rng.uniform(0, delay_s / 2)


def requests_sender(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    """POST ``body`` to ``url`` with ``requests``; returns the HTTP status."""
    response = requests.post(
        url, data=body, headers=dict(headers), timeout=timeout_s, allow_redirects=False
    )
    response.close()
    return response.status_code


@dataclass(frozen=True)
class WebhookEvent:
    """An event ready to deliver: its id, prescription id (for logs) and the exact body bytes."""

    id: str
    prescription_id: str
    body: bytes


@dataclass
class _Job:
    """One delivery of one event (a duplicated event has two jobs)."""

    event: WebhookEvent
    generation: int
    attempts: int = 0
    due_at: float = 0.0
    seq: int = 0


@dataclass
class _Counters:
    enqueued: int = 0
    delivered: int = 0
    attempts: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    dropped: int = 0
    duplicated: int = 0


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery attempt, kept (bounded) for ``/sandbox/webhooks/deliveries``."""

    event_id: str
    attempt: int
    ok: bool
    status: int | None
    at: float


class WebhookDispatcher:
    """At-least-once, unordered webhook delivery (§7).

    ``enqueue(event)`` admits an event (or holds it while ``webhook_hold`` is
    on); ``release()`` admits everything held. Workers started with
    ``start(n)`` deliver due jobs; ``drain()`` delivers every due job in the
    calling thread instead (tests). Times come from ``clock`` (Unix seconds).
    """

    def __init__(
        self,
        *,
        controls: Controls,
        clock: Clock,
        rng: random.Random,
        sender: WebhookSender = requests_sender,
        jitter: Jitter = equal_jitter,
        timeout_s: float = WEBHOOK_TIMEOUT_S,
        max_attempts: int = WEBHOOK_MAX_ATTEMPTS,
        history_limit: int = 1000,
    ) -> None:
        self._controls = controls
        self._clock = clock
        self._rng = rng
        self._sender = sender
        self._jitter = jitter
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._history_limit = history_limit
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._generation = 0
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._scheduled: list[tuple[float, int, _Job]] = []
        self._due: list[_Job] = []
        self._held: list[WebhookEvent] = []
        self._in_flight = 0
        self._counters = _Counters()
        self._history: list[DeliveryRecord] = []

    # -- admission -----------------------------------------------------------

    def enqueue(self, event: WebhookEvent) -> None:
        """Accept one event: hold it, drop it, or schedule one or two deliveries."""
        controls = self._controls.current()
        with self._cond:
            self._counters.enqueued += 1
            if controls.webhook_hold:
                self._held.append(event)
                return
            self._admit_locked(event)

    def release(self) -> int:
        """Admit every held event (drop/duplicate/shuffle still apply); returns how many."""
        controls = self._controls.current()
        with self._cond:
            held, self._held = self._held, []
            if controls.webhook_shuffle:
                self._rng.shuffle(held)
            for event in held:
                self._admit_locked(event)
            return len(held)

    def _admit_locked(self, event: WebhookEvent) -> None:
        controls = self._controls.current()
        if self._rng.random() < controls.webhook_drop_rate:
            self._counters.dropped += 1
            log.info("webhook event dropped by fault injection: %s", event.id)
            return
        copies = 1
        if self._rng.random() < controls.webhook_duplicate_rate:
            copies = 2
            self._counters.duplicated += 1
        now = self._clock()
        for _ in range(copies):
            delay = 0.0
            if controls.webhook_delay_max_s > 0:
                delay = self._rng.uniform(0, controls.webhook_delay_max_s)
            self._schedule_locked(_Job(event=event, generation=self._generation), now + delay)
        self._cond.notify_all()

    def _schedule_locked(self, job: _Job, due_at: float) -> None:
        job.due_at = due_at
        job.seq = next(self._seq)
        heapq.heappush(self._scheduled, (due_at, job.seq, job))

    # -- taking and delivering -----------------------------------------------

    def _take_locked(self, now: float) -> _Job | None:
        while self._scheduled and self._scheduled[0][0] <= now:
            self._due.append(heapq.heappop(self._scheduled)[2])
        if not self._due:
            return None
        if self._controls.current().webhook_shuffle and len(self._due) > 1:
            index = self._rng.randrange(len(self._due))
            self._due[index], self._due[-1] = self._due[-1], self._due[index]
            job = self._due.pop()
        else:
            job = self._due.pop(0)
        self._in_flight += 1
        return job

    def _deliver(self, job: _Job) -> None:
        controls = self._controls.current()
        url = controls.webhook_url
        status: int | None = None
        ok = False
        if url:
            timestamp = int(self._clock())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "erx-sandbox-webhooks/1.0",
                SIGNATURE_HEADER: signature_header(
                    controls.webhook_secrets, timestamp, job.event.body
                ),
            }
            started = time.monotonic()
            try:
                status = self._sender(url, job.event.body, headers, self._timeout_s)
                elapsed = time.monotonic() - started
                ok = 200 <= status < 300 and elapsed <= self._timeout_s
            except Exception as exc:  # any transport failure is a failed attempt
                log.debug("webhook %s attempt failed: %s", job.event.id, type(exc).__name__)
        with self._cond:
            self._in_flight -= 1
            if job.generation != self._generation:
                return  # a reset happened while this delivery was in flight
            job.attempts += 1
            self._counters.attempts += 1
            self._history.append(
                DeliveryRecord(job.event.id, job.attempts, ok, status, self._clock())
            )
            del self._history[: -self._history_limit]
            if ok:
                self._counters.delivered += 1
            else:
                self._counters.failed_attempts += 1
                if job.attempts >= self._max_attempts:
                    self._counters.gave_up += 1
                    log.info(
                        "webhook %s for %s: giving up after %d attempts",
                        job.event.id,
                        job.event.prescription_id,
                        job.attempts,
                    )
                else:
                    backoff = controls.webhook_retry_base_s * 2 ** (job.attempts - 1)
                    delay = self._jitter(backoff, self._rng)
                    self._schedule_locked(job, self._clock() + delay)
            self._cond.notify_all()

    def drain(self) -> int:
        """Deliver every job due now in the calling thread; returns the attempts made.

        Retries scheduled in the future are left for a later ``drain`` (after the
        test advances its clock).
        """
        attempts = 0
        while True:
            with self._cond:
                job = self._take_locked(self._clock())
            if job is None:
                return attempts
            self._deliver(job)
            attempts += 1

    # -- worker pool ---------------------------------------------------------

    def start(self, workers: int) -> None:
        """Start ``workers`` daemon delivery threads."""
        with self._cond:
            self._stopping = False
        for index in range(workers):
            thread = threading.Thread(
                target=self._work, name=f"sandbox-webhook-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Ask the workers to stop; wait up to ``timeout_s`` in all (they are daemons)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        self._threads.clear()

    def _work(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = self._clock()
                job = self._take_locked(now)
                if job is None:
                    wait = 0.5
                    if self._scheduled:
                        wait = min(wait, max(self._scheduled[0][0] - now, 0.005))
                    self._cond.wait(wait)
                    continue
            try:
                self._deliver(job)
            except Exception:  # never let one bad delivery kill a worker
                log.exception("webhook worker error on %s", job.event.id)

    # -- observation ---------------------------------------------------------

    def reset(self) -> None:
        """Forget every queued, held and in-flight delivery and zero the counters."""
        with self._cond:
            self._generation += 1
            self._reset_locked()

    def pending(self) -> int:
        """Deliveries not yet finished: scheduled, due, in flight or held."""
        with self._cond:
            return len(self._scheduled) + len(self._due) + self._in_flight + len(self._held)

    def wait_idle(self, timeout_s: float) -> bool:
        """Block (real time) until nothing is pending but held events; True if reached."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self._scheduled) + len(self._due) + self._in_flight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def history(self) -> list[DeliveryRecord]:
        """The most recent delivery attempts, oldest first (bounded)."""
        with self._cond:
            return list(self._history)

    def stats(self) -> dict[str, int]:
        """The ``webhooks`` object of ``/sandbox/stats``."""
        with self._cond:
            c = self._counters
            return {
                "enqueued": c.enqueued,
                "delivered": c.delivered,
                "attempts": c.attempts,
                "failed_attempts": c.failed_attempts,
                "gave_up": c.gave_up,
                "dropped": c.dropped,
                "duplicated": c.duplicated,
                "pending": len(self._scheduled)
                + len(self._due)
                + self._in_flight
                + len(self._held),
            }


class WebhookEmitter:
    """Turns store transitions into webhook events and enqueues them (§7).

    Registered as a ``Store`` listener. Events are only created while a
    ``webhook_url`` is registered: with no receiver, nobody is notified.
    """

    def __init__(
        self,
        *,
        controls: Controls,
        dispatcher: WebhookDispatcher,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._controls = controls
        self._dispatcher = dispatcher
        self._clock = clock
        self._rng = rng

    def __call__(self, change: Transition) -> WebhookEvent | None:
        """Build, serialise and enqueue the event for one transition; returns it (or None)."""
        if not self._controls.current().webhook_url:
            return None
        now = self._clock()
        rx = change.prescription
        event_id = new_event_id(self._rng, now)
        body = serialize_event(
            build_status_event(
                event_id=event_id,
                created=iso_utc(now),
                prescription_id=rx.id,
                client_ref_id=rx.client_ref_id,
                status=change.status,
                previous_status=change.previous_status,
                occurred_at=iso_utc(change.at),
            )
        )
        event = WebhookEvent(id=event_id, prescription_id=rx.id, body=body)
        self._dispatcher.enqueue(event)
        return event

    def emit_other(self, prescription: Prescription, event_type: str) -> WebhookEvent | None:
        """Enqueue one event of another type about ``prescription``; returns it (or None)."""
        if not self._controls.current().webhook_url:
            return None
        now = self._clock()
        event_id = new_event_id(self._rng, now)
        body = serialize_event(
            build_other_event(
                event_id=event_id,
                event_type=event_type,
                created=iso_utc(now),
                prescription_id=prescription.id,
                client_ref_id=prescription.client_ref_id,
            )
        )
        event = WebhookEvent(id=event_id, prescription_id=prescription.id, body=body)
        self._dispatcher.enqueue(event)
        return event
