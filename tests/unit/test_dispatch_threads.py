# ruff: noqa: F811 - the fixtures imported from test_dispatch are parameters below
"""The dispatch worker's concurrent sends (``WORKER_SEND_THREADS``) and its statement budget.

The fake platform (``responses``) and the real database, as in ``test_dispatch``;
here the Dispatcher runs several sends at once. Nothing is timed: the SQL
statements of an issued send are counted, not measured.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
import requests
from sqlalchemy import event, select, update

from app.foundation.db import Database
from app.foundation.models import DispatchOutbox, Patient, Prescription
from tests.support import claimed_ids
from tests.unit.test_dispatch import (  # noqa: F401 - fixtures
    clock,
    erx,
    make_dispatcher,
    outbox_of,
    platform,
    posts_for,
    prescription,
    queue,
    rsps,
)


def region_b_drafts(db: Database, count: int) -> list[str]:
    """References of ``count`` seeded Region B drafts."""
    with db.session() as session:
        refs = list(
            session.scalars(
                select(Prescription.reference)
                .join(Patient, Patient.id == Prescription.patient_id)
                .where(Patient.region_code == "B", Prescription.status == "draft")
                .order_by(Prescription.id)
                .limit(count)
            )
        )
    assert len(refs) == count, "the seed has too few Region B drafts"
    return refs


class StatementCounter:
    """Counts SQL statements sent on ``db``'s engine (``before_cursor_execute``), per thread-safe tally."""

    def __init__(self, db: Database) -> None:
        self.engine = db.engine
        self.count = 0
        self.texts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _on(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("BEGIN"):
            return  # SQLite's BEGIN IMMEDIATE (app/foundation/db.py); PostgreSQL's BEGIN is not a cursor execute
        with self._lock:
            self.count += 1
            self.texts[" ".join(statement.split())[:60]] += 1

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._on)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on)


@pytest.mark.parametrize("threads", [1, 4])
def test_an_issued_send_costs_five_statements(
    client, seeded, with_credentials, platform, make_dispatcher, threads
) -> None:  # type: ignore[no-untyped-def]
    refs = region_b_drafts(seeded, 10)
    pids = [queue(client, seeded, ref) for ref in refs]
    dispatcher = make_dispatcher(worker_send_threads=threads, worker_batch=10)
    with StatementCounter(seeded) as counted:
        assert dispatcher.run_batch() == 10
    assert [prescription(seeded, p).status for p in pids] == ["issued"] * 10
    # Per send: count the attempt, store the outcome, history + event row, reopen the
    # webhooks waiting for the token, the prescription UPDATE; SQLite writes the history
    # row and its event row in two statements. The claim and the read are the batch's.
    per_send = 5 if seeded.is_postgres else 6
    assert counted.count == 10 * per_send + 2, counted.texts.most_common()


def test_concurrent_sends_never_send_a_prescription_twice(
    client, seeded, with_credentials, platform, make_dispatcher
) -> None:  # type: ignore[no-untyped-def]
    refs = region_b_drafts(seeded, 16)
    pids = [queue(client, seeded, ref) for ref in refs]
    # Two workers with four send threads each, claiming from the same queue at once.
    workers = [make_dispatcher(f"w{i}", worker_send_threads=4, worker_batch=3) for i in (1, 2)]
    errors: list[BaseException] = []

    def drain(dispatcher: Any) -> None:
        try:
            while dispatcher.run_batch():
                pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    runners = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for t in runners:
        t.start()
    for t in runners:
        t.join(timeout=60)
    assert errors == []
    assert [posts_for(platform, ref) for ref in refs] == [1] * len(refs)
    assert {prescription(seeded, p).status for p in pids} == {"issued"}
    tokens = {prescription(seeded, p).platform_token for p in pids}
    assert len(tokens) == len(pids)
    assert {outbox_of(seeded, p).state for p in pids} == {"done"}


