"""Storing one verified delivery in the webhook inbox: one statement, built once, its own commit.

The receiver's hot path (webhooks/routes.py). The statement is Core, built once
per dialect, and committed on its own (one round trip on PostgreSQL:
:func:`app.foundation.db.single_statement`). On PostgreSQL a pending row also wakes the
inbox workers, at most once per window per process
(:class:`app.mechanisms.wakeup.WakeupCoalescer`: every ``NOTIFY`` serialises commits).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import literal_column
from sqlalchemy.exc import SQLAlchemyError

from app.foundation.db import Database, insert_ignore_statement, single_statement
from app.foundation.models import WebhookInbox
from app.mechanisms.queue import arrival_values, wakeup_sql
from webhooks.events import Envelope


class Wakeups(Protocol):
    """The process's wake-up coalescer (``app.mechanisms.wakeup.WakeupCoalescer``), as used here."""

    def claim(self) -> int | None: ...
    def settle(self, ticket: int) -> None: ...
    def owe(self) -> None: ...


class InboxUnavailable(RuntimeError):
    """The inbox could not be written (database down, pool exhausted): the platform must retry."""


_STORE: dict[tuple[str, bool], Any] = {}


def _store_statement(dialect: str, *, wake: bool) -> Any:
    """The receipt INSERT for ``dialect``, built once; with ``wake`` it wakes the inbox workers.

    ``RETURNING pg_notify(...)`` runs only for a row actually inserted (not a
    duplicate) and is delivered when the insert commits: one round trip, no
    extra statement (app/mechanisms/wakeup.py).
    """
    stmt = _STORE.get((dialect, wake))
    if stmt is None:
        # inline(): only the row count is needed, so SQLAlchemy must not fetch the new id
        # (without RETURNING it would run `SELECT nextval(...)` first: a round trip).
        stmt = insert_ignore_statement(dialect, WebhookInbox.__table__).inline()
        if wake:
            stmt = stmt.returning(literal_column(wakeup_sql(WebhookInbox)))
        _STORE[(dialect, wake)] = stmt
    return stmt


def store_event(
    db: Database,
    env: Envelope,
    raw: bytes,
    signature: str | None,
    *,
    now: datetime,
    wakeups: Wakeups | None,
) -> bool:
    """Insert the delivery ``raw`` (bytes as signed, ``signature``) unless its event id is known.

    ``env`` is the envelope read from ``raw``; ``now`` the receipt time (aware
    UTC); ``wakeups`` the process's wake-up coalescer, or None where nobody
    listens (SQLite, poll mode). Returns True when a row was inserted, False
    for a duplicate event id. Raises :class:`InboxUnavailable` when the row
    could not be committed.
    """
    pending = env.state == "pending"
    # Only a pending event is work. A ticket means "notify in this INSERT"; without one the
    # row is announced after its commit (owe).
    wakeups = wakeups if pending else None
    ticket = wakeups.claim() if wakeups is not None else None
    values = {
        "event_id": env.event_id,
        "event_type": env.event_type,
        "platform_token": env.platform_token,
        "body": raw,
        "signature": signature,
        **arrival_values(now=now, state=env.state, error=env.error),
        "received_at": now,
        "processed_at": None if pending else now,
        "awaiting_prescription": False,
    }
    try:
        with single_statement(db.engine) as conn:
            statement = _store_statement(db.engine.dialect.name, wake=ticket is not None)
            result = conn.execute(statement, values)
            inserted = bool(result.rowcount)
            result.close()
    except SQLAlchemyError as exc:
        raise InboxUnavailable(type(exc).__name__) from None
    if inserted and wakeups is not None:
        if ticket is not None:
            wakeups.settle(ticket)  # this commit notified: the rows owed before are announced
        else:
            wakeups.owe()  # committed without a notification: one follows
    return inserted
