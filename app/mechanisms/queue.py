"""The one table-backed queue mechanism: the dispatch outbox, the webhook inbox, the event outbox.

A queue row has ``state`` (``pending`` until it is ``done``/``processed``,
``dead`` or ``ignored``), ``attempts``, ``next_attempt_at``, ``locked_until``
and ``locked_by``, ``last_error``. Every queue goes through these functions:

- Claiming is one statement (``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE
  SKIP LOCKED LIMIT n) RETURNING``, built by :func:`claim_statement`): due
  rows get a lease (``locked_until``) and the worker's id. PostgreSQL skips
  rows another worker holds; SQLite serialises writers instead.
  :func:`claim_returning` runs it inside the caller's transaction and returns
  plain column values (the event publisher), or ORM rows when the model
  itself is asked for (the inbox, which applies its rows in the transaction
  that claims them, so a crash rolls the claim back with the work);
  :func:`claim_batch` does so in a short transaction of its own (the
  dispatch outbox, whose work makes an outbound call, commits the claim
  before it).
- :func:`holds_lease` is the one test "does this worker still hold the
  row's lease?" (a WHERE condition) for work that runs after its claim.
- :func:`release` / :func:`release_row` give a lease back; :func:`finish`
  (or, for a statement built once, :func:`finish_statement`; for a batch of ORM
  rows in one UPDATE, :func:`finish_rows`) ends a row's work.
- :func:`attempt_statement` counts an attempt and renews the lease before
  work that makes an outbound call; :func:`count_attempt` /
  :func:`uncount_attempt` for rows held as ORM objects.
- :func:`pending_values` are the queue columns of a new row (:func:`arrival_values`
  of one that may be settled on arrival).
- :func:`reopen` puts finished, dead or blocked rows back: pending, attempts
  from zero, due now (one row held as an ORM object, or every row matching
  conditions in one UPDATE).
- :func:`block_credentials` parks an outbox row whose prescriber's login the
  platform refused; :func:`reopen` puts it back when the credentials change
  (``prescribers set-credentials``).
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
from sqlalchemy.orm.attributes import set_committed_value

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

    The due rows of ``model`` (pending, ``next_attempt_at <= now``, no live
    lease; the oldest due first, ``FOR UPDATE SKIP LOCKED`` when
    ``postgres``), leased to ``worker_id`` until ``until`` (aware UTC). ``worker_id``, ``now`` and ``until`` may be
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

    See :func:`claim_statement`: one round trip. ``columns`` are ``model``'s
    column attributes (plain values), or ``(model,)`` for the rows as ORM
    objects of ``session`` (already leased: nothing more to flush). The rows
    come back in no particular order (sort them). The lease holds once the
    caller's transaction commits. ``now`` is aware UTC; ``lease_s`` seconds.
    SQLite 3.35+ (RETURNING) is required there.
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


def holds_lease(model: Any, worker_id: Any) -> Any:
    """The WHERE condition "``worker_id`` still holds the lease of this row of ``model``'s queue".

    ``worker_id`` is a value or a ``bindparam()`` (for a statement built once).
    Work that runs after its claim (an outbound call, storing its outcome) is
    written only under this guard: a row whose lease ran out and was claimed
    by another worker matches nothing, so the late worker changes nothing.
    """
    return model.locked_by == worker_id


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
            .where(model.id.in_(ids), holds_lease(model, worker_id))
            .values(locked_until=None, locked_by=None)
        )


def pending_values(*, now: datetime) -> dict[str, Any]:
    """The queue columns of a new row: pending, no attempt yet, due at ``now`` (aware UTC)."""
    return {"state": PENDING, "attempts": 0, "next_attempt_at": now}


def arrival_values(*, now: datetime, state: str, error: str | None) -> dict[str, Any]:
    """The queue columns of a new row that may be settled on arrival: :func:`pending_values`, but in ``state``.

    ``state`` is ``pending`` (work to do) or a final state (``ignored``,
    ``dead``: work never to be done); ``error`` is stored as ``last_error``
    (why, or None). ``now`` is aware UTC.
    """
    return {**pending_values(now=now), "state": state, "last_error": error}


# Reopen UPDATEs built once (reopen(..., params=...)), keyed by the identity of what they
# were built from; each entry keeps those objects alive, so an id is never reused for
# another while it is here. Callers pass module-level conditions: a handful of entries.
_PREPARED_REOPENS: dict[tuple[Any, ...], Any] = {}
_PREPARED_REOPENS_MAX = 64


def reopen(
    target: Any,
    *conditions: Any,
    now: datetime,
    params: dict[str, Any] | None = None,
    **values: Any,
) -> int:
    """Put rows back in the queue: pending, attempts from zero, due at ``now`` (aware UTC), no lease.

    Two forms:

    - ``reopen(row, now=now)``: one queue row held as an ORM object, changed
      in place (its ``last_error`` cleared too). Committing it wakes the
      queue's workers (:mod:`app.mechanisms.wakeup`'s after-flush hook).
      Returns 1.
    - ``reopen(session, model, *conditions, now=now, **values)``: every row of
      ``model`` matching ``conditions``, in one UPDATE in ``session``'s
      transaction; ``values`` set more columns. Returns how many rows were
      reopened; the queue's workers are woken
      (:func:`app.mechanisms.wakeup.notify_queued`) only when there was one.
      It runs through the ORM session, so objects of these rows it holds see
      the change. With ``params`` (a dict), ``conditions`` and ``values`` may
      hold ``bindparam()`` s bound from it: the UPDATE is built once per
      process for those condition objects (pass module-level ones, built
      once) and runs as Core on the session's connection, the cheapest way
      for a hot path.

    Raises ``TypeError`` for conditions, ``values`` or ``params`` given with a row.
    """
    if not isinstance(target, Session):
        if conditions or values or params is not None:
            raise TypeError("reopen(row, now=...) takes no conditions, values or params")
        target.state, target.attempts, target.next_attempt_at = PENDING, 0, now
        target.last_error = None
        release_row(target)
        return 1
    session, (model, *where) = target, conditions
    if params is None:
        result = session.execute(_reopen_statement(model, where, now, values))
    else:
        statement = _prepared_reopen(model, where, values)
        result = session.connection().execute(statement, {"reopen_now": now, **params})
    reopened = int(result.rowcount or 0)
    if reopened:
        queue_wakeup.notify_queued(session, model)
    return reopened


def _reopen_statement(model: Any, where: Sequence[Any], now: Any, values: dict[str, Any]) -> Any:
    """The UPDATE of :func:`reopen` for ``model``'s rows matching ``where``, due at ``now``."""
    return (
        update(model)
        .where(*where)
        .values(
            state=PENDING,
            attempts=0,
            next_attempt_at=now,
            locked_until=None,
            locked_by=None,
            **values,
        )
    )


