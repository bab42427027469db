"""Applying stored webhook events: history, forward-only status, retries, replay (§6, §7).

Events enter through the real receiver (signed with the real signing function)
and are applied by :class:`InboxProcessor` with an injected clock and random
source, so backoff is checked without sleeping.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.foundation.db import Database, utcnow
from app.foundation.models import Prescription, StatusHistory, WebhookInbox
from app.services.prescriptions import prescription_view
from tests.support import FakeClock
from webhooks.processing import InboxProcessor
from webhooks.signature import sign

PATH = "/webhooks/platform"
SECRET = "whsec_sandbox_test_secret"
SIGNED_AT = 1_763_634_902
TOKEN = "SRXPROC0000001"
REFERENCE = "rx-000001"  # patient pt-0001, Region B (scripts/seed/002)
FINALS = ("dispensed", "expired", "voided")


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 20, hour, minute, 0, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def event_body(
    event_id: str,
    status: str,
    *,
    previous: str | None = None,
    occurred: datetime | None = None,
    token: str = TOKEN,
    event_type: str = "prescription.status_updated",
    **prescription_extra: Any,
) -> bytes:
    prescription: dict[str, Any] = {
        "id": token,
        "client_ref_id": REFERENCE,
        "status": status,
        "previous_status": previous,
        "occurred_at": iso(occurred or at(10)),
        **prescription_extra,
    }
    body = {
        "id": event_id,
        "type": event_type,
        "created": iso(occurred or at(10)),
        "data": {"prescription": prescription},
    }
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.fixture
def rx(seeded: Database) -> int:
    """A seeded Region B prescription put into ``issued`` with a known token; returns its id."""
    return issue(seeded, REFERENCE, TOKEN)


def issue(db: Database, reference: str, token: str) -> int:
    with db.session() as session:
        prescription = session.scalars(
            select(Prescription).where(Prescription.reference == reference)
        ).one()
        assert prescription.patient.region_code == "B"
        prescription.platform_token, prescription.status = token, "issued"
        return prescription.id


@pytest.fixture
def deliver(app, client):  # type: ignore[no-untyped-def]
    """POST a raw body signed with the real signing function; asserts it was acknowledged."""
    app.extensions["erx"].unix_time = lambda: float(SIGNED_AT)

    def _deliver(body: bytes) -> dict[str, Any]:
        header = sign(body, [SECRET], timestamp=SIGNED_AT)
        response = client.post(
            PATH, data=body, headers={"X-Signature": header}, content_type="application/json"
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    return _deliver


@pytest.fixture
def clock() -> FakeClock:
    # A minute ahead so that freshly received rows are due.
    return FakeClock(utcnow() + timedelta(minutes=1))


@pytest.fixture
def processor(seeded: Database, clock: FakeClock) -> InboxProcessor:
    return InboxProcessor(seeded, worker_id="w-test", now=clock, rand=lambda: 0.5)


def status_of(db: Database, prescription_id: int) -> str:
    with db.session() as session:
        prescription = session.get(Prescription, prescription_id)
        assert prescription is not None
        return prescription.status


def history(db: Database, prescription_id: int | None = None) -> list[StatusHistory]:
    query = select(StatusHistory).order_by(StatusHistory.id)
    if prescription_id is not None:
        query = query.where(StatusHistory.prescription_id == prescription_id)
    with db.session() as session:
        return list(session.scalars(query))


def inbox_row(db: Database, event_id: str) -> WebhookInbox:
    with db.session() as session:
        row = session.scalars(select(WebhookInbox).where(WebhookInbox.event_id == event_id)).one()
        return row


# --- applying an event -----------------------------------------------------------------


def test_signed_event_appends_history_from_webhook_and_moves_status(
    seeded, rx, deliver, processor, clock
) -> None:  # type: ignore[no-untyped-def]
    before = utcnow()
    deliver(event_body("evt_p_signed", "signed", previous="issued", occurred=at(10, 15)))
    after = utcnow()
    assert status_of(seeded, rx) == "issued"  # the receiver never processes

    assert processor.run_batch() == 1

    rows = history(seeded, rx)
    assert len(rows) == 1
    row = rows[0]
    assert (row.from_status, row.to_status, row.source, row.event_id) == (
        "issued",
        "signed",
        "webhook",
        "evt_p_signed",
    )
    assert row.occurred_at == at(10, 15)  # the platform's time, from the event
    stored = inbox_row(seeded, "evt_p_signed")
    assert row.received_at == stored.received_at  # our time, when the receiver stored it
    assert before <= row.received_at <= after
    assert status_of(seeded, rx) == "signed"
    assert stored.state == "processed"
    assert stored.processed_at == clock.now
    assert stored.locked_by is None and stored.locked_until is None
    assert stored.last_error is None


def test_occurred_at_with_an_offset_is_stored_as_utc(seeded, rx, deliver, processor) -> None:  # type: ignore[no-untyped-def]
    body = event_body("evt_offset", "signed", previous="issued").replace(
        b'"occurred_at":"2026-11-20T10:00:00Z"', b'"occurred_at":"2026-11-20T11:15:08+01:00"'
    )
    assert b"+01:00" in body
    deliver(body)
    assert processor.run_batch() == 1
    [row] = history(seeded, rx)
    assert row.occurred_at == datetime(2026, 11, 20, 10, 15, 8, tzinfo=UTC)
    assert prescription_view(seeded, rx)["history"][0]["occurred_at"] == "2026-11-20T10:15:08Z"


def test_lifecycle_in_order_moves_forward_step_by_step(seeded, rx, deliver, processor) -> None:  # type: ignore[no-untyped-def]
    steps = [
        ("signed", "issued", at(10)),
        ("printed", "signed", at(11)),
        ("dispensed", "printed", at(12)),
    ]
    for n, (status, previous, occurred) in enumerate(steps):
        deliver(event_body(f"evt_order_{n}", status, previous=previous, occurred=occurred))
        assert processor.run_batch() == 1
        assert status_of(seeded, rx) == status
    assert [h.to_status for h in history(seeded, rx)] == ["signed", "printed", "dispensed"]


def test_out_of_order_dispensed_then_signed_keeps_dispensed_and_records_late_signed(
    seeded, rx, deliver, processor
) -> None:  # type: ignore[no-untyped-def]
    deliver(event_body("evt_ooo_dispensed", "dispensed", previous="signed", occurred=at(12)))
    assert processor.run_batch() == 1
    deliver(event_body("evt_ooo_signed", "signed", previous="issued", occurred=at(10)))
    assert processor.run_batch() == 1

    assert status_of(seeded, rx) == "dispensed"
    assert inbox_row(seeded, "evt_ooo_signed").state == "processed"
    stored = history(seeded, rx)
    assert [h.to_status for h in stored] == ["dispensed", "signed"]  # insertion order: arrival

    view = prescription_view(seeded, rx)
    assert view["status"] == "dispensed"
    timeline = view["history"]
    assert [h["to"] for h in timeline] == ["signed", "dispensed"]  # by occurred_at
    assert [h["occurred_at"] for h in timeline] == ["2026-11-20T10:00:00Z", "2026-11-20T12:00:00Z"]
    assert all(h["source"] == "webhook" for h in timeline)
    assert [h["event_id"] for h in timeline] == ["evt_ooo_signed", "evt_ooo_dispensed"]


def test_view_orders_equal_occurred_at_by_lifecycle_rank(seeded, rx, deliver, processor) -> None:  # type: ignore[no-untyped-def]
    deliver(event_body("evt_tie_printed", "printed", previous="signed", occurred=at(10)))
    deliver(event_body("evt_tie_signed", "signed", previous="issued", occurred=at(10)))
    assert processor.run_batch() == 2
    assert status_of(seeded, rx) == "printed"
    assert [h["to"] for h in prescription_view(seeded, rx)["history"]] == ["signed", "printed"]


@pytest.mark.parametrize("final", FINALS)
def test_final_status_never_changes(seeded, rx, deliver, processor, final: str) -> None:  # type: ignore[no-untyped-def]
    deliver(event_body(f"evt_final_{final}", final, previous="signed", occurred=at(10)))
    assert processor.run_batch() == 1
    assert status_of(seeded, rx) == final

    later = [s for s in ("issued", "signed", "printed", *FINALS) if s != final]
    for n, status in enumerate(later):
        deliver(event_body(f"evt_after_{final}_{n}", status, previous=final, occurred=at(11, n)))
    assert processor.run_batch() == len(later)

    assert status_of(seeded, rx) == final
    assert prescription_view(seeded, rx)["status"] == final
    finals_recorded = [h for h in history(seeded, rx) if h.to_status == final]
    assert len(finals_recorded) == 1 and finals_recorded[0].event_id == f"evt_final_{final}"


# --- no duplicate history ----------------------------------------------------------------


def test_redelivered_event_id_adds_no_history(seeded, rx, deliver, processor) -> None:  # type: ignore[no-untyped-def]
    body = event_body("evt_redeliver", "signed", previous="issued")
    assert deliver(body)["duplicate"] is False
    assert processor.run_batch() == 1
    assert deliver(body)["duplicate"] is True  # redelivery after processing
    assert processor.run_batch() == 0
    assert len(history(seeded, rx)) == 1
    assert status_of(seeded, rx) == "signed"


def test_apply_pending_applies_one_stored_event_now_and_only_once(
    seeded, rx, deliver, processor
) -> None:  # type: ignore[no-untyped-def]
    deliver(event_body("evt_sync_signed", "signed", previous="issued"))
    assert processor.apply_pending("evt_sync_signed") == "processed"
    assert status_of(seeded, rx) == "signed"
    assert [(h.to_status, h.event_id) for h in history(seeded, rx)] == [
        ("signed", "evt_sync_signed")
    ]
    # Applied already: nothing pending is left, for it or for a batch.
    assert processor.apply_pending("evt_sync_signed") is None
    assert processor.apply_pending("evt_never_stored") is None
    assert processor.run_batch() == 0
    assert len(history(seeded, rx)) == 1


def test_second_event_id_for_the_same_transition_adds_no_history(
    seeded, rx, deliver, processor
) -> None:  # type: ignore[no-untyped-def]
    deliver(event_body("evt_same_a", "signed", previous="issued", occurred=at(10)))
    assert processor.run_batch() == 1
    deliver(event_body("evt_same_b", "signed", previous="issued", occurred=at(10, 1)))
    assert processor.run_batch() == 1

    rows = history(seeded, rx)
    assert [(h.to_status, h.event_id) for h in rows] == [("signed", "evt_same_a")]
    assert inbox_row(seeded, "evt_same_b").state == "processed"  # handled, not retried
    assert status_of(seeded, rx) == "signed"


def test_both_events_of_one_transition_in_one_batch_record_it_once(
    seeded, rx, deliver, processor
) -> None:  # type: ignore[no-untyped-def]
    deliver(event_body("evt_batch_a", "printed", previous="signed", occurred=at(11)))
    deliver(event_body("evt_batch_b", "printed", previous="signed", occurred=at(11)))
    assert processor.run_batch() == 2
    assert [h.to_status for h in history(seeded, rx)] == ["printed"]


# --- unknown token: retried with backoff, then dead ------------------------------------


def test_unknown_token_is_retried_with_backoff(seeded, rx, deliver, processor, clock) -> None:  # type: ignore[no-untyped-def]
    deliver(event_body("evt_unknown_tok", "signed", previous="issued", token="SRXNOTYET00001"))
    start = clock.now
    assert processor.run_batch() == 1

    row = inbox_row(seeded, "evt_unknown_tok")
    cause = "event names platform token SRXNOTYET00001 that matches no prescription"
    assert (row.state, row.attempts, row.last_error) == ("pending", 1, cause)
    assert row.next_attempt_at > start  # in the future per the injected clock
    assert row.next_attempt_at - start <= timedelta(seconds=processor.policy.cap_s)
    assert row.locked_by is None and row.processed_at is None
    first_delay = row.next_attempt_at - start

    # Not due yet: nothing is claimed.
    assert processor.run_batch() == 0
    assert inbox_row(seeded, "evt_unknown_tok").attempts == 1

    clock.advance_to(row.next_attempt_at)
    second_start = clock.now
    assert processor.run_batch() == 1
    row = inbox_row(seeded, "evt_unknown_tok")
    assert (row.state, row.attempts) == ("pending", 2)
    assert row.next_attempt_at - second_start > first_delay  # exponential backoff
    assert history(seeded) == []
    assert status_of(seeded, rx) == "issued"


def test_unknown_token_goes_dead_after_max_attempts(app, seeded, deliver, clock) -> None:  # type: ignore[no-untyped-def]
    processor = InboxProcessor(
        seeded, worker_id="w-dead", now=clock, rand=lambda: 0.5, max_attempts=3
    )
    deliver(event_body("evt_never_known", "signed", previous="issued", token="SRXNEVER000001"))
    for attempt in (1, 2):
        assert processor.run_batch() == 1
        row = inbox_row(seeded, "evt_never_known")
        assert (row.state, row.attempts) == ("pending", attempt)
        clock.advance_to(row.next_attempt_at)
    assert processor.run_batch() == 1
    row = inbox_row(seeded, "evt_never_known")
    cause = "event names platform token SRXNEVER000001 that matches no prescription"
    assert (row.state, row.attempts, row.last_error) == ("dead", 3, cause)
    assert row.processed_at == clock.now
    # The operator's listing shows the same sentence.
    listed = app.test_cli_runner().invoke(args=["webhooks", "list", "--dead", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(i["event_id"], i["last_error"]) for i in json.loads(listed.stdout)] == [
        ("evt_never_known", cause)
    ]

    clock.advance_to(clock.now + timedelta(hours=1))
    assert processor.run_batch() == 0  # dead letters are not retried
    assert history(seeded) == []


def test_event_arriving_before_the_token_is_applied_once_the_token_is_known(
    seeded, deliver, processor, clock
) -> None:  # type: ignore[no-untyped-def]
    deliver(event_body("evt_early", "signed", previous="issued", token="SRXLATE0000001"))
    assert processor.run_batch() == 1
    assert inbox_row(seeded, "evt_early").state == "pending"

    prescription_id = issue(seeded, "rx-000003", "SRXLATE0000001")  # the send's commit lands
    clock.advance_to(inbox_row(seeded, "evt_early").next_attempt_at)
    assert processor.run_batch() == 1
    assert inbox_row(seeded, "evt_early").state == "processed"
    assert status_of(seeded, prescription_id) == "signed"
    assert [h.event_id for h in history(seeded, prescription_id)] == ["evt_early"]


# --- unreadable events go dead at once --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        (
            event_body("evt_bad_status", "teleported", previous="issued"),
            "event status 'teleported' is not a lifecycle status",
        ),
        (
            event_body("evt_bad_time", "signed", previous="issued").replace(
                b"2026-11-20T10:00:00Z", b"yesterday"
            ),
            "occurred_at is missing or not ISO 8601",
        ),
        (
            b'{"id":"evt_no_data","type":"prescription.status_updated"}',
            "event has no data.prescription",
        ),
    ],
    ids=["unknown_status", "bad_occurred_at", "no_prescription"],
)
def test_unprocessable_event_goes_dead_without_retry_saying_why(
    seeded, rx, deliver, processor, body: bytes, cause: str
) -> None:  # type: ignore[no-untyped-def]
    event_id = json.loads(body)["id"]
    deliver(body)
    assert processor.run_batch() == 1
    row = inbox_row(seeded, event_id)
    assert (row.state, row.attempts, row.last_error) == ("dead", 0, cause)
    assert history(seeded) == []
    assert status_of(seeded, rx) == "issued"


def test_a_failure_while_applying_is_dead_lettered_with_a_sentence_not_its_text(
    seeded, rx, deliver, clock, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    processor = InboxProcessor(
        seeded, worker_id="w-fail", now=clock, rand=lambda: 0.5, max_attempts=1
    )

    def failing_record(*args: Any, **kwargs: Any) -> None:
        # An exception's text may quote request data; it must not reach last_error.
        raise IntegrityError("INSERT ... ('Jane Doe', '1980-01-01')", {}, Exception("boom"))

    monkeypatch.setattr("webhooks.processing.record", failing_record)
    deliver(event_body("evt_apply_fails", "signed", previous="issued"))
    assert processor.run_batch() == 1

    row = inbox_row(seeded, "evt_apply_fails")
    assert (row.state, row.attempts) == ("dead", 1)
    assert row.last_error == (
        f"applying the event to the prescription with platform token {TOKEN} failed in the "
        "database (IntegrityError); replay it with `webhooks replay` once the cause is fixed"
    )
    assert status_of(seeded, rx) == "issued"


# --- stopping --------------------------------------------------------------------------


def test_stopping_mid_batch_gives_back_the_unstarted_rows(seeded, rx, deliver, processor) -> None:  # type: ignore[no-untyped-def]
    for n, status in enumerate(("signed", "printed", "dispensed")):
        deliver(event_body(f"evt_stop_{n}", status, occurred=at(10 + n)))
    calls = iter([False, True, True])
    assert processor.run_batch(should_stop=lambda: next(calls)) == 1
    rows = [inbox_row(seeded, f"evt_stop_{n}") for n in range(3)]
    assert [r.state for r in rows] == ["processed", "pending", "pending"]
    assert all(r.locked_by is None for r in rows[1:])
    assert processor.run_batch() == 2  # released rows are claimable at once
    assert status_of(seeded, rx) == "dispensed"


# --- replay -----------------------------------------------------------------------------


def test_replay_one_event_reprocesses_without_duplicating_history(
    seeded, rx, deliver, processor
) -> None:  # type: ignore[no-untyped-def]
    deliver(event_body("evt_replay_one", "signed", previous="issued"))
    assert processor.run_batch() == 1
    assert processor.replay(event_id="evt_replay_one") == [("evt_replay_one", "processed")]
    assert processor.replay(event_id="evt_replay_one") == [("evt_replay_one", "processed")]
    assert [h.event_id for h in history(seeded, rx)] == ["evt_replay_one"]
    assert status_of(seeded, rx) == "signed"
    assert processor.replay(event_id="evt_does_not_exist") == []


def test_replay_dead_after_the_cause_is_fixed(seeded, deliver, clock) -> None:  # type: ignore[no-untyped-def]
    processor = InboxProcessor(
        seeded, worker_id="w-replay", now=clock, rand=lambda: 0.5, max_attempts=1
    )
    deliver(event_body("evt_dead_then_ok", "signed", previous="issued", token="SRXREPLAY00001"))
    deliver(b"not json at all")
    assert processor.run_batch() == 1
    assert inbox_row(seeded, "evt_dead_then_ok").state == "dead"

    prescription_id = issue(seeded, "rx-000005", "SRXREPLAY00001")
    results = dict(processor.replay(dead=True))
    assert results["evt_dead_then_ok"] == "processed"
    assert list(results.values()).count("dead") == 1  # the unreadable body stays dead
    assert status_of(seeded, prescription_id) == "signed"
    assert len(history(seeded, prescription_id)) == 1

    # Replaying again (one event, or every dead one) never duplicates history.
    assert processor.replay(event_id="evt_dead_then_ok") == [("evt_dead_then_ok", "processed")]
    assert [eid for eid, _ in processor.replay(dead=True)] == [
        next(k for k in results if k.startswith("sha256:"))
    ]
    assert len(history(seeded, prescription_id)) == 1
    row = inbox_row(seeded, "evt_dead_then_ok")
    assert (row.state, row.attempts) == ("processed", 0)


def test_replay_keeps_other_event_types_ignored(seeded, rx, deliver, processor) -> None:  # type: ignore[no-untyped-def]
    deliver(event_body("evt_note", "signed", event_type="prescription.note_added"))
    assert processor.replay(event_id="evt_note") == [("evt_note", "ignored")]
    assert history(seeded) == [] and status_of(seeded, rx) == "issued"


def test_replay_needs_an_event_id_or_dead(processor) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        processor.replay()


def test_cli_replay_one_event(app, seeded, rx, deliver, processor) -> None:  # type: ignore[no-untyped-def]
    deliver(event_body("evt_cli_one", "signed", previous="issued"))
    assert processor.run_batch() == 1
    runner = app.test_cli_runner()

    result = runner.invoke(args=["webhooks", "replay", "evt_cli_one"])
    assert result.exit_code == 0, result.output
    assert "evt_cli_one: processed" in result.output
    assert [h.event_id for h in history(seeded, rx)] == ["evt_cli_one"]

    missing = runner.invoke(args=["webhooks", "replay", "evt_nobody"])
    assert missing.exit_code != 0
    assert "evt_nobody" in missing.output

    both = runner.invoke(args=["webhooks", "replay", "evt_cli_one", "--dead"])
    assert both.exit_code != 0
    neither = runner.invoke(args=["webhooks", "replay"])
    assert neither.exit_code != 0


def test_cli_replay_dead(app, seeded, deliver, clock) -> None:  # type: ignore[no-untyped-def]
    processor = InboxProcessor(
        seeded, worker_id="w-cli", now=clock, rand=lambda: 0.5, max_attempts=1
    )
    deliver(event_body("evt_cli_dead", "printed", previous="signed", token="SRXCLIDEAD0001"))
    assert processor.run_batch() == 1
    assert inbox_row(seeded, "evt_cli_dead").state == "dead"
    prescription_id = issue(seeded, "rx-000007", "SRXCLIDEAD0001")

    runner = app.test_cli_runner()
    result = runner.invoke(args=["webhooks", "replay", "--dead"])
    assert result.exit_code == 0, result.output
    assert "evt_cli_dead: processed" in result.output
    again = runner.invoke(args=["webhooks", "replay", "--dead"])
    assert again.exit_code == 0 and "evt_cli_dead" not in again.output
    assert status_of(seeded, prescription_id) == "printed"
    assert len(history(seeded, prescription_id)) == 1
