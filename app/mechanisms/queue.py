"""The one table-backed queue mechanism: the dispatch outbox, the webhook inbox, the event outbox.

A queue row has ``state`` (``pending`` until it is ``done``/``processed``,
``dead`` or ``ignored``), ``attempts``, ``next_attempt_at``, ``locked_until``
and ``locked_by``, ``last_error``. Every queue goes through these functions:

- :func:`claim_rows` picks due rows with ``FOR UPDATE SKIP LOCKED``
  (PostgreSQL; SQLite serialises writers instead) and stamps a lease
  (``locked_until``) and the worker's id, inside the caller's transaction.
  :func:`claim_returning` leases and reads in ONE statement (``UPDATE ...
  WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n) RETURNING``,
  built by :func:`claim_statement`) inside the caller's transaction, for a
  worker that wants plain column values, not ORM rows (the event
  publisher); :func:`claim_batch` does so in a short transaction of its
  own (the dispatch outbox, whose work makes an outbound call, commits the
  claim before it). The inbox claims
  inside the transaction that applies the rows (no outbound call), so a
  crash rolls the claim back with the work.
- :func:`release` / :func:`release_row` give a lease back; :func:`finish`
  (or, for a statement built once, :func:`finish_statement`) ends a row's work.
- :func:`attempt_statement` counts an attempt and renews the lease before
  work that makes an outbound call; :func:`count_attempt` /
  :func:`uncount_attempt` for rows held as ORM objects.
- :func:`reopen` / :func:`reopen_matching` put finished or dead rows back:
  pending, attempts from zero, due now.
- :func:`block_credentials` parks an outbox row whose prescriber's login the
  platform refused; :func:`reopen_matching` puts it back when the
  credentials change (``prescribers set-credentials``).
- :func:`retry_or_dead` is the one place that decides between rescheduling
  (with :class:`app.mechanisms.retry.RetryPolicy`) and ``dead``; :func:`mark_dead` for
  work that can never succeed; :func:`park` to wait without counting an
  attempt (the breaker is open). :func:`dead_statement` and
  :func:`reschedule_statement` do the same by id for a worker that holds no
  ORM rows (the event publisher).

No other module writes these columns (``tests/unit/test_architecture.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, or_, select, update
from sqlalchemy.orm import Session

from app.foundation.db import Database
from app.mechanisms import wakeup as queue_wakeup
from app.mechanisms.retry import RetryPolicy

# Every writer of a queue row imports this module: from here on, committing a
# pending row also wakes the listening workers (PostgreSQL NOTIFY).
queue_wakeup.install()

PENDING = "pending"
DEAD = "dead"
# The outbox only: the platform refused the prescriber's login (login_failed).
# Not claimed, not counted as an attempt; reopened when the credentials change.
BLOCKED_CREDENTIALS = "blocked_credentials"


def wakeup_sql(model: Any) -> str:
    """The SQL expression that wakes the workers of ``model``'s queue (PostgreSQL ``pg_notify``).

    For Core writers that add a pending row themselves (the webhook receiver's
    ``INSERT ... RETURNING``); ORM writers are covered by :mod:`app.mechanisms.wakeup`.
    """
    return queue_wakeup.notify_sql(queue_wakeup.CHANNELS[model])


def _due(query: Any, model: Any, *, now: Any, limit: int) -> Any:
    """``query`` narrowed to ``model``'s due rows: pending, due at ``now``, no live lease; oldest due first."""
    return (
        query.where(
            model.state == PENDING,
            model.next_attempt_at <= now,
            or_(model.locked_until.is_(None), model.locked_until < now),
        )
        .order_by(model.next_attempt_at, model.id)
        .limit(limit)
    )


def claim_rows(
    session: Session,
    model: Any,
    *,
    is_postgres: bool,
    worker_id: str,
    now: datetime,
    lease_s: float,
    limit: int,
) -> list[Any]:
    """Lease up to ``limit`` due ``pending`` rows of ``model`` to ``worker_id`` in ``session``.

    Due: ``next_attempt_at <= now`` and no live lease. ``now`` is aware UTC;
    the lease lasts ``lease_s`` seconds. Returns the rows, oldest due first;
    the lease holds once the caller's transaction commits.
    """
    query = _due(select(model), model, now=now, limit=limit)
    if is_postgres:
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query))
    until = now + timedelta(seconds=lease_s)
    for row in rows:
        row.locked_until, row.locked_by = until, worker_id
    return rows


