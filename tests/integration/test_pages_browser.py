"""The patient and support pages in a real browser (Debian's Chromium driven by Playwright).

The service, the sandbox (in automatic mode) and the workers run for real, as
in tests/integration; the browser talks to the service over loopback HTTP.
Screenshots go to a temporary folder; with ``UPDATE_SCREENSHOTS=1`` to docs/screenshots/
(the README shows them), so an ordinary test run leaves the checkout unchanged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from app.identity import mint_token
from app.models import Patient, Prescription
from tests.integration.conftest import wait_until, worker_threads

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "erx-screenshots"
)
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1000, "height": 1100}, timezone_id="Europe/London", locale="en-GB")
    tab = context.new_page()
    yield tab
    context.close()


def first_draft(db, region: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        rx, ref = s.execute(
            select(Prescription, Patient.external_ref)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(Patient.region_code == region, Prescription.status == "draft")
            .order_by(Prescription.id)
        ).first()
        return rx.id, rx.reference, ref


def test_patient_searches_sends_and_watches_until_dispensed(page, live, live_settings, seeded, sandbox):
    sandbox.control(auto=True, auto_delay_s=0.3, auto_skip_printed_rate=0.0)
    pid, reference, patient_ref = first_draft(seeded, "B")

    with worker_threads(live_settings, seeded):
        page.goto(f"{live.url}/?patient={patient_ref}")
        page.wait_for_selector("#region:not([disabled])")
        assert page.input_value("#region") == "B"
        page.click(f"button[data-id='{pid}']")

        combo = page.get_by_role("combobox", name="Pharmacy name, town or postcode")
        combo.fill("maryleb")
        option = page.locator("#pharmacy-list [role=option]").first
        option.wait_for()
        assert "Marylebone" in option.inner_text()
        combo.press("ArrowDown")
        assert combo.get_attribute("aria-activedescendant") == "pharmacy-opt-0"
        assert combo.get_attribute("aria-expanded") == "true"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "patient-search.png"))
        combo.press("Enter")
        assert "Marylebone" in page.inner_text("#chosen")
        page.click("#send")

        page.wait_for_selector("#timeline-card:not([hidden])")
        page.wait_for_function(
            "document.querySelector('#timeline-status').textContent === 'Dispensed'", timeout=60_000
        )
        steps = page.locator("#timeline .step-status").all_inner_texts()
        assert steps == ["Queued", "Issued", "Signed", "Printed", "Dispensed"]
        times = page.locator("#timeline time").all_inner_texts()
        assert all(t and ("GMT" in t or "BST" in t) for t in times), times
        assert page.inner_text("#timeline-ref") == reference
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "patient-page.png"), full_page=True)


def test_support_voids_a_fresh_prescription(page, live, live_settings, seeded, sandbox):
    pid, reference, patient_ref = first_draft(seeded, "B")
    patient = {"Authorization": f"Bearer {mint_token(live_settings, role='patient', subject=patient_ref)}"}
    pharmacies = requests.get(f"{live.url}/api/v1/pharmacies", params={"q": "Marylebone", "region": "B"},
                              headers=patient, timeout=10).json()["items"]
    resp = requests.post(f"{live.url}/api/v1/prescriptions/{pid}/send",
                         json={"pharmacy_id": pharmacies[0]["id"]}, headers=patient, timeout=10)
    assert resp.status_code == 202, resp.text

    with worker_threads(live_settings, seeded):
        wait_until(
            lambda: requests.get(f"{live.url}/api/v1/prescriptions/{pid}", headers=patient, timeout=10).json()["status"]
            == "issued",
            timeout_s=30,
        )
        page.goto(f"{live.url}/support?id={pid}")
        page.wait_for_selector("#detail:not([hidden])")
        assert page.inner_text("#detail-token").startswith("SRX")
        page.fill("#void-reason", "Prescribed in error")
        page.click("#void-button")
        page.wait_for_function("document.querySelector('#detail-status').textContent === 'Voided'", timeout=30_000)
        assert f"{reference} was voided." in page.inner_text("#notice")
        page.screenshot(path=str(SCREENSHOTS / "support-page.png"), full_page=True)


def test_errors_read_as_sentences_not_json(page, live):
    page.goto(f"{live.url}/?patient=pt-9999")
    notice = page.locator("#notice")
    notice.wait_for()
    text = notice.inner_text()
    assert text and "{" not in text and "code" not in text
