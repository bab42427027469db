"""Metrics: app/mechanisms/metrics.py, /metrics, the queue collector, multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text, update

from app.foundation.db import Database
from app.foundation.models import DispatchOutbox, Prescription, WebhookInbox
from app.mechanisms.metrics import (
    QUEUE_DEPTH_SQL,
    WEBHOOKS_DUPLICATE,
    WEBHOOKS_RECEIVED,
    WEBHOOKS_REJECTED,
    QueueCollector,
    serve_worker_metrics,
)
from scripts.stack import free_port
from tests.conftest import REPO
from tests.unit.test_webhook_receiver import NOW, clock, deliver, event_body  # noqa: F401 (clock: a fixture)

NAMES = (
    "erx_webhooks_received_total",
    "erx_webhooks_rejected_total",
    "erx_webhooks_duplicate_total",
    "erx_queue_depth",
    "erx_queue_oldest_due_age_seconds",
    "erx_dead_letters",
    "erx_platform_calls_total",
    "erx_platform_call_duration_seconds",
    "erx_token_refreshes_total",
    "erx_logins_total",
    "erx_logins_refused_total",
    "erx_circuit_breaker_open",
    "erx_sends_total",
    "erx_send_queued_to_issued_seconds",
    "erx_prescriptions_in_flight",
    "erx_webhook_last_received_timestamp_seconds",
)
T = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_endpoint_exposes_every_name(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    body = response.get_data(as_text=True)
    helped = {line.split()[2] for line in body.splitlines() if line.startswith("# HELP ")}
    assert set(NAMES) <= helped, sorted(set(NAMES) - helped)
    values = samples(body)
    assert values[("erx_queue_depth", (("queue", "due"),))] == 0.0


def add_queue_rows(db: Database) -> None:
    """Known rows: dispatch 2 due + 1 future pending, 2 dead, 1 done; inbox 3 due pending, 1 dead, 2 processed."""
    with db.session() as session:
        ids = list(session.scalars(select(Prescription.id).order_by(Prescription.id)))
        rows = [
            ("pending", T - timedelta(seconds=30)),
            ("pending", T - timedelta(seconds=10)),
            ("pending", T + timedelta(seconds=60)),
            ("dead", T - timedelta(hours=2)),
            ("dead", T - timedelta(hours=1)),
            ("done", T - timedelta(hours=3)),
        ]
        for pid, (state, due) in zip(ids, rows, strict=False):
            session.add(
                DispatchOutbox(
                    prescription_id=pid,
                    flow="erx",
                    state=state,
                    attempts=1,
                    next_attempt_at=due,
                    created_at=T - timedelta(hours=5),
                    updated_at=T,
                )
            )
        inbox = [
            ("pending", T - timedelta(seconds=100)),
            ("pending", T - timedelta(seconds=5)),
            ("pending", T),
            ("dead", T - timedelta(days=1)),
            ("processed", T - timedelta(days=2)),
            ("processed", T - timedelta(days=3)),
        ]
        for i, (state, due) in enumerate(inbox):
            session.add(
                WebhookInbox(
                    event_id=f"evt_m_{i}",
                    body=b"{}",
                    state=state,
                    attempts=0,
                    next_attempt_at=due,
                    received_at=due,
                )
            )
        session.execute(
            update(Prescription).where(Prescription.id.in_(ids[:3])).values(status="queued")
        )
        session.execute(
            update(Prescription).where(Prescription.id.in_(ids[3:5])).values(status="issued")
        )
        session.execute(
            update(Prescription).where(Prescription.id == ids[5]).values(status="printed")
        )
        session.execute(
            update(Prescription).where(Prescription.id.in_(ids[6:9])).values(status="dispensed")
        )
        session.execute(
            update(Prescription).where(Prescription.id == ids[9]).values(status="rejected")
        )


def test_queue_collector_numbers_match_the_rows(seeded: Database) -> None:
    add_queue_rows(seeded)
    families = {f.name: f for f in QueueCollector(seeded, now=lambda: T).collect()}
    by = {
        name: {tuple(s.labels.values()): s.value for s in fam.samples}
        for name, fam in families.items()
    }
    due = by["erx_queue_depth"].pop(("due",))
    assert by["erx_queue_depth"] == {("outbox",): 3.0, ("inbox",): 3.0}
    assert by["erx_queue_oldest_due_age_seconds"] == {("outbox",): 30.0, ("inbox",): 100.0}
    assert by["erx_dead_letters"] == {("outbox",): 2.0, ("inbox",): 1.0}
    assert by["erx_prescriptions_in_flight"] == {(): 6.0}
    # queue="due" is the KEDA query itself (against the database's clock; what counts as due
    # is tested in tests/integration/test_keda_query.py).
    with seeded.engine.connect() as conn:
        assert conn.execute(text(QUEUE_DEPTH_SQL)).scalar_one() == due


def test_queue_collector_with_nothing_due_reports_zero_age(seeded: Database) -> None:
    families = {f.name: f for f in QueueCollector(seeded, now=lambda: T).collect()}
    assert {s.value for s in families["erx_queue_oldest_due_age_seconds"].samples} == {0.0}


def test_queue_collector_skips_its_families_when_the_database_is_down() -> None:
    down = Database("postgresql+psycopg2://postgres@127.0.0.1:1/nodb")
    try:
        assert list(QueueCollector(down, now=lambda: T).collect()) == []
    finally:
        down.dispose()


@pytest.mark.usefixtures("clock")
def test_webhook_receiver_counts_received_duplicate_and_rejected(client, seeded) -> None:  # type: ignore[no-untyped-def]
    received, duplicate = WEBHOOKS_RECEIVED._value.get(), WEBHOOKS_DUPLICATE._value.get()
    no_match = WEBHOOKS_REJECTED.labels(reason="no_match")._value.get()
    assert deliver(client, event_body("evt_count_1")).status_code == 200
    assert deliver(client, event_body("evt_count_1")).status_code == 200
    assert deliver(client, event_body("evt_count_2"), secrets=("wrong",)).status_code == 401
    assert WEBHOOKS_RECEIVED._value.get() == received + 2
    assert WEBHOOKS_DUPLICATE._value.get() == duplicate + 1
    assert WEBHOOKS_REJECTED.labels(reason="no_match")._value.get() == no_match + 1
    body = client.get("/metrics").get_data(as_text=True)
    assert samples(body)[("erx_webhook_last_received_timestamp_seconds", ())] == float(NOW)


WRITER = """
import sys
import app.mechanisms.metrics as m
n = int(sys.argv[1])
for _ in range(n):
    m.webhook_received(duplicate=False, now=1000.0 + n)