def claim_batch(
    db: Database,
    model: Any,
    *columns: Any,
    worker_id: str,
    now: datetime,
    lease_s: float,
    limit: int,
) -> list[Row[Any]]:
    """:func:`claim_returning` in a short transaction of its own, oldest due first.

    Returns one row per claimed id with ``id``, ``next_attempt_at`` and the
    ``columns`` by name; the lease (``lease_s`` seconds from ``now``, aware
    UTC) holds on return. SQLite 3.35+ (RETURNING) is required there.
    """
    with db.session() as session:
        rows = claim_returning(
            session,
            model,
            (model.id, model.next_attempt_at, *columns),
            worker_id=worker_id,
            now=now,
            lease_s=lease_s,
            limit=limit,
        )
    # RETURNING comes in no particular order.
    rows.sort(key=lambda r: (r.next_attempt_at, r.id))
    return rows


def claim_statement(
    model: Any,
    columns: Sequence[Any],
    *,
    postgres: bool,
    worker_id: Any,
    now: Any,
    until: Any,
    limit: int,
) -> Any:
    """The statement of :func:`claim_returning`: ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING``.

    The same rows as :func:`claim_rows` (due at ``now``, oldest due first,
    ``FOR UPDATE SKIP LOCKED`` when ``postgres``), leased to ``worker_id``
    until ``until`` (aware UTC). ``worker_id``, ``now`` and ``until`` may be
    values or ``bindparam()`` s, so that a caller can build the statement
    once. Returned unexecuted so that a caller can also wrap it (a PostgreSQL
    CTE) and still have one round trip.
    """
    due = _due(select(model.id), model, now=now, limit=limit)
    if postgres:
        due = due.with_for_update(skip_locked=True)
    return (
        update(model)
        .where(model.id.in_(due.scalar_subquery()))
        .values(locked_until=until, locked_by=worker_id)
        .returning(*columns)
        .execution_options(synchronize_session=False)
    )


def claim_returning(
    session: Session,
    model: Any,
    columns: Sequence[Any],
    *,
    worker_id: str,
    now: datetime,
    lease_s: float,
    limit: int,
) -> list[Row[Any]]:
    """Lease up to ``limit`` due ``pending`` rows of ``model`` and return their ``columns``, in one statement.

    See :func:`claim_statement`: one round trip, no ORM objects. ``columns``
    are ``model``'s column attributes; the rows come back in no particular
    order (sort them). The lease holds once the caller's transaction commits.
    ``now`` is aware UTC; ``lease_s`` seconds.
    """
    statement = claim_statement(
        model,
        columns,
        postgres=session.get_bind().dialect.name == "postgresql",
        worker_id=worker_id,
        now=now,
        until=now + timedelta(seconds=lease_s),
        limit=limit,
    )
    return list(session.execute(statement).all())


def release_row(row: Any) -> None:
    """Drop ``row``'s lease (the work on it is finished, or given back)."""
    row.locked_by = row.locked_until = None


def release(db: Database, model: Any, ids: list[int], *, worker_id: str) -> None:
    """Give back leases on ``ids`` still held by ``worker_id`` (clean shutdown)."""
    if not ids:
        return
    with db.session() as session:
        session.execute(
            update(model)
            .where(model.id.in_(ids), model.locked_by == worker_id)
            .values(locked_until=None, locked_by=None)
        )


def reopen(row: Any, *, now: datetime) -> None:
    """Put ``row`` back in the queue: pending, attempts from zero, due at ``now``, no lease, no error."""
    row.state, row.attempts, row.next_attempt_at, row.last_error = PENDING, 0, now, None
    release_row(row)


def pending_values(*, now: datetime) -> dict[str, Any]:
    """The queue columns of a new row: pending, no attempt yet, due at ``now`` (aware UTC)."""
    return {"state": PENDING, "attempts": 0, "next_attempt_at": now}


def reopen_statement(model: Any, *conditions: Any, now: Any = None, **values: Any) -> Any:
    """The UPDATE of :func:`reopen_matching`; ``values`` set more columns.

    To build once, ``conditions`` may hold ``bindparam()`` s and ``now`` (the due
    time) left None makes it the bind parameter ``reopen_now``: run such a
    statement with :func:`reopen_prepared`.
    """
    due = bindparam("reopen_now") if now is None else now
    return (
        update(model)
        .where(*conditions)
        .values(
            state=PENDING,
            attempts=0,
            next_attempt_at=due,
            locked_until=None,
            locked_by=None,
            **values,
        )
    )


def reopen_prepared(
    session: Session, model: Any, statement: Any, *, now: datetime, **params: Any
) -> int:
    """Run a :func:`reopen_statement` of ``model``'s queue, due at ``now``; returns how many rows were reopened.

    ``params`` bind the statement's own parameters. It runs as Core on the
    session's connection (in its transaction); the queue's workers are woken
    (:func:`app.mechanisms.wakeup.notify_queued`) only when at least one row was reopened.
    """
    return _wake_if_reopened(
        session, model, session.connection().execute(statement, {"reopen_now": now, **params})
    )


