"""The set-based inbox apply stores exactly what applying one event at a time stores.

One batch mixes what a platform really sends: an in-order step, an out-of-order
final status, a late earlier step, a duplicate delivery of one transition under
a second event id, an event for a token nobody holds yet, and an unreadable
event. The batch is applied once set-based (a batch of many) and once one by
one (batches of one); the history, the staged events (exactly one per appended
history row), the prescription and the inbox rows must match.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from sqlalchemy import select

from app.foundation.db import Database
from app.foundation.models import EventOutbox, Prescription, StatusHistory, WebhookInbox
from tests.unit.test_inbox_processing import (  # noqa: F401 - fixtures
    REFERENCE,
    TOKEN,
    at,
    clock,
    deliver,
    event_body,
    issue,
)
from webhooks.processing import InboxProcessor


def _deliver_mixed_batch(deliver: Any) -> None:  # noqa: F811
    deliver(event_body("evt_set_signed", "signed", previous="issued", occurred=at(10, 5)))
    deliver(event_body("evt_set_dispensed", "dispensed", previous="printed", occurred=at(10, 30)))
    deliver(event_body("evt_set_ready_late", "printed", previous="signed", occurred=at(10, 20)))
    deliver(event_body("evt_set_signed_again", "signed", previous="issued", occurred=at(10, 6)))
    deliver(event_body("evt_set_unknown", "signed", previous="issued", token="SRXNOBODY00001"))
    deliver(b'{"id":"evt_set_bad","type":"prescription.status_updated","data":{}}')


def _snapshot(db: Database, prescription_id: int) -> dict[str, Any]:
    with db.session() as session:
        history = [
            (h.from_status, h.to_status, h.occurred_at, h.received_at, h.source, h.event_id)
            for h in session.scalars(
                select(StatusHistory)
                .where(StatusHistory.prescription_id == prescription_id)
                .order_by(StatusHistory.id)
            )
        ]
        events = []
        for e in session.scalars(
            select(EventOutbox)
            .where(EventOutbox.prescription_id == prescription_id)
            .order_by(EventOutbox.id)
        ):
            message = json.loads(e.payload)
            message.pop("event_id")  # a fresh uuid per row
            events.append((e.routing_key, e.state, e.next_attempt_at, message))
        prescription = session.get(Prescription, prescription_id)
        assert prescription is not None
        inbox = [
            (r.event_id, r.state, r.attempts, r.last_error, r.awaiting_prescription, r.locked_by)
            for r in session.scalars(select(WebhookInbox).order_by(WebhookInbox.event_id))
        ]
        return {
            "history": history,
            "events": events,
            "status": prescription.status,
            "last_event_at": prescription.last_event_at,
            "inbox": inbox,
        }


@pytest.mark.parametrize("batch", [1, 50], ids=["one-by-one", "set-based"])
def test_set_based_apply_stores_what_one_by_one_stores(
    seeded: Database,
    deliver: Any,
    clock: Any,
    batch: int,
    caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    rx = issue(seeded, REFERENCE, TOKEN)
    _deliver_mixed_batch(deliver)
    processor = InboxProcessor(seeded, worker_id="w-set", batch=batch, now=clock, rand=lambda: 0.5)
    with caplog.at_level(logging.INFO, logger="webhooks.processing"):
        while processor.run_batch():
            pass
    assert "one by one" not in caplog.text  # the set-based path really ran (batch of many)
    got = _snapshot(seeded, rx)

    assert got["status"] == "dispensed"
    assert [(h[1], h[5]) for h in got["history"]] == [
        # Rows are applied in token order, then arrival order; a step is recorded once.
        ("signed", "evt_set_signed"),
        ("dispensed", "evt_set_dispensed"),
        ("printed", "evt_set_ready_late"),
    ]
    assert [(e[0], e[3]["from"], e[3]["to"], e[3]["request_id"]) for e in got["events"]] == [
        ("prescription.status_changed.B.signed", "issued", "signed", "evt_set_signed"),
        ("prescription.status_changed.B.dispensed", "printed", "dispensed", "evt_set_dispensed"),
        ("prescription.status_changed.B.printed", "signed", "printed", "evt_set_ready_late"),
    ]
    states = {row[0]: row[1:] for row in got["inbox"]}
    assert (
        states["evt_set_signed_again"][0] == "processed"
    )  # a duplicate transition: processed, no row
    assert states["evt_set_unknown"][:4] == (
        "pending",
        1,
        "event names platform token SRXNOBODY00001 that matches no prescription",
        True,
    )
    assert states["evt_set_bad"][0] == "dead"
    assert all(row[5] is None for row in got["inbox"])  # every lease given back


def test_set_based_and_one_by_one_agree_row_for_row(
    seeded: Database, deliver: Any, clock: Any
) -> None:  # noqa: F811
    rx = issue(seeded, REFERENCE, TOKEN)
    _deliver_mixed_batch(deliver)
    with seeded.session() as session:
        ids = [r.id for r in session.scalars(select(WebhookInbox))]
    InboxProcessor(seeded, worker_id="w-set", batch=50, now=clock, rand=lambda: 0.5).run_batch()
    together = _snapshot(seeded, rx)

    # Undo everything the batch did, then apply the same stored bytes one by one.
    with seeded.session() as session:
        session.execute(EventOutbox.__table__.delete().where(EventOutbox.prescription_id == rx))
        session.execute(
            StatusHistory.__table__.delete().where(
                StatusHistory.prescription_id == rx, StatusHistory.source == "webhook"
            )
        )
        prescription = session.get(Prescription, rx)
        assert prescription is not None
        prescription.status, prescription.last_event_at = "issued", None
        for row in session.scalars(select(WebhookInbox).where(WebhookInbox.id.in_(ids))):
            row.state, row.attempts, row.last_error, row.processed_at = "pending", 0, None, None
            row.awaiting_prescription, row.next_attempt_at = False, row.received_at
    one = InboxProcessor(seeded, worker_id="w-set", batch=1, now=clock, rand=lambda: 0.5)
    for _ in ids:
        one.run_batch()
    assert _snapshot(seeded, rx) == together


def test_a_batch_that_fails_late_is_applied_one_by_one_from_what_the_database_holds(
    seeded: Database,
    deliver: Any,  # noqa: F811
    clock: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The set-based path stores the batch's status moves in one UPDATE and tells the objects
    their new values as committed; if the batch then fails, its savepoint rolls back and
    every event is applied again one by one. Those retries must start from what the database
    holds (issued), not from what the rolled-back batch left on the objects (signed)."""
    import webhooks.processing as processing

    tokens = {"rx-000001": "SRXFALLBACK0001", "rx-000025": "SRXFALLBACK0025"}
    ids = {ref: issue(seeded, ref, token) for ref, token in tokens.items()}
    for ref, token in tokens.items():
        deliver(event_body(f"evt_fallback_{ref}", "signed", previous="issued", token=token))
    real = processing.finish_rows

    def fails_for_a_batch(session: Any, rows: Any, **kwargs: Any) -> None:
        if len(rows) > 1:
            raise RuntimeError("the batch's last write failed")
        real(session, rows, **kwargs)

    monkeypatch.setattr(processing, "finish_rows", fails_for_a_batch)
    processor = InboxProcessor(seeded, worker_id="w-fall", batch=50, now=clock, rand=lambda: 0.5)
    with caplog.at_level(logging.INFO, logger="webhooks.processing"):
        assert processor.run_batch() == 2
    assert "one by one" in caplog.text

    with seeded.session() as session:
        for ref, pid in ids.items():
            assert session.get(Prescription, pid).status == "signed", ref  # type: ignore[union-attr]
            steps = session.scalars(
                select(StatusHistory.to_status).where(StatusHistory.prescription_id == pid)
            ).all()
            assert steps == ["signed"], ref
        states = session.scalars(
            select(WebhookInbox.state).where(WebhookInbox.event_id.like("evt_fallback_%"))
        ).all()
        assert sorted(states) == ["processed", "processed"]
