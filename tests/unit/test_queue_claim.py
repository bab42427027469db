"""The one queue mechanism (app/mechanisms/queue.py): claim, lease, release, reschedule, dead, reopen."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import bindparam, select

from app.foundation.db import Database
from app.foundation.models import DispatchOutbox, Prescription, WebhookInbox
from app.mechanisms.queue import (
    claim_returning,
    finish_statement,
    holds_lease,
    release,
    reopen,
    retry_or_dead,
)
from app.mechanisms.retry import RetryPolicy
from tests.support import claimed_ids

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
LEASE_S = 60.0


def add_outbox_rows(
    db: Database, count: int, *, due: datetime = T0, state: str = "pending"
) -> list[int]:
    """One outbox row per seeded prescription, due at ``due``; returns their ids in order."""
    with db.session() as session:
        existing = set(session.scalars(select(DispatchOutbox.prescription_id)))
        free = [
            pid
            for pid in session.scalars(select(Prescription.id).order_by(Prescription.id))
            if pid not in existing
        ][:count]
        assert len(free) == count
        rows = [
            DispatchOutbox(
                prescription_id=pid,
                flow="erx",
                state=state,
                attempts=0,
                next_attempt_at=due,
                outcome_unknown=False,
                created_at=T0,
                updated_at=T0,
            )
            for pid in free
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def lease_of(db: Database, row_id: int) -> tuple[str | None, datetime | None]:
    with db.session() as session:
        row = session.get(DispatchOutbox, row_id)
        assert row is not None
        return row.locked_by, row.locked_until


def take(db: Database, worker: str, now: datetime, limit: int = 100) -> list[int]:
    return claimed_ids(db, DispatchOutbox, worker_id=worker, now=now, lease_s=LEASE_S, limit=limit)


def test_claim_leases_rows_so_another_worker_gets_none(seeded: Database) -> None:
    ids = add_outbox_rows(seeded, 3)

    first = take(seeded, "w1", T0)
    second = take(seeded, "w2", T0)

    assert first == ids
    assert second == []
    for row_id in ids:
        assert lease_of(seeded, row_id) == ("w1", T0 + timedelta(seconds=LEASE_S))


def test_lease_is_held_until_it_ends(seeded: Database) -> None:
    add_outbox_rows(seeded, 2)
    take(seeded, "w1", T0)

    assert take(seeded, "w2", T0 + timedelta(seconds=LEASE_S - 1)) == []
    assert take(seeded, "w2", T0 + timedelta(seconds=LEASE_S)) == []  # ends strictly after


def test_after_the_lease_ends_another_worker_claims_the_rows(seeded: Database) -> None:
    ids = add_outbox_rows(seeded, 2)
    take(seeded, "w1", T0)
    later = T0 + timedelta(seconds=LEASE_S + 1)

    assert take(seeded, "w2", later) == ids
    for row_id in ids:
        assert lease_of(seeded, row_id) == ("w2", later + timedelta(seconds=LEASE_S))
    assert take(seeded, "w1", later) == []


def test_rows_not_yet_due_are_not_claimed(seeded: Database) -> None:
    due_now = add_outbox_rows(seeded, 1, due=T0)
    due_later = add_outbox_rows(seeded, 1, due=T0 + timedelta(seconds=30))

    assert take(seeded, "w1", T0) == due_now
    assert lease_of(seeded, due_later[0]) == (None, None)
    assert take(seeded, "w1", T0 + timedelta(seconds=29)) == []
    assert take(seeded, "w2", T0 + timedelta(seconds=30)) == due_later


@pytest.mark.parametrize("state", ["done", "dead"])
def test_finished_rows_are_never_claimed(seeded: Database, state: str) -> None:
    add_outbox_rows(seeded, 2, state=state)

    assert take(seeded, "w1", T0 + timedelta(days=1)) == []


def test_claim_takes_oldest_due_first_up_to_the_limit(seeded: Database) -> None:
    late = add_outbox_rows(seeded, 1, due=T0 - timedelta(seconds=1))
    early = add_outbox_rows(seeded, 1, due=T0 - timedelta(seconds=10))
    middle = add_outbox_rows(seeded, 2, due=T0 - timedelta(seconds=5))

    first = take(seeded, "w1", T0, limit=2)
    rest = take(seeded, "w2", T0, limit=10)

    assert first == [early[0], middle[0]]
    assert rest == [middle[1], late[0]]


def test_concurrent_claims_never_share_a_row(seeded: Database) -> None:
    ids = add_outbox_rows(seeded, 20)
    workers = [f"w{n}" for n in range(5)]
    barrier = threading.Barrier(len(workers))
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def run(worker: str) -> None:
        try:
            barrier.wait(timeout=10)
            got: list[int] = []
            while batch := take(seeded, worker, T0, limit=3):
                got += batch
            results[worker] = got
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    claimed = [row_id for got in results.values() for row_id in got]
    assert sorted(claimed) == sorted(ids)  # every row once, none twice
    for worker, got in results.items():
        for row_id in got:
            assert lease_of(seeded, row_id)[0] == worker


def test_release_returns_only_rows_still_held_by_that_worker(seeded: Database) -> None:
    mine, taken_over = add_outbox_rows(seeded, 2)
    take(seeded, "w1", T0)
    # w1's lease on the second row ran out and w2 owns it now.
    with seeded.session() as session:
        row = session.get(DispatchOutbox, taken_over)
        assert row is not None
        row.locked_by = "w2"
        row.locked_until = T0 + timedelta(seconds=500)

    release(seeded, DispatchOutbox, [mine, taken_over], worker_id="w1")

    assert lease_of(seeded, mine) == (None, None)
    assert lease_of(seeded, taken_over) == ("w2", T0 + timedelta(seconds=500))
    assert take(seeded, "w3", T0) == [mine]


def test_released_rows_are_claimable_at_once(seeded: Database) -> None:
    ids = add_outbox_rows(seeded, 2)
    take(seeded, "w1", T0)

    release(seeded, DispatchOutbox, ids, worker_id="w1")

    assert take(seeded, "w2", T0) == ids


def test_release_of_nothing_is_a_no_op(seeded: Database) -> None:
    ids = add_outbox_rows(seeded, 1)
    take(seeded, "w1", T0)

    release(seeded, DispatchOutbox, [], worker_id="w1")

    assert lease_of(seeded, ids[0])[0] == "w1"


def test_claim_works_on_the_webhook_inbox_too(seeded: Database) -> None:
    with seeded.session() as session:
        rows = [
            WebhookInbox(
                event_id=f"evt_{n}",
                event_type="prescription.status_updated",
                body=b"{}",
                state="pending",
                attempts=0,
                next_attempt_at=T0,
                received_at=T0,
            )
            for n in range(2)
        ]
        session.add_all(rows)
        session.flush()
        ids = [r.id for r in rows]

    first = claimed_ids(seeded, WebhookInbox, worker_id="w1", now=T0, lease_s=LEASE_S, limit=10)
    second = claimed_ids(seeded, WebhookInbox, worker_id="w2", now=T0, lease_s=LEASE_S, limit=10)

    assert first == ids
    assert second == []


def test_a_claim_in_the_callers_transaction_returns_leased_orm_rows(seeded: Database) -> None:
    ids = add_outbox_rows(seeded, 2)
    with seeded.session() as session:
        claimed = claim_returning(
            session,
            DispatchOutbox,
            (DispatchOutbox,),
            worker_id="w1",
            now=T0,
            lease_s=LEASE_S,
            limit=10,
        )
        rows = sorted((row for (row,) in claimed), key=lambda r: r.id)
        assert [r.id for r in rows] == ids
        assert all(isinstance(r, DispatchOutbox) and r.locked_by == "w1" for r in rows)
        assert not session.dirty  # leased by the claim itself: nothing left to flush

    assert take(seeded, "w2", T0) == []


def test_a_write_under_the_lease_guard_changes_nothing_once_the_lease_moved(
    seeded: Database,
) -> None:
    (row_id,) = add_outbox_rows(seeded, 1)
    take(seeded, "w1", T0)
    take(seeded, "w2", T0 + timedelta(seconds=LEASE_S + 1))  # w1's lease ran out
    store = finish_statement(
        DispatchOutbox,
        DispatchOutbox.id == row_id,
        holds_lease(DispatchOutbox, bindparam("worker_id")),
    )

    with seeded.session() as session:
        late = session.connection().execute(store, {"worker_id": "w1"}).rowcount
        holder = session.connection().execute(store, {"worker_id": "w2"}).rowcount

    assert (late, holder) == (0, 1)


@pytest.mark.parametrize("prepared", [False, True])
def test_reopen_puts_back_only_the_matching_rows_and_counts_them(
    seeded: Database, prepared: bool
) -> None:
    dead = add_outbox_rows(seeded, 2, state="dead")
    (done,) = add_outbox_rows(seeded, 1, state="done")
    later = T0 + timedelta(hours=1)
    with seeded.session() as session:
        if prepared:  # conditions built once, bound per call
            conditions = (DispatchOutbox.state == bindparam("from_state"),)
            reopened = reopen(
                session,
                DispatchOutbox,
                *conditions,
                now=later,
                params={"from_state": "dead"},
                updated_at=later,
            )
        else:
            reopened = reopen(
                session, DispatchOutbox, DispatchOutbox.state == "dead", now=later, updated_at=later
            )

    assert reopened == 2
    with seeded.session() as session:
        rows = {r.id: r for r in session.scalars(select(DispatchOutbox))}
        for row_id in dead:
            row = rows[row_id]
            assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 0, later)
            assert row.locked_by is None and row.updated_at == later
        assert rows[done].state == "done"


def test_reopen_takes_no_conditions_with_a_row() -> None:
    with pytest.raises(TypeError):
        reopen(queue_row(attempts=1), DispatchOutbox.state == "dead", now=T0)


# -- reschedule, dead, reopen: one place decides ------------------------------------------


def queue_row(attempts: int) -> SimpleNamespace:
    return SimpleNamespace(
        state="pending",
        attempts=attempts,
        next_attempt_at=T0,
        last_error=None,
        locked_by="w1",
        locked_until=T0,
    )


def test_retry_or_dead_reschedules_with_the_policy_until_attempts_run_out() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=300.0, max_attempts=3, rand=lambda: 1.0)
    row = queue_row(attempts=2)

    assert retry_or_dead(row, policy=policy, error="timeout", now=T0) == "pending"
    assert (row.state, row.last_error, row.next_attempt_at) == (
        "pending",
        "timeout",
        T0 + timedelta(seconds=2),
    )

    row.attempts = 3
    assert retry_or_dead(row, policy=policy, error="timeout", now=T0) == "dead"
    assert row.state == "dead"


def test_retry_or_dead_honours_retry_after() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=300.0, max_attempts=8, rand=lambda: 0.0)
    row = queue_row(attempts=1)

    retry_or_dead(row, policy=policy, error="rate_limited", now=T0, retry_after_s=30.0)

    assert row.next_attempt_at == T0 + timedelta(seconds=30)


def test_reopen_puts_a_dead_row_back_due_now_without_a_lease() -> None:
    row = queue_row(attempts=8)
    row.state = "dead"

    reopen(row, now=T0 + timedelta(hours=1))

    assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 0, T0 + timedelta(hours=1))
    assert row.locked_by is None and row.locked_until is None
