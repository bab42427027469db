"""The one way a status is recorded (``app.mechanisms.history.record``), on the real database.

What every caller relies on: a status the service sets itself always becomes current
(even backwards: a requeue); a status learned from the platform moves it forward only but
is still appended; a lifecycle step and an event id are stored once; every appended row
stages exactly one status event in the same transaction; the single-row, batch and
per-row statements store the same rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.foundation.db import Database
from app.foundation.models import EventOutbox, Patient, Prescription, Region, StatusHistory
from app.mechanisms.history import Change, Transition, UnknownSource, local, record

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _rows(db: Database, limit: int) -> list[tuple[int, str, str]]:
    with db.session() as s:
        return [
            (rx.id, region, route)
            for rx, region, route in s.execute(
                select(Prescription, Patient.region_code, Region.flow)
                .join(Patient, Patient.id == Prescription.patient_id)
                .join(Region, Region.code == Patient.region_code)
                .order_by(Prescription.id)
                .limit(limit)
            )
        ]


def _learned(to: str, at: datetime, event_id: str) -> Transition:
    return Transition(
        to_status=to,
        from_status=None,
        occurred_at=at,
        received_at=at,
        source="webhook",
        event_id=event_id,
    )


def _state(db: Database, pid: int) -> tuple[str, list[str], int]:
    with db.session() as s:
        status = s.get(Prescription, pid).status  # type: ignore[union-attr]
        steps = list(
            s.scalars(
                select(StatusHistory.to_status)
                .where(StatusHistory.prescription_id == pid)
                .order_by(StatusHistory.id)
            )
        )
        events = s.scalar(
            select(func.count()).select_from(EventOutbox).where(EventOutbox.prescription_id == pid)
        )
    return status, steps, int(events or 0)


@pytest.mark.parametrize("known_route", [False, True], ids=["route looked up", "route given"])
def test_ours_always_moves_learned_moves_forward_only_and_each_row_stages_one_event(
    seeded: Database, known_route: bool
) -> None:
    ((pid, region, route),) = _rows(seeded, 1)
    where = {"region": region, "route": route} if known_route else {}

    def step(transition_of) -> list[bool]:  # type: ignore[no-untyped-def]
        with seeded.session() as s:
            rx = s.get(Prescription, pid, with_for_update=True)
            return record(s, [Change(rx, transition_of(rx), **where)])

    assert step(lambda rx: local(rx, "queued", source="service", now=T0)) == [True]
    assert step(lambda rx: _learned("signed", T0 + timedelta(minutes=2), "evt-signed")) == [True]
    # Late: appended (the timeline is complete) but the status stays signed.
    assert step(lambda rx: _learned("issued", T0 + timedelta(minutes=1), "evt-issued")) == [True]
    assert _state(seeded, pid) == ("signed", ["queued", "signed", "issued"], 3)
    # The same step again, under another event id: stored once, no event.
    assert step(lambda rx: _learned("signed", T0 + timedelta(minutes=3), "evt-signed-2")) == [False]
    assert _state(seeded, pid)[2] == 3
    # Ours moves even backwards (an operator's requeue).
    assert step(lambda rx: local(rx, "dead", source="service", now=T0 + timedelta(minutes=4))) == [
        True
    ]
    assert step(
        lambda rx: local(rx, "queued", source="operator", now=T0 + timedelta(minutes=5))
    ) == [True]
    assert _state(seeded, pid) == ("queued", ["queued", "signed", "issued", "dead", "queued"], 5)


def test_a_batch_stores_what_one_by_one_would(seeded: Database) -> None:
    (a, region_a, route_a), (b, region_b, route_b) = _rows(seeded, 2)
    with seeded.session() as s:
        rx_a = s.get(Prescription, a, with_for_update=True)
        rx_b = s.get(Prescription, b, with_for_update=True)
        recorded = record(
            s,
            [
                Change(rx_a, _learned("issued", T0, "evt-a1"), region=region_a, route=route_a),
                Change(
                    rx_a, _learned("issued", T0, "evt-a2"), region=region_a, route=route_a
                ),  # same step
                Change(rx_b, _learned("signed", T0, "evt-b1"), region=region_b, route=route_b),
            ],
        )
    assert recorded == [True, False, True]
    assert _state(seeded, a) == ("issued", ["issued"], 1)
    assert _state(seeded, b) == ("signed", ["signed"], 1)


def test_an_unknown_source_is_refused_before_anything_is_written(seeded: Database) -> None:
    ((pid, _, _),) = _rows(seeded, 1)
    with seeded.session() as s:
        rx = s.get(Prescription, pid, with_for_update=True)
        with pytest.raises(UnknownSource):
            record(s, [Change(rx, local(rx, "queued", source="somebody", now=T0))])
    assert _state(seeded, pid) == ("draft", [], 0)


def test_a_batch_of_several_prescriptions_stores_their_moves_in_one_update(
    seeded: Database,
) -> None:
    """The inbox's batch: the moves of several prescriptions are one UPDATE, not one per row,
    and every moved column lands (a step that is no lifecycle status leaves ``last_event_at``
    NULL for all of them, which the set-based statement must store as such)."""
    from sqlalchemy import event

    rows = _rows(seeded, 3)
    later = T0 + timedelta(minutes=7)
    sent: list[str] = []

    def listener(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        sent.append(statement)

    event.listen(seeded.engine, "before_cursor_execute", listener)
    try:
        with seeded.session() as s:
            locked = [s.get(Prescription, pid, with_for_update=True) for pid, _, _ in rows]
            sent.clear()
            record(s, [Change(rx, local(rx, "queued", source="service", now=T0)) for rx in locked])
            # The objects already say what was stored: nothing is left for the ORM to flush.
            assert [rx.status for rx in locked] == ["queued"] * 3 and not s.dirty
        with seeded.session() as s:
            locked = [s.get(Prescription, pid, with_for_update=True) for pid, _, _ in rows]
            record(
                s,
                [Change(rx, _learned("issued", later, f"evt-one-update-{rx.id}")) for rx in locked],
            )
    finally:
        event.remove(seeded.engine, "before_cursor_execute", listener)

    moves = [x for x in sent if x.lstrip().upper().startswith("UPDATE PRESCRIPTIONS")]
    assert len(moves) == 2, sent  # one per batch of three
    with seeded.session() as s:
        stored = [s.get(Prescription, pid) for pid, _, _ in rows]
        assert [(rx.status, rx.last_event_at, rx.updated_at) for rx in stored] == [
            ("issued", later, later)
        ] * 3
