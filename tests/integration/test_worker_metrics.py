"""The worker process serves its own /metrics (``flask --app app worker --metrics-port N``),
and a send through the real sandbox moves its numbers."""

from __future__ import annotations

import pytest
import requests
from sqlalchemy import select

from app.foundation.models import Patient, Pharmacy, Prescription
from app.services.prescriptions import queue_send
from scripts.stack import Stack, base_env, free_port, wait_http
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in requests.get(url, timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_worker_serves_metrics_and_a_send_moves_them(live, seeded, sandbox, db_url, tmp_path):
    with seeded.session() as s:
        pid = s.scalars(
            select(Prescription.id)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(Patient.region_code == "B", Prescription.status == "draft")
            .order_by(Prescription.id)
        ).first()
        pharmacy_id = s.scalars(select(Pharmacy.id).where(Pharmacy.branch_id == 17)).one()
    port = free_port()
    stack = Stack(
        env=base_env(
            DATABASE_URL=db_url, ERX_BASE_URL=sandbox.url, ERX_ENV="test", WORKER_POLL_S="0.05"
        ),
        log_dir=tmp_path / "logs",
    )
    worker = stack.start_worker("worker", "--metrics-port", str(port), "--no-inbox")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_http(url, proc=worker)
        assert scrape(url).get('erx_sends_total{outcome="issued",route="erx"}', 0.0) == 0.0
        queue_send(seeded, pid, pharmacy_id=pharmacy_id, request_id="metrics-test-1")

        wait_until(
            lambda: scrape(url).get('erx_sends_total{outcome="issued",route="erx"}') == 1.0,
            timeout_s=30,
        )
        samples = scrape(url)
    finally:
        stack.stop()

    assert samples['erx_platform_calls_total{endpoint="issue",outcome="2xx"}'] == 1.0
    assert samples['erx_platform_calls_total{endpoint="token",outcome="2xx"}'] == 1.0
    assert samples['erx_platform_calls_total{endpoint="login",outcome="2xx"}'] == 1.0
    assert samples['erx_logins_total{kind="first"}'] == 1.0
    assert samples["erx_send_queued_to_issued_seconds_count"] == 1.0
    assert samples["erx_circuit_breaker_open"] == 0.0
    # Only the fixed endpoint vocabulary, never a URL with an id in it.
    assert not any("SRX" in name or "/prescriptions" in name for name in samples)
    log_text = (tmp_path / "logs" / "worker.log").read_text()
    assert "metrics-test-1" in log_text
