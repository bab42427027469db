"""The benchmark's synchronous reference receiver applies each new event inside the request.

It is the yardstick of bench/webhooks' receipt-to-history phase, so it must keep
working against the service's receiver as that changes.
"""

from __future__ import annotations

from bench.webhooks.sync_receiver import make_synchronous
from tests.unit.test_inbox_processing import (  # noqa: F401 - fixtures
    deliver,
    event_body,
    history,
    inbox_row,
    rx,
    status_of,
)


def test_a_new_event_is_in_the_history_when_the_request_returns(app, seeded, rx, deliver) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    make_synchronous(app)
    ack = deliver(event_body("evt_sync_1", "signed", previous="issued"))
    assert ack == {"received": True, "event_id": "evt_sync_1", "duplicate": False}
    assert status_of(seeded, rx) == "signed"
    assert [(h.to_status, h.event_id) for h in history(seeded, rx)] == [("signed", "evt_sync_1")]
    assert inbox_row(seeded, "evt_sync_1").state == "processed"
    # A redelivery answers as the service does and adds nothing.
    assert deliver(event_body("evt_sync_1", "signed", previous="issued"))["duplicate"] is True
    assert len(history(seeded, rx)) == 1
