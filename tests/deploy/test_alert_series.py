"""The alert rules and the KEDA query against what the processes really export.

The web tier (gunicorn, 4 workers, the repo's gunicorn.conf.py: multiprocess metrics)
and a worker (``--metrics-port``) run against the sandbox. Recorded first while healthy,
then after faults: a prescriber login the platform refuses, platform 503s until the
circuit breaker opens, webhook deliveries (accepted and refused), and a backlog older
than the lagging thresholds plus dead letters (rows written with old due times, the
worker stopped). Both ``/metrics`` are scraped; every metric name and every label value
any rule in k8s/alerts/erx-connector.rules.yaml matches on, and the KEDA query's gauge,
must be in the scrape. Repeated scrapes of the 4-worker web tier must agree (counters
and gauges). (The audit sealer's rules, k8s/alerts/erx-audit.yaml, have their own
recording: tests/deploy/test_audit_alert_series.py.)

The scrapes are the source of the promtool unit tests: with ``ERX_RECORD_SERIES=1`` this
test writes k8s/alerts/recorded-series.json, and ``python k8s/alerts/generate_tests.py``
turns that into k8s/alerts/erx-connector.test.yaml (.ci/manifests checks both are in
step). Without it the test checks the committed recording is still what the service
exports: every recorded series is in today's scrape.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, update

from app.foundation.db import Database
from app.foundation.models import (
    DispatchOutbox,
    Patient,
    Pharmacy,
    Prescriber,
    Prescription,
    WebhookInbox,
)
from app.services.prescriptions import queue_send
from scripts.stack import BIN, PRESCRIBERS, WEBHOOK_SECRET, Stack, base_env, free_port, wait_http
from tests.deploy.rendered import ALERTS, STARTUP_S, render, scrape, unexported_selectors
from tests.integration.conftest import wait_until
from tests.unit.test_webhook_receiver import event_body
from webhooks.signature import sign

pytestmark = pytest.mark.integration  # about a minute

RULES = ALERTS / "erx-connector.rules.yaml"
RECORDING = ALERTS / "recorded-series.json"
GOOD, BAD = "dr.jones@example.test", "dr.patel@example.test"
WEBHOOKS = 5


def send(db: Database, prescriber: str, skip: set[int], request_id: str) -> int:
    with db.session() as s:
        pid = s.scalars(
            select(Prescription.id)
            .join(Patient, Patient.id == Prescription.patient_id)
            .join(Prescriber, Prescriber.id == Prescription.prescriber_id)
            .where(
                Patient.region_code == "B",
                Prescription.status == "draft",
                Prescriber.email == prescriber,
                Prescription.id.not_in(skip or {0}),
            )
            .order_by(Prescription.id)
        ).first()
        pharmacy_id = s.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 17)).one()
    assert pid is not None
    queue_send(db, pid, pharmacy_id=pharmacy_id, request_id=request_id)
    skip.add(pid)
    return pid


def outbox_state(db: Database, pid: int) -> str | None:
    with db.session() as s:
        return s.scalars(
            select(DispatchOutbox.state).where(DispatchOutbox.prescription_id == pid)
        ).first()


def deliver(url: str, event_id: str, *, secret: str = WEBHOOK_SECRET) -> int:
    body = event_body(event_id, token="SRXUNKNOWN0001")
    signature = sign(body, [secret], timestamp=int(time.time()))
    return requests.post(
        f"{url}/webhooks/platform",
        data=body,
        timeout=10,
        headers={"Content-Type": "application/json", "X-Signature": signature},
    ).status_code


def backlog(db: Database, *, minutes: int) -> None:
    """Due rows older than the lagging thresholds in both queues, and a dead letter in each."""
    now = datetime.now(UTC)
    old = now - timedelta(minutes=minutes)
    with db.session() as s:
        taken = set(s.scalars(select(DispatchOutbox.prescription_id)))
        free = [
            p
            for p in s.scalars(select(Prescription.id).order_by(Prescription.id))
            if p not in taken
        ][:2]
        s.add(
            DispatchOutbox(
                prescription_id=free[0],
                flow="erx",
                state="pending",
                attempts=1,
                next_attempt_at=old,
                created_at=old,
                updated_at=old,
            )
        )
        s.add(
            DispatchOutbox(
                prescription_id=free[1],
                flow="erx",
                state="dead",
                attempts=8,
                next_attempt_at=old,
                last_error="platform unavailable",
                created_at=old,
                updated_at=now,
            )
        )
        s.execute(update(Prescription).where(Prescription.id.in_(free)).values(status="queued"))
        s.add(
            WebhookInbox(
                event_id="evt_backlog_due",
                body=b"{}",
                state="pending",
                attempts=1,
                next_attempt_at=old,
                received_at=old,
            )
        )
        s.add(
            WebhookInbox(
                event_id="evt_backlog_dead",
                body=b"{}",
                state="dead",
                attempts=8,
                next_attempt_at=old,
                received_at=old,
            )
        )


def test_rules_and_keda_match_what_web_and_worker_export(
    seeded: Database, db_url: str, tmp_path: Path
) -> None:
    web_port, worker_port = free_port(), free_port()
    stack = Stack(
        env=base_env(
            DATABASE_URL=db_url,
            ERX_ENV="test",
            WORKER_POLL_S="0.05",
            BREAKER_FAIL_MAX="2",
            BREAKER_RESET_S="600",
            DISPATCH_BACKOFF_BASE_S="0.1",
            DISPATCH_BACKOFF_CAP_S="0.5",
        ),
        log_dir=tmp_path / "logs",
    )
    stack.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn.conf.py makes one: 4 workers
    web_metrics, worker_metrics = (
        f"http://127.0.0.1:{web_port}/metrics",
        f"http://127.0.0.1:{worker_port}/metrics",
    )
    taken: set[int] = set()
    try:
        stack.start_sandbox(webhook_port=web_port)
        for email, (password, pin) in PRESCRIBERS.items():
            stored = ("wrong-password-3c9a", pin) if email == BAD else (password, pin)
            stack.flask(
                "prescribers",
                "set-credentials",
                email,
                env={"ERX_PRESCRIBER_PASSWORD": stored[0], "ERX_PRESCRIBER_PIN": stored[1]},
            )
        # As Stack.start_service does, with more time to answer (4 workers start at once).
        web = stack._spawn(
            "service",
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            {"BIND": f"127.0.0.1:{web_port}", "WEB_CONCURRENCY": "4"},
        )
        url = f"http://127.0.0.1:{web_port}"
        wait_http(url + "/healthz", proc=web, timeout_s=STARTUP_S)
        worker = stack.start_worker("worker", "--metrics-port", str(worker_port))
        wait_http(worker_metrics, proc=worker, timeout_s=STARTUP_S)

        # Healthy: one send issued.
        issued = send(seeded, GOOD, taken, "alerts-healthy")
        wait_until(lambda: outbox_state(seeded, issued) == "done", timeout_s=120, interval_s=0.2)
        healthy = {"web": scrape(web_metrics), "worker": scrape(worker_metrics)}

        # Faults: a refused login, then platform 503s until the breaker opens.
        refused = send(seeded, BAD, taken, "alerts-refused")
        wait_until(
            lambda: outbox_state(seeded, refused) == "blocked_credentials",
            timeout_s=120,
            interval_s=0.2,
        )
        requests.post(
            f"{stack.sandbox_url}/sandbox/control", json={"fail_503_rate": 1.0}, timeout=10
        ).raise_for_status()
        for i in range(2):
            send(seeded, GOOD, taken, f"alerts-503-{i}")
        wait_until(
            lambda: scrape(worker_metrics).get("erx_circuit_breaker_open") == 1.0,
            timeout_s=120,
            interval_s=0.2,
        )
        # Webhooks: accepted, and one with a signature nobody holds.
        for i in range(WEBHOOKS):
            assert deliver(url, f"evt_alerts_{i}") == 200
        assert deliver(url, "evt_alerts_forged", secret="whsec_not_ours") == 401
        worker_faulted = scrape(worker_metrics)
        stack.procs.pop("worker").terminate()
        worker.wait(30)
        backlog(seeded, minutes=30)

        # Multiprocess mode: 4 workers answer scrapes in turn and all agree.
        scrapes = [scrape(web_metrics) for _ in range(12)]
    finally:
        stack.stop()

    web_faulted = scrapes[0]
    # Every counter and gauge agrees across scrapes, except those that follow the clock: the
    # ages grow, and the due count grows as backoffs run out (the worker is stopped). Both
    # are read from the database at scrape time, not kept per gunicorn worker.
    clocked = ("erx_queue_oldest_due_age_seconds", 'erx_queue_depth{queue="due"}')
    steady = [{k: v for k, v in s.items() if not k.startswith(clocked)} for s in scrapes]
    differ = sorted(
        {k for s in steady for k in s if s.get(k) != steady[0].get(k)}
        | (set().union(*steady) - set(steady[0]))
    )
    assert differ == [], f"scrapes of the 4-worker web tier disagree on {differ}"
    ages = [s['erx_queue_oldest_due_age_seconds{queue="outbox"}'] for s in scrapes]
    assert ages == sorted(ages)
    due = [s['erx_queue_depth{queue="due"}'] for s in scrapes]
    assert due == sorted(due)
    assert web_faulted["erx_webhooks_received_total"] == WEBHOOKS
    assert web_faulted['erx_webhooks_rejected_total{reason="no_match"}'] == 1
    assert web_faulted["erx_webhook_last_received_timestamp_seconds"] > 0
    assert (
        worker_faulted["erx_logins_refused_total"] == 1
        and healthy["worker"]["erx_logins_refused_total"] == 0
    )
    assert (
        worker_faulted["erx_circuit_breaker_open"] == 1
        and healthy["worker"]["erx_circuit_breaker_open"] == 0
    )
    assert web_faulted['erx_queue_oldest_due_age_seconds{queue="outbox"}'] > 600
    assert web_faulted['erx_queue_oldest_due_age_seconds{queue="inbox"}'] > 300
    assert (
        web_faulted['erx_dead_letters{queue="outbox"}'] >= 1
        and web_faulted['erx_dead_letters{queue="inbox"}'] >= 1
    )
    assert web_faulted["erx_prescriptions_in_flight"] > 0

    missing = unexported_selectors(RULES, {**web_faulted, **worker_faulted})
    assert missing == [], f"the rules select series nobody exports: {missing}"
    # KEDA's query is exported as erx_queue_depth{queue="due"} (the same SQL, tests/deploy/test_keda_query.py).
    scaled = render("production").get("ScaledObject", "erx-connector-worker")
    assert scaled["spec"]["triggers"][0]["metadata"]["query"]
    assert 'erx_queue_depth{queue="due"}' in web_faulted

    recording = {
        "about": "Recorded by tests/deploy/test_alert_series.py (ERX_RECORD_SERIES=1); "
        "k8s/alerts/generate_tests.py builds erx-connector.test.yaml from it.",
        "healthy": healthy,
        "faulted": {"web": web_faulted, "worker": worker_faulted},
    }
    if os.environ.get("ERX_RECORD_SERIES") == "1":
        RECORDING.write_text(json.dumps(recording, indent=1, sort_keys=True) + "\n")
    committed = json.loads(RECORDING.read_text())
    for phase in ("healthy", "faulted"):
        for tier in ("web", "worker"):
            stale = sorted(set(committed[phase][tier]) - set(recording[phase][tier]))
            assert stale == [], (
                f"{RECORDING.name} records series no longer exported ({phase}, {tier}): {stale}"
            )