def test_a_lease_lost_during_a_threaded_send_is_not_written(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    refs = region_b_drafts(seeded, 4)
    pids = [queue(client, seeded, ref) for ref in refs]
    taken, taken_ref = pids[2], refs[2]

    def w2_takes_over_one_row() -> None:
        # Once this row's send is out (the fake platform records it before calling us).
        if not any(p.get("client_ref_id") == taken_ref for p in list(platform.posts)):
            return
        with seeded.session() as session:
            session.execute(
                update(DispatchOutbox)
                .where(DispatchOutbox.prescription_id == taken)
                .values(locked_by="w2")
            )

    platform.on_post = w2_takes_over_one_row
    assert make_dispatcher(worker_send_threads=4).run_batch() == 4

    row = outbox_of(seeded, taken)
    assert row.locked_by == "w2" and row.state == "pending"
    assert row.outcome_unknown is True  # w2 looks the reference up before sending again
    assert prescription(seeded, taken).platform_token is None
    others = [p for p in pids if p != taken]
    assert {prescription(seeded, p).status for p in others} == {"issued"}


def test_a_row_leased_to_another_worker_is_skipped_by_every_thread(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    refs = region_b_drafts(seeded, 3)
    pids = [queue(client, seeded, ref) for ref in refs]
    ids = claimed_ids(seeded, DispatchOutbox, worker_id="w2", now=clock(), lease_s=120, limit=10)
    dispatcher = make_dispatcher("w1", worker_send_threads=4)
    assert dispatcher.run_batch() == 0  # nothing due: w2 holds the leases
    assert [dispatcher.process(i) for i in ids] == ["skipped"] * 3
    assert platform.posts == []
    assert [outbox_of(seeded, p).attempts for p in pids] == [0, 0, 0]


def test_after_unknown_outcomes_threaded_sends_look_up_before_sending(
    client, seeded, with_credentials, platform, make_dispatcher, clock
) -> None:  # type: ignore[no-untyped-def]
    refs = region_b_drafts(seeded, 4)
    pids = [queue(client, seeded, ref) for ref in refs]
    platform.post_script = [requests.exceptions.ReadTimeout("lost reply")] * 4
    dispatcher = make_dispatcher(worker_send_threads=4)
    dispatcher.run_batch()
    assert [outbox_of(seeded, p).outcome_unknown for p in pids] == [True] * 4
    # Two of them did reach the platform before the reply was lost.
    platform.holds(refs[0], "SRXHELD0")
    platform.holds(refs[1], "SRXHELD1")
    clock.advance(600)
    dispatcher.run_batch()

    assert sorted(platform.lookups) == sorted(refs)
    assert [posts_for(platform, ref) for ref in refs] == [1, 1, 2, 2]
    assert [prescription(seeded, p).platform_token for p in pids[:2]] == ["SRXHELD0", "SRXHELD1"]
    assert {prescription(seeded, p).status for p in pids} == {"issued"}


def test_stopping_releases_the_rows_not_started(
    client, seeded, with_credentials, platform, make_dispatcher
) -> None:  # type: ignore[no-untyped-def]
    refs = region_b_drafts(seeded, 6)
    pids = [queue(client, seeded, ref) for ref in refs]
    asked = iter([False, False, True])  # two rows start, then the worker is told to stop

    handled = make_dispatcher(worker_send_threads=2).run_batch(
        should_stop=lambda: next(asked, True)
    )

    assert handled == 2
    statuses = [prescription(seeded, p).status for p in pids]
    assert statuses == ["issued", "issued", "queued", "queued", "queued", "queued"]
    rows = [outbox_of(seeded, p) for p in pids[2:]]
    assert [(r.locked_by, r.attempts, r.state) for r in rows] == [(None, 0, "pending")] * 4


# -- the breaker shared by the send threads ------------------------------------------


def _breaker(fail_max: int = 2, reset_s: float = 60.0) -> Any:
    from app.mechanisms.circuit_breaker import CircuitBreaker
    from connector.errors import TransportError

    return CircuitBreaker(
        fail_max=fail_max,
        reset_timeout_s=reset_s,
        counts=lambda exc: isinstance(exc, TransportError),
    )


def test_the_breaker_lets_sends_run_at_once() -> None:
    gate = _breaker()
    both_inside = threading.Barrier(2, timeout=10)  # broken if the calls ran one after the other
    results: list[str] = []

    def call() -> None:
        results.append(gate.call(lambda: (both_inside.wait(), "ok")[1]))

    runners = [threading.Thread(target=call) for _ in range(2)]
    for t in runners:
        t.start()
    for t in runners:
        t.join(timeout=15)
    assert results == ["ok", "ok"]


def test_the_shared_breaker_opens_after_fail_max_and_ignores_business_errors() -> None:
    from app.mechanisms.circuit_breaker import BreakerState, CircuitOpen
    from connector.errors import PlatformRejected, TransportError

    breaker = _breaker(fail_max=2)

    def down() -> None:
        raise TransportError(
            "connection refused", code="connect_error", retryable=True, outcome_unknown=False
        )

    def no() -> None:
        raise PlatformRejected("Invalid data")

    for _ in range(3):
        with pytest.raises(PlatformRejected):
            breaker.call(no)
    assert breaker.state is BreakerState.CLOSED
    for _ in range(2):
        with pytest.raises(TransportError):
            breaker.call(down)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: "never called")


def test_a_half_open_breaker_lets_one_trial_through_at_a_time() -> None:
    from app.mechanisms.circuit_breaker import BreakerState, CircuitOpen

    breaker = _breaker(fail_max=1, reset_s=0.0)
    breaker.open()
    gate = breaker
    inside, release = threading.Event(), threading.Event()
    trial_result: list[str] = []

    def trial() -> str:
        inside.set()
        release.wait(10)
        return "trial"

    runner = threading.Thread(target=lambda: trial_result.append(gate.call(trial)))
    runner.start()
    assert inside.wait(10)
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpen):
        gate.call(lambda: "second")  # refused while the trial is out
    release.set()
    runner.join(timeout=10)
    assert trial_result == ["trial"]
    assert breaker.state is BreakerState.CLOSED
    assert gate.call(lambda: "after") == "after"


def test_the_breaker_stays_open_for_its_reset_timeout_on_its_clock() -> None:
    from app.mechanisms.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpen
    from connector.errors import TransportError

    now = [100.0]
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        fail_max=1,
        reset_timeout_s=30.0,
        counts=lambda exc: isinstance(exc, TransportError),
        clock=lambda: now[0],
        listeners=[lambda old, new: changes.append((old.value, new.value))],
    )

    def down() -> None:
        raise TransportError("timeout", code="timeout", retryable=True, outcome_unknown=True)

    with pytest.raises(TransportError):
        breaker.call(down)
    now[0] += 29.9
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: "too early")
    now[0] += 0.2
    with pytest.raises(TransportError):
        breaker.call(down)  # the half-open trial fails: open again, for another 30 s
    assert breaker.state is BreakerState.OPEN
    now[0] += 29.9
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: "too early")
    now[0] += 0.2
    assert breaker.call(lambda: "ok") == "ok"
    assert changes == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]
