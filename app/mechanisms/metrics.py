"""Prometheus metrics: every metric the service exposes is defined here, once.

Exposition: ``GET /metrics`` on the web app (:func:`init_app`) and
:func:`serve_worker_metrics` in the worker process. Under gunicorn, set
``PROMETHEUS_MULTIPROC_DIR`` to an empty writable directory (a fresh
``emptyDir`` per pod): prometheus_client then keeps each process's values in
files there and the scrape sums them (multiprocess mode); call
:func:`mark_worker_dead` from gunicorn's ``child_exit`` hook.

Queue depth, oldest due age, dead letters and prescriptions in flight are not
counted by the code paths but read from the database at scrape time
(:class:`QueueCollector`), so every web replica reports the same truth and a
restart loses nothing. :data:`QUEUE_DEPTH_SQL` is also the query the KEDA
PostgreSQL scaler runs (k8s/), so scaling and dashboards agree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from app.foundation.db import Database, utcnow
from app.foundation.models import DispatchOutbox, WebhookInbox
from connector.statuses import FINAL_STATUSES, LIFECYCLE

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("app.mechanisms.metrics")

# -- counted where they happen ---------------------------------------------------------------

WEBHOOKS_RECEIVED = Counter(
    "erx_webhooks_received_total", "Webhook deliveries acknowledged with 200 (duplicates included)."
)
WEBHOOKS_REJECTED = Counter(
    "erx_webhooks_rejected_total",
    "Webhook deliveries refused, by reason (signature reasons of webhooks/errors.py, empty_body, too_large).",
    ["reason"],
)
WEBHOOKS_DUPLICATE = Counter(
    "erx_webhooks_duplicate_total", "Webhook deliveries whose event id was already in the inbox."
)
PLATFORM_CALLS = Counter(
    "erx_platform_calls_total",
    "Calls to the platform, by endpoint and outcome.",
    ["endpoint", "outcome"],
)
PLATFORM_CALL_DURATION = Histogram(
    "erx_platform_call_duration_seconds",
    "Duration of platform calls in seconds, by endpoint.",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0),
)
TOKEN_REFRESHES = Counter(
    "erx_token_refreshes_total",
    "Platform token requests, by kind (client token, user session).",
    ["kind"],
)
LOGINS = Counter("erx_logins_total", "Prescriber logins to the platform, by kind.", ["kind"])
LOGINS_REFUSED = Counter(
    "erx_logins_refused_total", "Prescriber logins the platform refused (login_failed)."
)
CIRCUIT_BREAKER_OPEN = Gauge(
    "erx_circuit_breaker_open",
    "1 while the platform circuit breaker is open, else 0.",
    multiprocess_mode="livemax",
)
SENDS = Counter(
    "erx_sends_total",
    "Prescription sends finished, by route (erx, email) and outcome.",
    ["route", "outcome"],
)
SENDS_STOPPED = Counter(
    "erx_sends_stopped_total",
    "Sends stopped for an operator (dead letter, blocked credentials), by route, outcome and "
    "reason code (a small fixed set; the sentence is the row's last_error).",
    ["route", "outcome", "reason"],
)
SEND_QUEUED_TO_ISSUED = Histogram(
    "erx_send_queued_to_issued_seconds",
    "Seconds from status queued to issued (or emailed).",
    buckets=(1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
)
WEBHOOK_LAST_RECEIVED = Gauge(
    "erx_webhook_last_received_timestamp_seconds",
    "Unix time (UTC) of the last acknowledged webhook delivery.",
    multiprocess_mode="max",
)


def webhook_received(*, duplicate: bool, now: float) -> None:
    """Count one acknowledged delivery; ``now`` in Unix seconds (the receiver's injectable clock)."""
    WEBHOOKS_RECEIVED.inc()
    if duplicate:
        WEBHOOKS_DUPLICATE.inc()
    WEBHOOK_LAST_RECEIVED.set(now)


def webhook_rejected(reason: str) -> None:
    """Count one refused delivery under ``reason`` (a small fixed vocabulary: never request data)."""
    WEBHOOKS_REJECTED.labels(reason=reason).inc()


# -- read from the database at scrape time ------------------------------------------------------

# Due rows in both queues: pending, due now, no live lease (app.mechanisms.queue's claim filter). Rows
# waiting out a backoff are not work a new worker could do: during a platform outage they
# pile up, and scaling on them would add workers that only wait too. This is the combined
# depth the workers' KEDA scaler scales on (k8s/base/worker-scaledobject.yaml, word for word).
_DUE = (
    "state = 'pending' AND next_attempt_at <= CURRENT_TIMESTAMP "
    "AND (locked_until IS NULL OR locked_until < CURRENT_TIMESTAMP)"
)
QUEUE_DEPTH_SQL = (
    f"SELECT (SELECT count(*) FROM dispatch_outbox WHERE {_DUE}) "
    f"+ (SELECT count(*) FROM webhook_inbox WHERE {_DUE})"
)
DISPATCH_DEPTH_SQL = "SELECT count(*) FROM dispatch_outbox WHERE state = 'pending'"
INBOX_DEPTH_SQL = "SELECT count(*) FROM webhook_inbox WHERE state = 'pending'"
DISPATCH_DEAD_SQL = "SELECT count(*) FROM dispatch_outbox WHERE state = 'dead'"
INBOX_DEAD_SQL = "SELECT count(*) FROM webhook_inbox WHERE state = 'dead'"
# Handed to a route and not yet final: queued, or a platform status before dispensed/expired/voided.
IN_FLIGHT_STATUSES = ("queued", *(s for s in LIFECYCLE if s not in FINAL_STATUSES))
IN_FLIGHT_SQL = "SELECT count(*) FROM prescriptions WHERE status IN ({})".format(
    ", ".join(f"'{s}'" for s in IN_FLIGHT_STATUSES)
)
# The ``queue`` label values: "outbox" (the dispatch outbox) and "inbox" (the webhook inbox),
# the names the alert rules, the runbook and the CLI (`flask --app app outbox ...`) use.
QUEUES = {
    "outbox": (DispatchOutbox, DISPATCH_DEPTH_SQL, DISPATCH_DEAD_SQL),
    "inbox": (WebhookInbox, INBOX_DEPTH_SQL, INBOX_DEAD_SQL),
}


class QueueCollector(Collector):
    """Queue gauges computed from the database on each scrape.

    ``erx_queue_depth{queue}``: pending rows per queue (``outbox``, ``inbox``; backing-off
    rows included) and ``queue="due"``, :data:`QUEUE_DEPTH_SQL` (the KEDA query: due rows of
    both queues only; do not sum it with the others). ``erx_queue_oldest_due_age_seconds{queue}``: seconds since
    the oldest pending row became due (0 when none is due).
    ``erx_dead_letters{queue}``: rows in state dead. ``erx_prescriptions_in_flight``:
    prescriptions in :data:`IN_FLIGHT_STATUSES`. ``now`` returns an aware UTC
    datetime. A database error skips these families for that scrape (logged,
    without the error text) rather than failing the scrape.
    """

    def __init__(self, db: Database, *, now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.now = now

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily
    ]:
        return (
            GaugeMetricFamily(
                "erx_queue_depth",
                "Pending rows per queue (queue=due: due rows of both, the KEDA query).",
                labels=["queue"],
            ),
            GaugeMetricFamily(
                "erx_queue_oldest_due_age_seconds",
                "Seconds since the oldest pending row became due.",
                labels=["queue"],
            ),
            GaugeMetricFamily(
                "erx_dead_letters", "Dead-lettered rows per queue.", labels=["queue"]
            ),
            GaugeMetricFamily(
                "erx_prescriptions_in_flight", "Prescriptions queued or issued and not yet final."
            ),
        )

    def describe(self) -> Iterator[Metric]:
        # Names only, so registering never touches the database.
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        depth, age, dead, in_flight = self._families()
        now = self.now()
        try:
            with self.db.engine.connect() as conn:
                depth.add_metric(["due"], float(conn.execute(text(QUEUE_DEPTH_SQL)).scalar_one()))
                for queue, (model, depth_sql, dead_sql) in QUEUES.items():
                    depth.add_metric([queue], float(conn.execute(text(depth_sql)).scalar_one()))
                    dead.add_metric([queue], float(conn.execute(text(dead_sql)).scalar_one()))
                    oldest = conn.execute(
                        select(func.min(model.next_attempt_at)).where(
                            model.state == "pending", model.next_attempt_at <= now
                        )
                    ).scalar_one()
                    age.add_metric(
                        [queue], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
                    )
                in_flight.add_metric([], float(conn.execute(text(IN_FLIGHT_SQL)).scalar_one()))
        except SQLAlchemyError as exc:
            log.warning("queue metrics unavailable: %s", type(exc).__name__)
            return
        yield from (depth, age, dead, in_flight)


# -- exposition -------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The multiprocess directory, or None in single-process mode.

    prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` itself, at import, to
    decide where values live; reading the same variable here (not a setting)
    keeps exposition and storage from ever disagreeing.
    """
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _ThisProcess(Collector):
    """This process's metrics from the default registry (single-process mode)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def build_registry(db: Database | None = None) -> CollectorRegistry:
    """A registry for one scrape: process values (summed over processes in multiprocess mode)
    plus, with ``db``, the :class:`QueueCollector` gauges."""
    registry = CollectorRegistry()
    path = multiprocess_dir()
    if path:
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ThisProcess())
    if db is not None:
        registry.register(QueueCollector(db))
    return registry


def render(db: Database | None = None) -> bytes:
    """The Prometheus text exposition (``CONTENT_TYPE_LATEST``) of :func:`build_registry`."""
    return generate_latest(build_registry(db))


def serve_worker_metrics(
    port: int, *, db: Database | None = None, addr: str = "0.0.0.0"
) -> tuple[Any, Any]:
    """Serve ``/metrics`` for a worker process on ``addr:port`` in a daemon thread.

    Pass ``db`` to include the queue gauges (normally the web tier exposes
    them; one source avoids double counting in dashboards). Returns
    prometheus_client's ``(server, thread)``; ``server.shutdown()`` stops it.
    """
    return start_http_server(port, addr=addr, registry=build_registry(db))


def mark_worker_dead(pid: int) -> None:
    """Tell multiprocess mode that gunicorn worker ``pid`` exited (call from ``child_exit``)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)


def init_app(app: Flask) -> None:
    """Register ``GET /metrics`` (no auth: keep it off the Ingress; scraped inside the cluster), and
    the receipt listener that counts webhook deliveries (``Runtime.webhook_listeners``)."""
    from flask import Blueprint, Response

    from app.mechanisms.runtime import runtime

    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    def metrics() -> Response:
        return Response(render(runtime().db), content_type=CONTENT_TYPE_LATEST)

    app.register_blueprint(bp)
    # The receiver reports each delivery it decided (webhooks/routes.py); count it here.
    app.extensions["erx"].webhook_listeners.append(_count_webhook)


def _count_webhook(kind: str, reason: str | None, at: float) -> None:
    """A :data:`app.mechanisms.runtime.WebhookListener`: count one delivery the receiver decided."""
    if kind == "rejected":
        webhook_rejected(reason or "unknown")
    else:
        webhook_received(duplicate=kind == "duplicate", now=at)
