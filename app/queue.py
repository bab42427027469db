"""Claiming work from a table-backed queue (the dispatch outbox and the webhook inbox).

A claim is one short transaction: pick due rows with ``FOR UPDATE SKIP LOCKED``
(PostgreSQL; SQLite serialises writers instead), stamp them with a lease
(``locked_until``) and the worker's id, commit. No transaction stays open while
the work runs; a crashed worker's rows come back when its lease ends.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update

from app.db import Database


def claim(
    db: Database,
    model: Any,
    *,
    worker_id: str,
    now: datetime,
    lease_s: float,
    limit: int,
) -> list[int]:
    """Lease up to ``limit`` due ``pending`` rows of ``model`` to ``worker_id``.

    ``model`` has ``state``, ``next_attempt_at``, ``locked_until`` and
    ``locked_by`` columns. ``now`` is aware UTC; the lease lasts ``lease_s``
    seconds. Returns the claimed ids, oldest due first.
    """
    with db.session() as session:
        query = (
            select(model.id)
            .where(
                model.state == "pending",
                model.next_attempt_at <= now,
                or_(model.locked_until.is_(None), model.locked_until < now),
            )
            .order_by(model.next_attempt_at, model.id)
            .limit(limit)
        )
        if db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        if ids:
            session.execute(
                update(model)
                .where(model.id.in_(ids))
                .values(locked_until=now + timedelta(seconds=lease_s), locked_by=worker_id)
            )
    return ids


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
