"""The audit alert rules against what the audit sealer really exports.

The sealer runs as the production overlay renders it (``flask --app app audit seal
--loop``, metrics on ``WORKER_METRICS_PORT``, the development signing key under
``ERX_ENV=test``) against the test database. Recorded first while healthy (a few audit
rows written now, sealed at once), then while a backlog waits unsealed: rows written
half an hour ago, as many as two seals take (``DEFAULT_SEAL_LIMIT`` each), as after an
outage of the sealer; between the two seals the sealer reports the oldest waiting
row's age, and that scrape is the stalled one. Once the backlog is sealed, two sealed
rows are tampered with (one changed, one removed) and the real ``flask --app app audit
verify`` reports them: the sealer's periodic verify (every 5 minutes, the same
:func:`app.mechanisms.audit_sealer.verify`) adds one to
``erx_audit_verify_failures_total`` per reported line, so that count is recorded as
the counter's increase (the test does not wait 5 minutes for the sealer's own run).
Every metric name and label value a rule in k8s/alerts/erx-audit.yaml selects must be
in the scrape.

The recording is the source of the audit rules' promtool unit tests: with
``ERX_RECORD_SERIES=1`` this test writes k8s/alerts/recorded-audit-series.json, and
``python k8s/alerts/generate_tests.py`` turns it into k8s/alerts/erx-audit.test.yaml
(.ci/manifests checks they are in step). Without it the test checks the committed
recording is still what the sealer exports: every recorded series is in today's scrape.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from app.foundation.db import Database
from app.foundation.models import AuditEvent, AuditLeaf
from app.mechanisms.audit import Accessor, append_many
from app.mechanisms.audit_sealer import DEFAULT_SEAL_LIMIT
from scripts.stack import BIN, REPO_ROOT, Stack, base_env, free_port, wait_http
from tests.deploy.rendered import ALERTS, STARTUP_S, render, scrape, unexported_selectors
from tests.integration.conftest import wait_until
from tests.support import audit_triggers_suspended

pytestmark = pytest.mark.integration  # about 15 s

RULES = ALERTS / "erx-audit.yaml"
RECORDING = ALERTS / "recorded-audit-series.json"
WRITER = Accessor(actor="svc-alerts-test", role="service", request_id="alerts-audit")
HEALTHY_ROWS = 3
BACKLOG_ROWS = 2 * DEFAULT_SEAL_LIMIT  # two seals: the first leaves the second half waiting
BACKLOG_AGE = timedelta(minutes=30)
AGE = "erx_audit_unsealed_oldest_age_seconds"
SIZE = "erx_audit_tree_size"
FAILURES = "erx_audit_verify_failures_total"


def write_rows(db: Database, count: int, *, at: datetime) -> None:
    """``count`` audit rows, as the web tier writes them, stamped ``at``, in one transaction."""
    with db.session() as s:
        append_many(s, WRITER, action="list", prescription_ids=[None] * count, now=at)


def rows_written(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def tamper(db: Database, sql: str, **params: object) -> None:
    """What an attacker with database access does: bypass the append-only triggers."""
    with db.engine.begin() as conn, audit_triggers_suspended(conn):
        conn.execute(text(sql), params)


def audit_series(scraped: dict[str, float]) -> dict[str, float]:
    """The sealer's own series (its registry also carries every other erx_ metric, unused)."""
    return {k: v for k, v in scraped.items() if k.startswith("erx_audit_")}