m.webhook_rejected("no_match")
m.PLATFORM_CALL_DURATION.labels(endpoint="issue").observe(0.2 * n)
m.CIRCUIT_BREAKER_OPEN.set(0)
"""


def test_multiprocess_mode_sums_two_writing_processes(client, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(n)],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (3, 4)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    assert len(list(tmp_path.glob("*.db"))) >= 2  # each process wrote its own files
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    body = client.get("/metrics").get_data(as_text=True)
    values = samples(body)
    assert values[("erx_webhooks_received_total", ())] == 7.0
    assert values[("erx_webhooks_rejected_total", (("reason", "no_match"),))] == 2.0
    assert (
        values[("erx_webhook_last_received_timestamp_seconds", ())] == 1004.0
    )  # max over processes
    assert values[("erx_platform_call_duration_seconds_count", (("endpoint", "issue"),))] == 2.0
    assert (
        values[("erx_queue_depth", (("queue", "due"),))] == 0.0
    )  # the database gauges are there too


def test_worker_serves_its_own_metrics(seeded: Database, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    port = free_port()
    server, thread = serve_worker_metrics(port, db=seeded, addr="127.0.0.1")
    try:
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert "# HELP erx_sends_total" in body
    assert samples(body)[("erx_queue_depth", (("queue", "outbox"),))] == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_names_are_defined_once_in_the_metrics_module(name: str) -> None:
    sources = [p for p in (REPO / "app").rglob("*.py")] + [
        p for p in (REPO / "webhooks").rglob("*.py")
    ]
    homes = [p.name for p in sources if f'"{name}"' in p.read_text(encoding="utf-8")]
    assert homes == ["metrics.py"]