def _prepared_reopen(model: Any, where: Sequence[Any], values: dict[str, Any]) -> Any:
    """:func:`_reopen_statement` due at the bind parameter ``reopen_now``, built once per ``where``/``values``."""
    key = (model, *map(id, where), *((name, id(value)) for name, value in sorted(values.items())))
    statement = _PREPARED_REOPENS.get(key)
    if statement is None:
        if len(_PREPARED_REOPENS) >= _PREPARED_REOPENS_MAX:
            _PREPARED_REOPENS.clear()
        statement = _reopen_statement(model, where, bindparam("reopen_now"), values)
        _PREPARED_REOPENS[key] = statement
    return statement


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


def finish_rows(
    session: Session, rows: Sequence[Any], *, state: str = "done", **values: Any
) -> None:
    """:func:`finish` ``rows`` (ORM objects of one queue model, in ``session``) in ONE UPDATE.

    The set-based form for a batch (the inbox's applied events): one statement by
    id instead of one ORM UPDATE per row at the next flush, then the objects are
    told their new values as committed (nothing left to flush). ``values`` set
    more columns, the same for every row (``processed_at``, ...). Call it as the
    last write of a savepoint's work: if the savepoint rolls back afterwards the
    objects still say finished (expire them). Database errors propagate, with
    the objects unchanged.
    """
    if not rows:
        return
    model = type(rows[0])
    finished = {"state": state, "last_error": None, "locked_by": None, "locked_until": None}
    finished |= values
    ids = [row.id for row in rows]
    session.execute(
        finish_statement(model, model.id.in_(ids), state=state, last_error=None, **values),
        execution_options={"synchronize_session": False},
    )
    for row in rows:
        for key, value in finished.items():
            set_committed_value(row, key, value)


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