def test_audit_rules_match_what_the_sealer_exports(
    seeded: Database, db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    command = render("production").container(
        "Deployment", "erx-connector-audit-sealer", "audit-sealer"
    )["command"]
    assert command[:2] == ["flask", "--app"] and "--loop" in command
    stack = Stack(env=base_env(DATABASE_URL=db_url, ERX_ENV="test"), log_dir=tmp_path / "logs")
    stalled: dict[str, float] = {}

    def caught_stalled() -> bool:
        scraped = scrape(metrics)
        if scraped.get(AGE, 0) > 60:
            stalled.update(scraped)
            return True
        return False

    try:
        sealer = stack._spawn(
            "audit-sealer", [str(BIN / "flask"), *command[1:]], {"WORKER_METRICS_PORT": str(port)}
        )
        wait_http(metrics, proc=sealer, timeout_s=STARTUP_S)

        # Healthy: fresh rows, sealed at once.
        write_rows(seeded, HEALTHY_ROWS, at=datetime.now(UTC))
        sealed_healthy = rows_written(seeded)
        wait_until(
            lambda: scrape(metrics).get(SIZE, 0) == sealed_healthy, timeout_s=60, interval_s=0.1
        )
        healthy = scrape(metrics)

        # Stalled: a backlog of old rows; caught between its two seals.
        write_rows(seeded, BACKLOG_ROWS, at=datetime.now(UTC) - BACKLOG_AGE)
        wait_until(caught_stalled, timeout_s=120, interval_s=0.05)
        wait_until(
            lambda: scrape(metrics).get(SIZE, 0) == sealed_healthy + BACKLOG_ROWS,
            timeout_s=120,
            interval_s=0.2,
        )
        drained = scrape(metrics)

        # Tampered: verify reports one line per problem.
        with seeded.session() as s:
            first, second = s.scalars(select(AuditLeaf.event_id).order_by(AuditLeaf.seq).limit(2))
        tamper(seeded, "UPDATE audit_events SET actor = 'mallory' WHERE id = :id", id=first)
        tamper(seeded, "DELETE FROM audit_events WHERE id = :id", id=second)
        verified = subprocess.run(
            [str(BIN / "flask"), "--app", "app", "audit", "verify"],
            cwd=REPO_ROOT,
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert sealer.poll() is None, "the sealer exited"
    finally:
        stack.stop()

    problems = [line for line in verified.stderr.splitlines() if line.startswith("audit verify: ")]
    assert verified.returncode == 1, verified.stderr[-2000:]
    assert problems == [
        f"audit verify: audit row {first} (leaf 0) was changed after it was sealed",
        f"audit verify: audit row {second} (leaf 1) was removed after it was sealed",
    ]

    assert healthy["erx_audit_last_seal_timestamp_seconds"] > 0
    assert healthy[AGE] < 60 and drained[AGE] < 60
    assert healthy[FAILURES] == stalled[FAILURES] == 0
    # The first seal of the backlog took one batch; the rest waited half an hour old.
    assert stalled[SIZE] == sealed_healthy + DEFAULT_SEAL_LIMIT
    assert BACKLOG_AGE.total_seconds() <= stalled[AGE] < BACKLOG_AGE.total_seconds() + 600

    missing = unexported_selectors(RULES, stalled)
    assert missing == [], f"the audit rules select series the sealer does not export: {missing}"

    recording = {
        "about": "Recorded by tests/deploy/test_audit_alert_series.py (ERX_RECORD_SERIES=1); "
        "k8s/alerts/generate_tests.py builds erx-audit.test.yaml from it. verify_problems: the "
        "lines `flask --app app audit verify` reported for the tampered rows, each one more "
        "in erx_audit_verify_failures_total when the sealer's periodic verify finds it.",
        "healthy": {"sealer": audit_series(healthy)},
        "faulted": {"sealer": audit_series(stalled)},
        "verify_problems": len(problems),
    }
    if os.environ.get("ERX_RECORD_SERIES") == "1":
        RECORDING.write_text(json.dumps(recording, indent=1, sort_keys=True) + "\n")
    committed = json.loads(RECORDING.read_text())
    for phase in ("healthy", "faulted"):
        stale = sorted(set(committed[phase]["sealer"]) - set(recording[phase]["sealer"]))
        assert stale == [], (
            f"{RECORDING.name} records series the sealer no longer exports ({phase}): {stale}"
        )
