"""Wake idle workers when a queue row is committed, instead of waiting for the next poll.

On PostgreSQL, committing a due ``pending`` row of the dispatch outbox, the
webhook inbox or the event outbox (a status event staged with its history
row) also sends ``NOTIFY`` on that queue's channel, in the same
transaction (PostgreSQL delivers it only if, and when, the transaction
commits; https://www.postgresql.org/docs/current/sql-notify.html). A worker
``LISTEN``s on a dedicated connection and waits with ``select()`` on its
socket, the poll interval as the timeout: a notification wakes it at once,
and the poll still finds what no notification announced (retries coming due,
rows written by hand). SQLite has no NOTIFY: there, and behind a pooler in
transaction mode (which cannot hold a ``LISTEN`` session), workers poll.

``WORKER_WAKEUP`` chooses, for the workers and the event publisher alike:
``notify`` (the default on PostgreSQL) or ``poll`` (the only mode on SQLite).

Sending is wired once, as a session event (:func:`install`): any ORM flush
that inserts a pending queue row or moves one back to ``pending``
(``queue_send``, :func:`app.mechanisms.queue.reopen`, replay) adds one
``pg_notify`` to its transaction. The webhook receiver, which writes with
Core, folds the notification into its INSERT (:func:`notify_sql`); the
set-based history append (:func:`app.mechanisms.history.record`, for a batch) calls
:func:`notify_queued` after its Core INSERT of event rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session, attributes

from app.foundation.db import single_statement
from app.foundation.models import DispatchOutbox, EventOutbox, WebhookInbox

log = logging.getLogger("app.mechanisms.wakeup")

OUTBOX_CHANNEL = "erx_dispatch_outbox"
INBOX_CHANNEL = "erx_webhook_inbox"
EVENTS_CHANNEL = "erx_event_outbox"
CHANNELS: dict[type, str] = {
    DispatchOutbox: OUTBOX_CHANNEL,
    WebhookInbox: INBOX_CHANNEL,
    EventOutbox: EVENTS_CHANNEL,
}
MODES = ("notify", "poll")

_NOTIFIED_KEY = "queue_wakeup.notified"


def resolve_mode(setting: str, *, dialect: str) -> str:
    """Return the wake-up mode to use: ``notify`` or ``poll``.

    ``setting`` is ``WORKER_WAKEUP`` (``""``/``auto``, ``notify`` or ``poll``);
    ``dialect`` the engine's dialect name. Anything but PostgreSQL polls.
    Raises ValueError for an unknown setting.
    """
    wanted = (setting or "auto").strip().lower()
    if wanted not in (*MODES, "auto"):
        raise ValueError(f"WORKER_WAKEUP must be notify, poll or auto, not {setting!r}")
    if dialect != "postgresql":
        return "poll"
    return "poll" if wanted == "poll" else "notify"


def waiter_for(
    setting: str, engine: Any, channels: Iterable[str], stop: threading.Event
) -> PollWaiter | WakeupWaiter:
    """How an idle worker waits on ``channels``: a :class:`WakeupWaiter`, or a :class:`PollWaiter`.

    ``setting`` is ``WORKER_WAKEUP`` (see :func:`resolve_mode`); ``engine`` the
    SQLAlchemy engine whose dialect decides and whose database is listened to.
    Raises ValueError for an unknown setting.
    """
    if resolve_mode(setting, dialect=engine.dialect.name) == "poll":
        return PollWaiter(stop)
    return WakeupWaiter(engine, channels, stop)


def notify_sql(channel: str) -> str:
    """The SQL expression that notifies ``channel`` (PostgreSQL), for a RETURNING clause or a SELECT."""
    return f"pg_notify('{channel}', '')"


def _queued_channels(session: Session) -> set[str]:
    """Channels whose queue got a row that is pending now (new, or moved back to pending) in this flush."""
    channels: set[str] = set()
    for obj in session.new:
        channel = CHANNELS.get(type(obj))
        if channel is not None and getattr(obj, "state", None) == "pending":
            channels.add(channel)
    for obj in session.dirty:
        channel = CHANNELS.get(type(obj))
        if channel is None or channel in channels or obj.state != "pending":
            continue
        # A lease stamped on an already pending row (a claim) is not news: only a state change is.
        if attributes.get_history(obj, "state").added:
            channels.add(channel)
    return channels


def _after_flush(session: Session, _flush_context: Any) -> None:
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    channels = _queued_channels(session)
    if not channels:
        return
    transaction = session.get_transaction()
    done = session.info.get(_NOTIFIED_KEY)
    if done is None or done[0] is not transaction:
        done = session.info[_NOTIFIED_KEY] = (transaction, set())
    # Inside a savepoint a notification can be rolled back with it: send again next time.
    remember = not session.in_nested_transaction()
    for channel in sorted(channels - done[1]):
        # Same transaction as the row: delivered on commit, dropped on rollback.
        session.connection().execute(text(f"SELECT {notify_sql(channel)}"))
        if remember:
            done[1].add(channel)


_installed = threading.Lock()
_done = False


def install() -> None:
    """Register the after-flush hook on every ORM session (idempotent)."""
    global _done
    with _installed:
        if not _done:
            event.listen(Session, "after_flush", _after_flush)
            _done = True


def notify_queued(session: Session, model: Any) -> None:
    """Notify ``model``'s queue channel in ``session``'s transaction (PostgreSQL; no-op elsewhere).

    For Core statements the after-flush hook cannot see (:func:`app.mechanisms.queue.reopen`,
    the event rows of a batch in :func:`app.mechanisms.history.record`).
    """
    channel = CHANNELS.get(model)
    if channel is not None and session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SELECT {notify_sql(channel)}"))


class WakeupCoalescer:
    """At most one ``NOTIFY`` per ``window_s`` from this process, and no commit left unannounced.

    PostgreSQL serialises the commits of all transactions that sent ``NOTIFY``: each
    takes one database-wide lock before committing and holds it through its commit's
    WAL flush (``PreCommit_Notify`` in src/backend/commands/async.c, "serialize
    writers ... hold till after commit"), so notifying every webhook receipt stops
    concurrent receipts from sharing a WAL flush. The receiver therefore asks
    :meth:`claim` before its INSERT. A ticket (no notification from this process for
    ``window_s``) means "notify in this statement", and once that INSERT committed
    its notification the receiver calls :meth:`settle` with it: rows owed before the
    claim committed before that notification, so they are announced. Otherwise
    (None) it inserts without notifying and, once the row is committed, calls
    :meth:`owe`. What is still owed ``2 * window_s`` after the last notification
    is sent by a daemon thread through ``send`` (its own transaction; started by
    :meth:`owe` when none runs, ending after 30 s with nothing owed). So every
    committed row is announced by a notification committed after it, at most
    ``2 * window_s`` seconds later; under load a later receipt's INSERT carries it.
    An owed notification lost at process exit only delays the row until the
    workers' next poll (``WORKER_POLL_S``).

    ``send``: callable that commits one notification, errors are logged and
    dropped (the poll covers them); ``clock``: monotonic seconds (injectable);
    ``start_thread=False`` leaves sending to explicit :meth:`flush` calls (tests).
    """

    def __init__(
        self,
        send: Callable[[], None],
        *,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        start_thread: bool = True,
    ) -> None:
        self.send = send
        self.window_s = window_s
        self.clock = clock
        self.start_thread = start_thread
        self._cond = threading.Condition(threading.Lock())
        self._last: float | None = None
        self._owed = False
        self._owe_seq = 0
        self._thread: threading.Thread | None = None

    def claim(self) -> int | None:
        """A ticket (int) if the caller should notify in its own statement now, else None."""
        with self._cond:
            now = self.clock()
            if self._last is None or now - self._last >= self.window_s:
                self._last = now
                return self._owe_seq
            return None

    def settle(self, ticket: int) -> None:
        """The statement of :meth:`claim`'s ``ticket`` committed a notification: what was owed before is paid."""
        with self._cond:
            if self._owe_seq == ticket:
                self._owed = False

    def owe(self) -> None:
        """Record that a row was committed without a notification: one will follow."""
        with self._cond:
            self._owe_seq += 1
            if self._owed:
                return
            self._owed = True
            if self.start_thread and (self._thread is None or not self._thread.is_alive()):
                # Started here, not in __init__: after gunicorn forks, in the process that sends.
                self._thread = threading.Thread(
                    target=self._run, name="erx-notify-coalescer", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def due_in(self) -> float | None:
        """Seconds until the background send of what is owed (<= 0: now), or None if nothing is owed."""
        with self._cond:
            return self._due_in_locked()

    def _due_in_locked(self) -> float | None:
        if not self._owed:
            return None
        return 0.0 if self._last is None else self._last + 2 * self.window_s - self.clock()

    def flush(self) -> bool:
        """Send the owed notification if it is due; returns True if one was sent."""
        with self._cond:
            due = self._due_in_locked()
            if due is None or due > 0:
                return False
            self._owed = False
            self._last = self.clock()
        self._send()
        return True

    def _send(self) -> None:
        try:
            self.send()
        except Exception as exc:  # noqa: BLE001 - the workers' poll finds the row anyway
            log.warning("queue wake-up not sent: %s", type(exc).__name__)

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._due_in_locked()
                while due is None or due > 0:
                    if due is None and not self._cond.wait(_IDLE_EXIT_S):
                        if not self._owed:  # idle: end; the next owe() starts a new thread
                            self._thread = None
                            return
                    elif due is not None:
                        self._cond.wait(due)  # until the window ends
                    due = self._due_in_locked()
                self._owed = False
                self._last = self.clock()
            self._send()


_IDLE_EXIT_S = 30.0


RECEIPT_NOTIFY_WINDOW_S = 0.01
"""The receiver's :class:`WakeupCoalescer` window: at most 100 inbox notifications a second
per web process, each row announced within 20 ms of its commit."""


def receipt_wakeups(engine: Any, setting: str) -> WakeupCoalescer | None:
    """The webhook receiver's coalescer for the inbox channel, or None when nobody listens.

    ``engine``: the app's engine; ``setting``: ``WORKER_WAKEUP``. None on SQLite and
    in poll mode (:func:`resolve_mode`). Its ``send`` commits ``SELECT pg_notify`` on
    a pooled connection, in one round trip (:func:`app.foundation.db.single_statement`).
    """
    if resolve_mode(setting, dialect=engine.dialect.name) != "notify":
        return None
    sql = f"SELECT {notify_sql(INBOX_CHANNEL)}"

    def send() -> None:
        with single_statement(engine) as conn:
            conn.exec_driver_sql(sql).close()

    return WakeupCoalescer(send, window_s=RECEIPT_NOTIFY_WINDOW_S)


class PollWaiter:
    """Waits ``timeout_s`` seconds or until ``stop`` is set: the poll mode."""

    mode = "poll"

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def listen(self) -> None:
        """Nothing to open: polling needs no connection."""

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s`` seconds; returns True if stopping."""
        return self.stop.wait(timeout_s)

    def interrupt(self) -> None:
        """Nothing to do: :meth:`wait` returns as soon as ``stop`` is set."""

    def close(self) -> None:
        """Nothing to release."""


class WakeupWaiter:
    """``LISTEN``s on ``channels`` over a dedicated psycopg2 connection; :meth:`wait` returns on a notification.

    ``engine`` is a PostgreSQL SQLAlchemy engine; the listening connection is
    taken from its dialect (not from the pool: it stays in autocommit for
    the worker's life). If the connection breaks, the waiter falls back to
    polling and reconnects on the next wait.
    """

    mode = "notify"

    def __init__(self, engine: Any, channels: Iterable[str], stop: threading.Event) -> None:
        self.engine = engine
        self.channels = tuple(channels)
        self.stop = stop
        self._conn: Any = None
        # A self-pipe, so that a stop request ends a select() at once (safe from a signal handler).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def _connect(self) -> Any:
        raw = self.engine.raw_connection()
        # Detach the DBAPI connection from the pool: it is ours until close().
        raw.detach()
        conn = raw.dbapi_connection
        conn.autocommit = True
        with conn.cursor() as cur:
            for channel in self.channels:
                cur.execute(f"LISTEN {channel}")
        return conn

    def listen(self) -> None:
        """Open the listening connection now (so that nothing committed after this is missed)."""
        if self._conn is None:
            self._conn = self._connect()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for a notification; returns True if stopping.

        Pending notifications are drained, so a burst of commits wakes the
        worker once. A broken connection degrades to a plain sleep this time.
        """
        if self.stop.is_set():
            return True
        try:
            self.listen()
            conn = self._conn
            conn.poll()
            if not conn.notifies and not self.stop.is_set():
                ready, _, _ = select.select([conn, self._wake_r], [], [], timeout_s)
                if self._wake_r in ready:
                    self._drain_pipe()
                conn.poll()
            conn.notifies.clear()
        except Exception as exc:  # noqa: BLE001 - the database restarting: poll, reconnect next time
            log.warning("wake-up listener lost: %s; polling", type(exc).__name__)
            self.close()
            return self.stop.wait(timeout_s)
        return self.stop.is_set()

    def interrupt(self) -> None:
        """End a :meth:`wait` in progress now (call after setting ``stop``; async-signal-safe)."""
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # the pipe is full: a wake-up is already pending
            pass

    def _drain_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Close the listening connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already gone
                conn.close()
