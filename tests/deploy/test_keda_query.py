"""KEDA scales the workers on due work only: the ScaledObject's own query, run on the database.

Rows: due (pending, due, no lease), backing off (pending, due later), leased (pending,
due, claimed by a live worker), blocked (``blocked_credentials``), dead and done. Only
the due rows count: a platform outage fills the queue with backing-off rows, and more
workers would only wait too. On PostgreSQL the query goes through psycopg2 with a libpq
connection string, as KEDA's postgresql scaler sends it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from app.foundation.db import Database
from app.foundation.models import DispatchOutbox, Prescription, WebhookInbox
from app.mechanisms.metrics import QueueCollector
from tests.deploy.rendered import render

HOUR = timedelta(hours=1)


def keda_query() -> str:
    scaled = render("production").get("ScaledObject", "erx-connector-worker")
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "postgresql"]
    return trigger["metadata"]["query"]


def run_as_keda(db: Database, query: str) -> int:
    url = make_url(db.engine.url)
    if url.get_backend_name() != "postgresql":
        with db.engine.connect() as conn:
            return int(conn.execute(text(query)).scalar_one())
    dsn = f"host={url.host} port={url.port or 5432} user={url.username} dbname={url.database}"
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(query)
        return int(cur.fetchone()[0])


def test_only_due_rows_count(seeded: Database) -> None:
    query = keda_query()
    now = datetime.now(UTC)
    outbox = [  # (state, next_attempt_at, locked_until)
        ("pending", now - HOUR, None),  # due
        ("pending", now - 2 * HOUR, now - HOUR),  # due: its lease ran out (a crashed worker)
        ("pending", now + HOUR, None),  # backing off after a 503
        ("pending", now + 2 * HOUR, None),  # backing off
        ("pending", now - HOUR, now + HOUR),  # leased by a live worker
        ("blocked_credentials", now - HOUR, None),
        ("dead", now - HOUR, None),
        ("done", now - HOUR, None),
    ]
    inbox = [
        ("pending", now - HOUR, None),  # due
        ("pending", now + HOUR, None),  # backing off
        ("dead", now - HOUR, None),
        ("processed", now - HOUR, None),
    ]
    with seeded.session() as s:
        ids = list(s.scalars(select(Prescription.id).order_by(Prescription.id)))
        assert len(ids) >= len(outbox)
        for pid, (state, due, lease) in zip(ids, outbox, strict=False):
            s.add(
                DispatchOutbox(
                    prescription_id=pid,
                    flow="erx",
                    state=state,
                    attempts=1,
                    next_attempt_at=due,
                    locked_until=lease,
                    created_at=now - HOUR,
                    updated_at=now,
                )
            )
        for i, (state, due, lease) in enumerate(inbox):
            s.add(
                WebhookInbox(
                    event_id=f"evt_keda_{i}",
                    body=b"{}",
                    state=state,
                    attempts=1,
                    next_attempt_at=due,
                    locked_until=lease,
                    received_at=now - HOUR,
                )
            )

    assert run_as_keda(seeded, query) == 3  # two due outbox rows, one due inbox event

    # The service exports the same figure (erx_queue_depth{queue="due"}), beside all pending rows.
    families = {f.name: f for f in QueueCollector(seeded).collect()}
    depth = {s.labels["queue"]: s.value for s in families["erx_queue_depth"].samples}
    assert depth == {"due": 3.0, "outbox": 5.0, "inbox": 2.0}


def test_an_outage_backlog_scales_nothing(seeded: Database) -> None:
    # Every row waiting out its backoff: KEDA sees no work, the workers stay at their minimum.
    now = datetime.now(UTC)
    with seeded.session() as s:
        for pid in list(s.scalars(select(Prescription.id).order_by(Prescription.id)))[:6]:
            s.add(
                DispatchOutbox(
                    prescription_id=pid,
                    flow="erx",
                    state="pending",
                    attempts=3,
                    next_attempt_at=now + HOUR,
                    created_at=now - HOUR,
                    updated_at=now,
                )
            )
    assert run_as_keda(seeded, keda_query()) == 0
