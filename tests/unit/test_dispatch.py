"""The dispatch worker against a fake platform (``responses``) and the real database.

Prescriptions are queued through the API, then ``Dispatcher.run_batch`` runs
with an injected clock and ``rand`` so that backoff is exact and nothing sleeps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from pypdf import PdfReader
from sqlalchemy import select, update

from app.foundation.config import Settings
from app.foundation.db import Database
from app.foundation.models import (
    DispatchOutbox,
    Patient,
    Pharmacy,
    Prescription,
    StatusHistory,
)
from app.mechanisms.circuit_breaker import BreakerState
from app.services.dispatch import Dispatcher
from connector import ConnectorClient, ConnectorSettings
from tests.conftest import bearer
from tests.support import (
    BASE,
    CLIENT_ID,
    CLIENT_SECRET,
    INVALID_DATA,
    PRESCRIBER_SECRETS,
    RX_URL,
    UNAUTHORIZED_CLINIC,
    FakeClock,
    FakePlatform,
    claimed_ids,
    service_platform,
)

# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def platform(rsps: responses.RequestsMock) -> FakePlatform:
    return service_platform(rsps)


@pytest.fixture
def erx() -> Iterator[ConnectorClient]:
    with ConnectorClient(
        ConnectorSettings(base_url=BASE, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    ) as c:
        yield c


@pytest.fixture
def clock() -> FakeClock:
    # Ahead of the wall clock so that rows queued through the API are due at once.
    return FakeClock(datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10))


@pytest.fixture
def make_dispatcher(seeded: Database, settings: Settings, erx: ConnectorClient, clock: FakeClock):  # type: ignore[no-untyped-def]
    def build(worker_id: str = "w1", **overrides: Any) -> Dispatcher:
        return Dispatcher(
            seeded,
            settings.with_overrides(**overrides) if overrides else settings,
            erx,
            worker_id=worker_id,
            now=clock,
            rand=lambda: 0.5,
        )

    return build


# -- helpers --------------------------------------------------------------------


def rx_id(db: Database, reference: str) -> int:
    with db.session() as session:
        value = session.scalar(select(Prescription.id).where(Prescription.reference == reference))
    assert value is not None
    return value


def pharmacy_id(db: Database, *, branch_id: int | None = None, email: str | None = None) -> int:
    with db.session() as session:
        query = select(Pharmacy.id)
        query = (
            query.where(Pharmacy.branch_id == branch_id)
            if branch_id
            else query.where(Pharmacy.email == email)
        )
        value = session.scalar(query)
    assert value is not None
    return value


def service_auth(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A service caller's header: sends any prescription and sees its platform token."""
    return bearer(client.application, role="service", subject="svc-tests")


def queue(
    client, db: Database, reference: str, *, branch_id: int = 17, email: str | None = None
) -> int:  # type: ignore[no-untyped-def]
    pid = rx_id(db, reference)
    target = pharmacy_id(db, email=email) if email else pharmacy_id(db, branch_id=branch_id)
    resp = client.post(
        f"/api/v1/prescriptions/{pid}/send",
        json={"pharmacy_id": target},
        headers=service_auth(client),
    )
    assert resp.status_code == 202, resp.get_data(as_text=True)
    return pid


def outbox_of(db: Database, pid: int) -> DispatchOutbox:
    with db.session() as session:
        return session.scalars(
            select(DispatchOutbox).where(DispatchOutbox.prescription_id == pid)
        ).one()


def prescription(db: Database, pid: int) -> Prescription:
    with db.session() as session:
        rx = session.get(Prescription, pid)
        assert rx is not None
        return rx


def history(db: Database, pid: int) -> list[tuple[str | None, str, str]]:
    with db.session() as session:
        rows = session.scalars(
            select(StatusHistory)
            .where(StatusHistory.prescription_id == pid)
            .order_by(StatusHistory.id)
        )
        return [(h.from_status, h.to_status, h.source) for h in rows]


