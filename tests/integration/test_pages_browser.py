"""The patient and support pages in a real browser (Debian's Chromium driven by Playwright).

The service, the sandbox (in automatic mode) and the workers run for real, as
in tests/integration; the browser talks to the service over loopback HTTP.
Screenshots go to a temporary folder; with ``UPDATE_SCREENSHOTS=1`` to docs/screenshots/
(the README shows them), so an ordinary test run leaves the checkout unchanged.

Accessibility: axe-core (the npm package, installed by ``make browser`` with
``npm ci`` into ``tests/browser/node_modules``) is injected from that file, never
a CDN; a serious or critical violation fails the test. Every page load also
collects the browser's console, so a Content-Security-Policy violation (the
pages run under a strict policy) fails the test too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from playwright.sync_api import expect
from sqlalchemy import select

from app.foundation.models import Medicine, Patient, Prescription, PrescriptionMedicine
from tests.integration.conftest import wait_until, worker_threads

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = (
    REPO / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "erx-screenshots"
)
AXE = REPO / "tests" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 360, "height": 780}
DESKTOP = {"width": 1280, "height": 1000}


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.fail(
            "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
        )
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _open(browser, viewport, *, bypass_csp: bool = False):  # type: ignore[no-untyped-def]
    context = browser.new_context(
        viewport=viewport, timezone_id="Europe/London", locale="en-GB", bypass_csp=bypass_csp
    )
    tab = context.new_page()
    tab.console_errors = []  # type: ignore[attr-defined]
    tab.on("console", lambda msg: msg.type == "error" and tab.console_errors.append(msg.text))
    return context, tab


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context, tab = _open(browser, DESKTOP)
    yield tab
    context.close()


@pytest.fixture(params=[PHONE, DESKTOP], ids=["360px", "1280px"])
def sized_page(browser, request):  # type: ignore[no-untyped-def]
    # axe-core is injected as an inline script, which the page's own policy rightly refuses.
    context, tab = _open(browser, request.param, bypass_csp=True)
    tab.width = request.param["width"]  # type: ignore[attr-defined]
    yield tab
    context.close()


def axe_violations(page) -> list[dict]:  # type: ignore[no-untyped-def]
    """Serious and critical axe-core violations of the page as it is now."""
    if not AXE.is_file():
        pytest.fail(f"axe-core is missing ({AXE}): run `make browser` (npm ci in tests/browser)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => JSON.stringify((await axe.run(document)).violations)")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in json.loads(result)
        if v["impact"] in ("serious", "critical")
    ]


def no_sideways_scroll(page) -> bool:  # type: ignore[no-untyped-def]
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def csp_errors(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [m for m in page.console_errors if "Content Security Policy" in m]


def first_draft(  # type: ignore[no-untyped-def]
    db, region: str, *, patient: str | None = None
) -> tuple[int, str, str]:
    with db.session() as s:
        query = (
            select(Prescription, Patient.external_ref)
            .join(Patient, Patient.id == Prescription.patient_id)
            .where(Patient.region_code == region, Prescription.status == "draft")
            .order_by(Prescription.id)
        )
        if patient is not None:
            query = query.where(Patient.external_ref == patient)
        rx, ref = s.execute(query).first()
        return rx.id, rx.reference, ref


def test_patient_searches_sends_and_watches_until_dispensed(
    page, live, live_settings, seeded, sandbox
):
    sandbox.control(auto=True, auto_delay_s=0.3, auto_skip_printed_rate=0.0)
    pid, reference, patient_ref = first_draft(seeded, "B")

    with worker_threads(live_settings, seeded):
        response = page.goto(f"{live.url}/?patient={patient_ref}")
        headers = response.headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
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
        expect(page.locator("#timeline-status")).to_have_text("Ready to collect", timeout=60_000)
        steps = page.locator("#timeline .step-status").all_inner_texts()
        assert steps == [
            "Sending to your pharmacy",
            "Sent to your pharmacy",
            "Checked and signed by your prescriber",
            "Being prepared by your pharmacy",
            "Ready to collect",
        ]
        times = page.locator("#timeline time").all_inner_texts()
        assert all(t and ("GMT" in t or "BST" in t) for t in times), times
        assert page.inner_text("#timeline-ref") == f"Prescription {reference}"
        # The patient never sees the service's vocabulary.
        timeline = page.inner_text("#timeline-card")
        for word in ("webhook", "platform reply", "Queued", "Issued"):
            assert word not in timeline
        assert csp_errors(page) == []
        page.screenshot(path=str(SCREENSHOTS / "patient-page.png"), full_page=True)


def test_patient_page_reads_plainly_fits_and_passes_axe(sized_page, live, seeded):
    page = sized_page
    pid, reference, patient_ref = first_draft(seeded, "B", patient="pt-0001")
    with seeded.session() as s:
        rx = s.get(Prescription, pid)
        medicines = [m.description for m in rx.medicines]
        prescriber = rx.prescriber.name

    page.goto(f"{live.url}/?patient={patient_ref}")
    page.wait_for_selector("#region:not([disabled])")
    item = page.locator("#prescriptions > li", has=page.locator(f"button[data-id='{pid}']"))
    item.locator(".rx-medicines").wait_for()
    text = item.inner_text()
    assert reference in text and "Not sent yet" in text
    assert all(name in text for name in medicines), text
    assert "Written on " in text
    assert f"by {prescriber}" in text
    # The region is a question a patient can answer, in places, not internal region names.
    assert page.inner_text("#region-h") == "1. Where will you collect your medicine?"
    options = page.locator("#region option").all_inner_texts()
    assert options == ["Northern Ireland", "England, Scotland or Wales"]
    assert no_sideways_scroll(page), "the page scrolls sideways"

    page.click(f"button[data-id='{pid}']")
    page.fill("#pharmacy-q", "Pharmacy")
    count = page.locator("#pharmacy-count")
    count.filter(has_text="Keep typing").wait_for()
    assert count.is_visible()
    assert count.inner_text().startswith("Showing 8 of ")
    assert no_sideways_scroll(page), "the open pharmacy list scrolls sideways"
    page.fill("#pharmacy-q", "zzzz")
    count.filter(has_text="No pharmacy matches").wait_for()

    assert axe_violations(page) == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"patient-list-{page.width}.png"), full_page=True)


def test_region_change_is_confirmed_before_it_is_saved(page, live, seeded):
    me = f"{live.url}/api/v1/me"
    patient = live.auth(role="patient", subject="pt-0002")
    page.goto(f"{live.url}/?patient=pt-0002")
    page.wait_for_selector("#region:not([disabled])")

    page.select_option("#region", "A")
    page.locator("#region-confirm").wait_for()
    assert "Northern Ireland" in page.inner_text("#region-confirm-text")
    assert (
        requests.get(me, headers=patient, timeout=10).json()["region"]["code"] == "B"
    )  # not saved yet
    page.click("#region-no")
    assert page.input_value("#region") == "B"
    assert page.locator("#region-confirm").is_hidden()

    page.select_option("#region", "A")
    page.click("#region-yes")
    page.locator("#notice.ok").wait_for()
    assert "Northern Ireland" in page.inner_text("#notice")
    assert requests.get(me, headers=patient, timeout=10).json()["region"]["code"] == "A"


def test_controlled_drug_refusal_speaks_to_the_patient(page, live, seeded):
    pid, _reference, patient_ref = first_draft(seeded, "B", patient="pt-0003")
    with seeded.session() as s:
        morphine = s.scalars(select(Medicine).where(Medicine.controlled_schedule == "2")).first()
        s.add(
            PrescriptionMedicine(
                prescription_id=pid,
                position=9,
                vpid=morphine.vpid,
                description=morphine.description,
                quantity=100,
                directions=morphine.default_directions,
            )
        )
    page.goto(f"{live.url}/?patient={patient_ref}")
    page.wait_for_selector("#region:not([disabled])")
    page.click(f"button[data-id='{pid}']")
    page.fill("#pharmacy-q", "maryleb")
    page.locator("#pharmacy-list [role=option]").first.wait_for()
    page.press("#pharmacy-q", "ArrowDown")
    page.press("#pharmacy-q", "Enter")
    page.click("#send")
    notice = page.locator("#notice")
    notice.wait_for()
    text = notice.inner_text()
    assert "contact your clinic" in text
    for prescriber_job in ("FP10PCD", "remove it", "the prescriber must", "dm+d"):
        assert prescriber_job not in text


def test_no_patient_record_gets_one_clear_message(sized_page, live):
    page = sized_page
    page.goto(f"{live.url}/?patient=pt-9999")
    notice = page.locator("#notice")
    notice.wait_for()
    text = notice.inner_text()
    assert "could not find your patient record" in text
    assert "{" not in text and "code" not in text
    assert page.locator("#region-card").is_hidden()
    assert page.locator("#rx-card").is_hidden()
    assert "Loading" not in page.inner_text("main")
    assert axe_violations(page) == []


def test_favicon_answers(live):
    resp = requests.get(f"{live.url}/favicon.ico", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] in ("image/vnd.microsoft.icon", "image/x-icon")
    assert resp.content[:4] == b"\x00\x00\x01\x00"  # an ICO header


def test_page_token_lives_15_minutes_and_is_refreshed_before_expiry(browser, live, live_settings):
    context, page = _open(browser, DESKTOP)
    try:
        page.clock.install()
        page.goto(f"{live.url}/?patient=pt-0001")
        page.wait_for_selector("#region:not([disabled])")
        first = page.get_attribute('meta[name="erx-token"]', "content")
        claims = jwt.decode(first, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] <= 15 * 60
        with page.expect_response(lambda r: "/page-token" in r.url) as refreshed:
            page.clock.run_for("12:30")  # 80% of 15 minutes: before the token expires
        assert refreshed.value.status == 200
        served = refreshed.value.json()["token"]
        assert served != first  # each token has its own jti, even within one second
        wait_until(
            lambda: page.get_attribute('meta[name="erx-token"]', "content") == served, timeout_s=5
        )
        fresh = page.get_attribute('meta[name="erx-token"]', "content")
        assert (
            jwt.decode(
                fresh,
                live_settings.jwt_secret,
                algorithms=["HS256"],
                audience=live_settings.jwt_audience,
            )["sub"]
            == "pt-0001"
        )
    finally:
        context.close()


def _send_and_wait_issued(  # type: ignore[no-untyped-def]
    live, seeded, patient_ref: str, pid: int
) -> None:
    patient = live.auth(role="patient", subject=patient_ref)
    pharmacies = requests.get(
        f"{live.url}/api/v1/pharmacies",
        params={"q": "Marylebone", "region": "B"},
        headers=patient,
        timeout=10,
    ).json()["items"]
    resp = requests.post(
        f"{live.url}/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": pharmacies[0]["id"]},
        headers=patient,
        timeout=10,
    )
    assert resp.status_code == 202, resp.text
    wait_until(
        lambda: (
            requests.get(
                f"{live.url}/api/v1/prescriptions/{pid}", headers=patient, timeout=10
            ).json()["status"]
            == "issued"
        ),
        timeout_s=30,
    )


def test_support_finds_by_reference_checks_and_voids(page, live, live_settings, seeded, sandbox):
    pid, reference, patient_ref = first_draft(seeded, "B")
    with seeded.session() as s:
        rx = s.get(Prescription, pid)
        patient_name = f"{rx.patient.first_name} {rx.patient.last_name}"
        medicines = [m.description for m in rx.medicines]
        prescriber = rx.prescriber.name

    with worker_threads(live_settings, seeded):
        _send_and_wait_issued(live, seeded, patient_ref, pid)
        page.goto(f"{live.url}/support")
        page.fill("#rx-id", reference)  # the reference the pharmacy quotes, not our id
        page.click("#find button[type=submit]")
        page.wait_for_selector("#detail:not([hidden])")
        assert page.inner_text("#detail-token").startswith("SRX")
        assert all(name in page.inner_text("#detail-medicines") for name in medicines)
        assert "Marylebone" in page.inner_text("#detail-pharmacy")
        assert patient_name in page.inner_text("#detail-patient")
        assert prescriber in page.inner_text("#detail-prescriber")
        assert page.locator("#void-why").is_hidden()
        page.fill("#void-reason", "Prescribed in error")
        page.click("#void-button")
        expect(page.locator("#detail-status")).to_have_text("Voided", timeout=30_000)
        assert f"{reference} was voided." in page.inner_text("#notice")
        # A final status: no form, and the reason it cannot be voided.
        assert page.locator("#void").is_hidden()
        assert page.inner_text("#void-why") == "It is already voided."
        history = page.inner_text("#timeline")
        assert "Reason: Prescribed in error" in history
        assert "by support:support-dev" in history  # who voided: the page's support user
        assert csp_errors(page) == []
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "support-page.png"), full_page=True)


def test_support_says_when_nothing_matches(page, live):
    page.goto(f"{live.url}/support")
    page.fill("#rx-id", "999999")
    page.click("#find button[type=submit]")
    notice = page.locator("#notice")
    notice.wait_for()
    assert "No prescription matches 999999" in notice.inner_text()


def test_support_page_fits_and_passes_axe(sized_page, live, seeded):
    page = sized_page
    pid, reference, _patient_ref = first_draft(seeded, "B")
    page.goto(f"{live.url}/support?id={pid}")
    page.wait_for_selector("#detail:not([hidden])")
    assert page.inner_text("#detail-ref") == reference
    assert page.locator("#void").is_visible()
    assert no_sideways_scroll(page), "the support page scrolls sideways"
    assert axe_violations(page) == []


def test_support_finds_by_platform_token(page, live, live_settings, seeded, sandbox):
    pid, reference, patient_ref = first_draft(seeded, "B")
    with worker_threads(live_settings, seeded):
        _send_and_wait_issued(live, seeded, patient_ref, pid)
    with seeded.session() as s:
        token = s.get(Prescription, pid).platform_token
    page.goto(f"{live.url}/support")
    page.fill("#rx-id", token)
    page.click("#find button[type=submit]")
    expect(page.locator("#detail-ref")).to_have_text(reference)
    page.fill("#rx-id", "rx-999999")
    page.click("#find button[type=submit]")
    expect(page.locator("#notice")).to_contain_text("No prescription has the reference rx-999999")
    assert page.locator("#detail").is_hidden()