def reopen_matching(
    session: Session, model: Any, *conditions: Any, now: datetime, **values: Any
) -> int:
    """:func:`reopen` every row of ``model`` matching ``conditions`` in one statement; ``values`` set more columns.

    Returns how many rows were reopened; the queue's workers are woken
    (:func:`app.mechanisms.wakeup.notify_queued`) only when there was at least one.
    """
    # Through the ORM session (not Core as reopen_prepared): objects of these rows it holds see the change.
    return _wake_if_reopened(
        session, model, session.execute(reopen_statement(model, *conditions, now=now, **values))
    )


def _wake_if_reopened(session: Session, model: Any, result: Any) -> int:
    """How many rows a reopen UPDATE's ``result`` reopened; wakes ``model``'s workers when any."""
    reopened = int(result.rowcount or 0)
    if reopened:
        queue_wakeup.notify_queued(session, model)
    return reopened


def finish(row: Any, *, state: str = "done", note: str | None = None) -> None:
    """Finish ``row``: ``state`` (``done``, ``processed``, ``ignored``), ``note`` as ``last_error``, no lease."""
    row.state, row.last_error = state, note
    release_row(row)


def finish_statement(model: Any, *conditions: Any, state: str = "done", **values: Any) -> Any:
    """The UPDATE that finishes ``model``'s rows matching ``conditions``: ``state``, no lease.

    ``values`` set more columns (``last_error``, ``published_at``, ...); they may be
    ``bindparam()`` s, so that a caller can build the statement once.
    """
    return (
        update(model)
        .where(*conditions)
        .values(state=state, locked_until=None, locked_by=None, **values)
    )


def dead_statement(model: Any, *conditions: Any, error: Any, **values: Any) -> Any:
    """The UPDATE that dead-letters ``model``'s rows matching ``conditions`` with ``error``, no lease."""
    return finish_statement(model, *conditions, state=DEAD, last_error=error, **values)


def reschedule_statement(model: Any, *conditions: Any, attempts: Any, error: Any, due: Any) -> Any:
    """The UPDATE that counts a failed attempt (``attempts`` in all), due again at ``due``, no lease."""
    return (
        update(model)
        .where(*conditions)
        .values(
            attempts=attempts,
            last_error=error,
            next_attempt_at=due,
            locked_until=None,
            locked_by=None,
        )
    )


def attempt_statement(model: Any, *conditions: Any, **values: Any) -> Any:
    """The UPDATE that counts an attempt on ``model``'s rows matching ``conditions`` before it starts.

    ``attempts`` + 1 and a fresh lease until the bind parameter ``until`` (aware
    UTC); ``values`` set more columns. Unexecuted, so that the caller can add
    ``RETURNING`` and build it once.
    """
    return (
        update(model)
        .where(*conditions)
        .values(attempts=model.attempts + 1, locked_until=bindparam("until"), **values)
    )


def count_attempt(row: Any) -> None:
    """Count one more attempt on ``row`` (before :func:`retry_or_dead`)."""
    row.attempts += 1


def uncount_attempt(row: Any) -> None:
    """Take back an attempt counted before it started, for work that turned out not to be one."""
    row.attempts = max(row.attempts - 1, 0)


def mark_dead(row: Any, *, error: str) -> None:
    """Dead-letter ``row``: work that can never succeed, or whose attempts ran out."""
    row.state, row.last_error = DEAD, error


def block_credentials(row: Any, *, error: str) -> None:
    """Put outbox ``row`` in ``blocked_credentials`` (no lease, not claimed) until reopened."""
    row.state, row.last_error = BLOCKED_CREDENTIALS, error
    release_row(row)


def park(row: Any, *, delay_s: float, now: datetime, error: str | None = None) -> None:
    """Put ``row`` off for ``delay_s`` seconds from ``now`` without deciding anything else.

    ``error``, when given, is stored as ``last_error`` (why it waits).
    """
    row.next_attempt_at = now + timedelta(seconds=delay_s)
    if error is not None:
        row.last_error = error


def retry_or_dead(
    row: Any,
    *,
    policy: RetryPolicy,
    error: str,
    now: datetime,
    retry_after_s: float | None = None,
) -> str:
    """Reschedule ``row`` after a failed attempt, or dead-letter it when attempts ran out.

    ``row.attempts`` already counts the failed attempt. ``error`` is stored as
    ``last_error``; ``retry_after_s`` is the platform's requested wait
    (contract §2), honoured and capped by ``policy``. Returns the row's new
    state: ``"pending"`` or ``"dead"``.
    """
    row.last_error = error
    if policy.exhausted(row.attempts):
        mark_dead(row, error=error)
        return DEAD
    park(row, delay_s=policy.delay_s(max(row.attempts, 1), retry_after_s=retry_after_s), now=now)
    return PENDING