def view(client, pid: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    resp = client.get(f"/api/v1/prescriptions/{pid}", headers=service_auth(client))
    assert resp.status_code == 200
    return resp.get_json()


def posts_for(platform: FakePlatform, reference: str) -> int:
    return sum(1 for p in platform.posts if p.get("client_ref_id") == reference)


# -- success --------------------------------------------------------------------


def test_success_issues_stores_token_and_history(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")

    handled = make_dispatcher().run_batch()

    assert handled == 1
    rx = prescription(seeded, pid)
    assert rx.status == "issued"
    assert rx.platform_token == "SRXTOKEN000001"
    assert history(seeded, pid) == [("draft", "queued", "service"), ("queued", "issued", "api")]
    row = outbox_of(seeded, pid)
    assert (row.state, row.attempts, row.outcome_unknown, row.locked_by) == ("done", 1, False, None)
    assert platform.lookups == []  # first attempt: nothing to look up
    body = view(client, pid)
    assert body["status"] == "issued"
    assert body["platform_token"] == "SRXTOKEN000001"
    assert body["dispatch"]["state"] == "done"
    assert make_dispatcher().run_batch() == 0  # done rows are never sent again
    assert len(platform.posts) == 1


def test_issue_payload_uses_internal_clinic_id_branch_id_and_reference(
    client, seeded, with_credentials, platform, make_dispatcher
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001", branch_id=101)
    with seeded.session() as session:
        rx = session.get(Prescription, pid)
        assert rx is not None
        patient = rx.patient
        prescriber_email = rx.prescriber.email
        lines = [(m.vpid, str(m.quantity)) for m in rx.medicines]

    make_dispatcher().run_batch()

    (payload,) = platform.posts
    assert payload["action"] == "issueToContact"
    assert payload["clinic_id"] == 994  # the internal id, never the display id 201334
    assert payload["contact_id"] == 101
    assert payload["client_ref_id"] == "rx-000001"
    assert payload["secure_pin"] == PRESCRIBER_SECRETS[prescriber_email][1]
    assert payload["patient"]["first_name"] == patient.first_name
    birth = (
        payload["patient"]["birth_day"],
        payload["patient"]["birth_month"],
        payload["patient"]["birth_year"],
    )
    assert birth == ("07", "03", "1984")
    assert payload["patient"]["phone"] == "447700900123"
    assert [(m["vpid"], m["qty"]) for m in payload["medicines"]] == lines


# -- business rejections (HTTP 200, success:false) ----------------------------------


@pytest.mark.parametrize(
    ("answer", "errors"),
    [(INVALID_DATA, INVALID_DATA["errors"]), (UNAUTHORIZED_CLINIC, {})],
    ids=["validation", "unauthorized-clinic"],
)
def test_business_rejection_is_final_and_visible(
    client, seeded, with_credentials, platform, make_dispatcher, clock, answer, errors
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    platform.post_script = [(200, {}, answer)]

    make_dispatcher().run_batch()

    rx = prescription(seeded, pid)
    assert rx.status == "rejected"
    assert rx.platform_token is None
    row = outbox_of(seeded, pid)
    assert (row.state, row.outcome_unknown) == ("done", False)
    body = view(client, pid)
    assert body["status"] == "rejected"
    assert body["rejection"] == {"message": answer["message"], "errors": errors}
    assert body["history"][-1]["to"] == "rejected"
    assert body["history"][-1]["source"] == "api"

    clock.advance(3600)
    assert make_dispatcher().run_batch() == 0
    assert len(platform.posts) == 1  # never retried
    assert platform.lookups == []


def test_rejected_prescription_can_be_corrected_and_sent_again(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    platform.post_script = [(200, {}, UNAUTHORIZED_CLINIC)]
    make_dispatcher().run_batch()
    assert prescription(seeded, pid).status == "rejected"

    queue(client, seeded, "rx-000001", branch_id=101)
    clock.advance(1)
    make_dispatcher().run_batch()

    assert prescription(seeded, pid).status == "issued"
    assert view(client, pid)["rejection"] is None
    assert len(platform.posts) == 2
    assert platform.lookups == []  # a definite "no" leaves nothing to look up


# -- unknown outcomes: 500 and timeouts -------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        (500, {}, {"success": False, "message": "Server Error"}),
        (502, {}, "<html>bad gateway</html>"),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ConnectionError("connection reset by peer"),
    ],
    ids=["500", "502", "read-timeout", "reset"],
)
def test_unknown_outcome_is_rescheduled_with_backoff(
    client, seeded, with_credentials, platform, make_dispatcher, clock, failure
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    platform.post_script = [failure]
    dispatcher = make_dispatcher(dispatch_backoff_base_s=2.0, dispatch_backoff_cap_s=300.0)
    now = clock()

    dispatcher.run_batch()

    row = outbox_of(seeded, pid)
    assert row.state == "pending"
    assert row.attempts == 1
    assert row.outcome_unknown is True
    assert row.locked_by is None and row.locked_until is None
    # Full jitter with rand=0.5 for the first retry (retry number 0): 0.5 * min(cap, base * 2**0).
    assert row.next_attempt_at == now + timedelta(seconds=0.5 * min(300.0, 2.0 * 2**0))
    rx = prescription(seeded, pid)
    assert rx.status == "queued"
    assert rx.platform_token is None
    assert view(client, pid)["dispatch"]["attempts"] == 1

    assert dispatcher.run_batch() == 0  # not due yet
    assert len(platform.posts) == 1


def test_after_unknown_outcome_the_platform_token_is_adopted_without_a_second_post(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    platform.post_script = [(500, {}, {"success": False})]
    dispatcher = make_dispatcher()
    dispatcher.run_batch()
    # The platform had committed before failing.
    platform.holds("rx-000001", "SRXCOMMITTED1")

    clock.advance(60)
    dispatcher.run_batch()

    assert platform.lookups == ["rx-000001"]
    assert posts_for(platform, "rx-000001") == 1
    rx = prescription(seeded, pid)
    assert rx.status == "issued"
    assert rx.platform_token == "SRXCOMMITTED1"
    row = outbox_of(seeded, pid)
    assert (row.state, row.attempts, row.outcome_unknown) == ("done", 2, False)
    assert history(seeded, pid)[-1] == ("queued", "issued", "api")


def test_after_read_timeout_an_empty_lookup_leads_to_one_new_post(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    platform.post_script = [requests.exceptions.ReadTimeout("read timed out")]
    dispatcher = make_dispatcher()
    dispatcher.run_batch()

    clock.advance(60)
    dispatcher.run_batch()

    assert platform.lookups == ["rx-000001"]
    assert posts_for(platform, "rx-000001") == 2
    rx = prescription(seeded, pid)
    assert rx.status == "issued"
    assert rx.platform_token == "SRXTOKEN000001"
    assert outbox_of(seeded, pid).outcome_unknown is False


def test_rate_limit_honours_retry_after_and_needs_no_lookup(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    platform.post_script = [
        (429, {"Retry-After": "30"}, {"success": False, "message": "Too many requests"})
    ]
    dispatcher = make_dispatcher()
    now = clock()

    dispatcher.run_batch()

    row = outbox_of(seeded, pid)
    assert row.state == "pending"
    assert row.attempts == 1
    assert row.next_attempt_at >= now + timedelta(seconds=30)
    assert row.outcome_unknown is False  # a 429 was not processed
    clock.advance(29)
    assert dispatcher.run_batch() == 0  # still waiting as the platform asked

    clock.advance(2)
    dispatcher.run_batch()
    assert prescription(seeded, pid).status == "issued"
    assert platform.lookups == []
    assert len(platform.posts) == 2


# -- dead letters and the operator CLI ---------------------------------------------


def test_max_attempts_dead_letters_and_cli_lists_and_requeues(
    app, client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000002")
    platform.post_script = [(500, {}, {"success": False})] * 3
    dispatcher = make_dispatcher(dispatch_max_attempts=3, breaker_fail_max=100)

    states = []
    for _ in range(3):
        dispatcher.run_batch()
        states.append(outbox_of(seeded, pid).state)
        clock.advance(60)

    assert states == ["pending", "pending", "dead"]
    row = outbox_of(seeded, pid)
    assert row.attempts == 3
    assert prescription(seeded, pid).status == "dead"
    assert history(seeded, pid)[-1] == ("queued", "dead", "service")
    assert view(client, pid)["dispatch"]["state"] == "dead"
    assert dispatcher.run_batch() == 0
    assert len(platform.posts) == 3
    assert platform.lookups == ["rx-000002", "rx-000002"]  # before each resend

    runner = app.test_cli_runner()
    listed = runner.invoke(args=["outbox", "list-dead"])
    assert listed.exit_code == 0, listed.output
    assert f"outbox_id={row.id}" in listed.output
    assert "reference=rx-000002" in listed.output
    as_json = runner.invoke(args=["outbox", "list-dead", "--json"])
    items = json.loads(as_json.output)  # one JSON document
    assert [(i["outbox_id"], i["prescription_id"], i["attempts"]) for i in items] == [
        (row.id, pid, 3)
    ]

    requeued = runner.invoke(args=["outbox", "requeue", str(row.id)])
    assert requeued.exit_code == 0, requeued.output
    row = outbox_of(seeded, pid)
    assert (row.state, row.attempts, row.locked_by) == ("pending", 0, None)
    assert row.outcome_unknown is True  # a lookup still comes first
    assert prescription(seeded, pid).status == "queued"
    assert history(seeded, pid)[-1] == ("dead", "queued", "operator")
    assert "no dead letters" in runner.invoke(args=["outbox", "list-dead"]).output

    # The platform had one after all: the requeued row adopts it, no new POST.
    platform.holds("rx-000002", "SRXLATE")
    dispatcher.run_batch()
    assert prescription(seeded, pid).platform_token == "SRXLATE"
    assert len(platform.posts) == 3


def test_requeue_refuses_a_row_that_is_not_dead(app, client, seeded, with_credentials) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    row = outbox_of(seeded, pid)

    result = app.test_cli_runner().invoke(args=["outbox", "requeue", str(row.id)])

    assert result.exit_code != 0
    assert outbox_of(seeded, pid).state == "pending"


# -- circuit breaker -----------------------------------------------------------------


def test_open_breaker_reschedules_without_calling_the_platform(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pids = [queue(client, seeded, ref) for ref in ("rx-000001", "rx-000002", "rx-000003")]
    platform.post_script = [(503, {}, {"success": False})] * 5
    dispatcher = make_dispatcher(breaker_fail_max=2, breaker_reset_s=30.0)
    now = clock()

    assert dispatcher.run_batch() == 3

    assert dispatcher.breaker.state is BreakerState.OPEN
    assert len(platform.posts) == 2  # the third row never reached the platform
    third = outbox_of(seeded, pids[2])
    assert third.state == "pending"
    assert third.attempts == 0  # not counted
    assert third.last_error == "circuit_open"
    assert third.outcome_unknown is False
    assert third.locked_by is None
    assert now < third.next_attempt_at <= now + timedelta(seconds=30)
    first = outbox_of(seeded, pids[0])
    assert (first.attempts, first.outcome_unknown) == (1, True)

    # Still open: the next due row is postponed again without a call.
    clock.advance(60)
    dispatcher.run_batch()
    assert len(platform.posts) == 2
    assert all(outbox_of(seeded, p).state == "pending" for p in pids)


def test_failure_that_trips_the_breaker_still_counts_and_stays_unknown(
    client, seeded, with_credentials, platform, make_dispatcher
) -> None:  # type: ignore[no-untyped-def]
    """The POST that trips the breaker was sent and got a 5xx: its outcome is unknown."""
    pids = [queue(client, seeded, ref) for ref in ("rx-000001", "rx-000002")]
    platform.post_script = [(500, {}, {"success": False})] * 2
    dispatcher = make_dispatcher(breaker_fail_max=2)

    dispatcher.run_batch()

    assert len(platform.posts) == 2
    second = outbox_of(seeded, pids[1])
    assert second.attempts == 1
    # If this is False the next attempt re-POSTs without a lookup: a duplicate prescription.
    assert second.outcome_unknown is True


def test_breaker_lets_a_trial_call_through_once_its_reset_timeout_has_passed(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    # breaker_reset_s=0: the reset timeout has always passed, so no sleeping is needed.
    pid = queue(client, seeded, "rx-000001")
    platform.post_script = [(503, {}, {"success": False})]
    dispatcher = make_dispatcher(breaker_fail_max=1, breaker_reset_s=0.0)
    dispatcher.run_batch()
    assert dispatcher.breaker.state is BreakerState.OPEN
    calls_while_open = len(platform.posts) + len(platform.lookups)

    for _ in range(3):
        clock.advance(60)
        dispatcher.run_batch()

    # Half-open lets one trial call through; it succeeds and the breaker closes.
    assert len(platform.posts) + len(platform.lookups) > calls_while_open
    assert prescription(seeded, pid).status == "issued"
    assert dispatcher.breaker.state is BreakerState.CLOSED


def test_rejections_do_not_open_the_breaker(
    client, seeded, with_credentials, platform, make_dispatcher
) -> None:  # type: ignore[no-untyped-def]
    pids = [queue(client, seeded, ref) for ref in ("rx-000001", "rx-000002", "rx-000003")]
    platform.post_script = [(200, {}, UNAUTHORIZED_CLINIC)] * 2
    dispatcher = make_dispatcher(breaker_fail_max=2)

    dispatcher.run_batch()

    assert dispatcher.breaker.state is BreakerState.CLOSED
    assert [prescription(seeded, p).status for p in pids] == ["rejected", "rejected", "issued"]


# -- Region A: email flow ----------------------------------------------------------------


def test_region_a_prescription_is_emailed_to_the_pharmacy(
    client, seeded, settings, platform, rsps, make_dispatcher
) -> None:  # type: ignore[no-untyped-def]
    pharmacy_email = "ards@pharmacy-a.example.test"
    pid = queue(client, seeded, "rx-000017", email=pharmacy_email)

    make_dispatcher().run_batch()

    rx = prescription(seeded, pid)
    assert rx.status == "emailed"
    assert rx.platform_token is None
    assert history(seeded, pid) == [
        ("draft", "queued", "service"),
        ("queued", "emailed", "service"),
    ]
    assert outbox_of(seeded, pid).state == "done"
    files = list(Path(settings.mail_dir).glob("*.eml"))
    assert [f.name for f in files] == ["rx-000017.eml"]
    message = BytesParser(policy=policy.default).parsebytes(files[0].read_bytes())
    assert message["To"] == pharmacy_email
    assert "rx-000017" in message["Subject"]
    with seeded.session() as session:
        patient = session.get(Patient, rx.patient_id)
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    pdf_text = "".join(
        page.extract_text() for page in PdfReader(BytesIO(attachment.get_content())).pages
    )
    assert patient is not None and patient.last_name in pdf_text
    assert len(rsps.calls) == 0  # no platform involved


def test_email_failure_is_retried(
    client, seeded, settings, platform, make_dispatcher, clock, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    pid = queue(client, seeded, "rx-000017", email="ards@pharmacy-a.example.test")

    make_dispatcher(mail_dir=str(blocker / "mail")).run_batch()

    row = outbox_of(seeded, pid)
    assert (row.state, row.attempts) == ("pending", 1)
    assert prescription(seeded, pid).status == "queued"


# -- payload problems are rejections, not retries -------------------------------------


def test_pharmacy_that_lost_its_branch_id_is_rejected_without_a_call(
    client, seeded, with_credentials, platform, make_dispatcher
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    with seeded.session() as session:
        session.execute(update(Pharmacy).where(Pharmacy.branch_id == 17).values(branch_id=None))

    make_dispatcher().run_batch()

    assert prescription(seeded, pid).status == "rejected"
    assert outbox_of(seeded, pid).state == "done"
    assert platform.posts == []


def test_unbuildable_patient_details_are_rejected_not_retried(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    with seeded.session() as session:
        patient_id = session.get(Prescription, pid).patient_id  # type: ignore[union-attr]
        session.execute(
            update(Patient).where(Patient.id == patient_id).values(phone="call the surgery")
        )

    make_dispatcher().run_batch()

    assert platform.posts == []
    assert prescription(seeded, pid).status == "rejected"
    body = view(client, pid)
    assert "patient.phone" in body["rejection"]["errors"]
    assert outbox_of(seeded, pid).state == "done"


# -- leases ----------------------------------------------------------------------------


def test_row_taken_over_by_another_worker_is_not_written(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    dispatcher = make_dispatcher("w1")
    (outbox_id,) = claimed_ids(
        seeded, DispatchOutbox, worker_id="w1", now=clock(), lease_s=120, limit=10
    )
    taken_until = clock() + timedelta(minutes=10)

    def lease_expires_and_w2_takes_over() -> None:
        with seeded.session() as session:
            session.execute(
                update(DispatchOutbox)
                .where(DispatchOutbox.id == outbox_id)
                .values(locked_by="w2", locked_until=taken_until)
            )

    platform.on_post = lease_expires_and_w2_takes_over

    assert dispatcher.process(outbox_id) == "lost_lease"

    row = outbox_of(seeded, pid)
    assert row.locked_by == "w2"
    assert row.locked_until == taken_until
    assert row.state == "pending"
    assert row.outcome_unknown is True  # w2 will look the reference up first
    rx = prescription(seeded, pid)
    assert rx.status == "queued"
    assert rx.platform_token is None
    assert history(seeded, pid) == [("draft", "queued", "service")]


def test_process_skips_a_row_leased_to_someone_else(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    (outbox_id,) = claimed_ids(
        seeded, DispatchOutbox, worker_id="w2", now=clock(), lease_s=120, limit=10
    )

    assert make_dispatcher("w1").process(outbox_id) == "skipped"

    assert platform.posts == []
    assert outbox_of(seeded, pid).attempts == 0


def test_stop_request_releases_unstarted_rows(
    client, seeded, with_credentials, platform, make_dispatcher
) -> None:  # type: ignore[no-untyped-def]
    pids = [queue(client, seeded, ref) for ref in ("rx-000001", "rx-000002", "rx-000003")]
    calls = iter([False, True, True])

    handled = make_dispatcher().run_batch(should_stop=lambda: next(calls))

    assert handled == 1
    assert [prescription(seeded, p).status for p in pids] == ["issued", "queued", "queued"]
    assert [outbox_of(seeded, p).locked_by for p in pids[1:]] == [None, None]


# -- logs -----------------------------------------------------------------------------


def test_logs_carry_no_secret_token_or_patient_detail(
    client, seeded, with_credentials, platform, make_dispatcher, clock, caplog
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    refs = ("rx-000001", "rx-000002", "rx-000003")
    pids = [queue(client, seeded, ref) for ref in refs]
    queue(client, seeded, "rx-000017", email="ards@pharmacy-a.example.test")
    platform.post_script = [
        requests.exceptions.ReadTimeout("read timed out"),
        (200, {}, INVALID_DATA),
        (429, {"Retry-After": "1"}, {"success": False}),
    ]
    dispatcher = make_dispatcher()
    dispatcher.run_batch()
    platform.holds("rx-000001", "SRXADOPTEDTOKEN")
    clock.advance(120)
    dispatcher.run_batch()
    assert [prescription(seeded, p).status for p in pids] == ["issued", "rejected", "issued"]
    assert caplog.records, "the worker logs what it does"

    forbidden = {
        *platform.issued_access,
        *platform.issued_sessions,
        CLIENT_SECRET,
        "SRXADOPTEDTOKEN",
        "SRXTOKEN000001",
    }
    for password, pin in PRESCRIBER_SECRETS.values():
        forbidden |= {password, pin}
    with seeded.session() as session:
        for pid in [*pids, rx_id(seeded, "rx-000017")]:
            patient = session.get(Patient, session.get(Prescription, pid).patient_id)  # type: ignore[union-attr]
            assert patient is not None
            forbidden |= {
                patient.first_name,
                patient.last_name,
                patient.email or "",
                patient.phone or "",
                patient.date_of_birth.isoformat(),
                patient.address_line1,
            }
    text = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    leaked = sorted(s for s in forbidden if s and s in text)
    assert leaked == []


# -- hardening found in review ----------------------------------------------------


def test_a_refused_lookup_is_retried_never_recorded_as_rejected(
    client, seeded, with_credentials, platform, rsps, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    platform.post_script = [requests.exceptions.ReadTimeout("lost reply")]
    dispatcher = make_dispatcher()
    dispatcher.run_batch()
    assert outbox_of(seeded, pid).outcome_unknown is True

    # The lookup itself is answered with a business "no": we still don't know.
    rsps.replace(responses.GET, RX_URL, json={"success": False, "message": "Lookup unavailable"})
    clock.advance(600)
    dispatcher.run_batch()

    row = outbox_of(seeded, pid)
    assert row.state == "pending" and row.outcome_unknown is True
    assert prescription(seeded, pid).status == "queued"
    assert len(platform.posts) == 1  # no second POST while the outcome is unknown


def test_a_rejection_before_sending_keeps_an_earlier_unknown_outcome(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    platform.post_script = [requests.exceptions.ReadTimeout("lost reply")]
    dispatcher = make_dispatcher()
    dispatcher.run_batch()
    # Before the next attempt somebody breaks the patient's phone number.
    with seeded.session() as s:
        rx = s.get(Prescription, pid)
        s.execute(update(Patient).where(Patient.id == rx.patient_id).values(phone="call me maybe"))
    clock.advance(600)
    dispatcher.run_batch()

    assert prescription(seeded, pid).status == "rejected"
    # The first POST may have created a prescription: a resend must still look it up first.
    assert outbox_of(seeded, pid).outcome_unknown is True


def test_webhooks_that_beat_the_token_are_applied_once_it_is_stored(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    from app.foundation.db import utcnow
    from app.foundation.models import WebhookInbox
    from webhooks.processing import InboxProcessor

    pid = queue(client, seeded, "rx-000001")
    token = "SRXTOKEN000001"  # what the fake platform will answer first
    body = json.dumps(
        {
            "id": "evt_early",
            "type": "prescription.status_updated",
            "created": "2026-11-20T10:15:09Z",
            "data": {
                "prescription": {
                    "id": token,
                    "client_ref_id": "rx-000001",
                    "status": "signed",
                    "previous_status": "issued",
                    "occurred_at": "2026-11-20T10:15:08Z",
                }
            },
        }
    )
    now = utcnow()
    with seeded.session() as s:
        s.add(
            WebhookInbox(
                event_id="evt_early",
                event_type="prescription.status_updated",
                platform_token=token,
                body=body.encode(),
                state="dead",
                attempts=8,
                next_attempt_at=now,
                received_at=now,
                last_error="unknown_prescription",
                awaiting_prescription=True,
            )
        )
    make_dispatcher().run_batch()
    assert prescription(seeded, pid).platform_token == token

    InboxProcessor(seeded, worker_id="w1", now=clock, rand=lambda: 0.5).run_batch()
    assert prescription(seeded, pid).status == "signed"
    assert ("issued", "signed", "webhook") in history(seeded, pid)


def test_each_row_gets_a_fresh_lease_when_its_attempt_starts(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    pid = queue(client, seeded, "rx-000001")
    leases: list[datetime | None] = []
    platform.on_post = lambda: leases.append(outbox_of(seeded, pid).locked_until)
    dispatcher = make_dispatcher()
    claimed_at = clock()
    ids = claimed_ids(seeded, DispatchOutbox, worker_id="w1", now=claimed_at, lease_s=120, limit=10)
    clock.advance(100)  # the batch's lease is nearly over when this row's turn comes
    dispatcher.process(ids[0])
    assert leases and leases[0] == claimed_at + timedelta(seconds=100 + dispatcher.settings.lease_s)
