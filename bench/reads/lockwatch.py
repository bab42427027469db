"""Samples ``pg_stat_activity`` every 50 ms: which sessions of a database wait on a lock.

The target ("no session waits on an advisory or row lock") is judged on heavyweight
``Lock`` waits (advisory, tuple and transaction id: a row; relation, object) other than
``Lock:extend``; the storage's own waits are reported beside it, not as a lock anyone
takes: ``LWLock:WALWrite`` (a commit waiting while another backend flushes the WAL that
holds it too: PostgreSQL's group commit) and ``Lock:extend`` (a backend adding a page
to a table that concurrent INSERTs grow).

A session counts as waiting on a lock when ``wait_event_type`` is ``Lock`` (heavyweight
locks: rows, tables, transaction ids, advisory locks; ``wait_event = 'advisory'`` for
``pg_advisory_xact_lock``) or ``LWLock`` (PostgreSQL's internal light-weight locks, e.g.
``WALWrite`` while another backend flushes the WAL). Each load of the benchmark gets its own
tally (:meth:`LockWatch.begin` / :meth:`LockWatch.end`): samples taken, samples with at least
one waiting session, the most sessions waiting at once, the mean of active and waiting
sessions, and the count per ``type:event``. PostgreSQL only; its own connection, marked with
``application_name`` so that it never counts itself.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text

_QUERY = text("""
SELECT count(*) FILTER (WHERE state = 'active') AS active,
       count(*) FILTER (WHERE wait_event_type IN ('Lock', 'LWLock')) AS waiting,
       count(*) FILTER (WHERE wait_event_type = 'Lock' AND wait_event = 'advisory') AS advisory,
       count(*) FILTER (WHERE wait_event_type = 'Lock' AND wait_event <> 'extend') AS heavyweight,
       array_remove(array_agg(CASE WHEN wait_event_type IN ('Lock', 'LWLock')
                                   THEN wait_event_type || ':' || wait_event END), NULL) AS events
FROM pg_stat_activity
WHERE datname = :db AND backend_type = 'client backend' AND application_name <> :me
""")


@dataclass
class LockTally:
    """What the samples of one load saw (counts of samples and of sessions)."""

    samples: int = 0
    samples_waiting: int = 0
    samples_advisory: int = 0
    samples_heavyweight: int = 0
    max_waiting: int = 0
    waiting_sum: int = 0
    active_sum: int = 0
    events: Counter[str] = field(default_factory=Counter)

    def add(
        self, active: int, waiting: int, advisory: int, events: list[str], heavyweight: int = 0
    ) -> None:
        """Count one sample: sessions active, waiting on any lock (``Lock`` or ``LWLock``),
        on an advisory lock, and on a heavyweight ``Lock`` other than ``extend`` (row:
        tuple or transaction id; advisory; relation, object)."""
        self.samples += 1
        self.active_sum += active
        self.waiting_sum += waiting
        self.max_waiting = max(self.max_waiting, waiting)
        self.samples_waiting += 1 if waiting else 0
        self.samples_advisory += 1 if advisory else 0
        self.samples_heavyweight += 1 if heavyweight else 0
        self.events.update(events)

    def as_json(self) -> dict[str, Any]:
        """The tally for the results file (means per sample; type:event -> sessions seen)."""
        n = max(self.samples, 1)
        return {
            "samples": self.samples,
            "samples_with_lock_wait": self.samples_waiting,
            "samples_with_advisory_wait": self.samples_advisory,
            "samples_with_row_or_advisory_wait": self.samples_heavyweight,
            "max_sessions_waiting": self.max_waiting,
            "mean_sessions_waiting": round(self.waiting_sum / n, 3),
            "mean_sessions_active": round(self.active_sum / n, 3),
            "wait_events": dict(self.events.most_common()),
        }


class LockWatch:
    """A thread sampling every ``interval_s``; the current load's tally gets each sample."""

    def __init__(self, engine: Engine, *, app_name: str, interval_s: float = 0.05) -> None:
        self.engine, self.app_name, self.interval_s = engine, app_name, interval_s
        self._current: tuple[str, LockTally] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        """Start sampling (nothing is counted until :meth:`begin`)."""
        self._thread = threading.Thread(target=self._run, name="lockwatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the sample in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def begin(self, database: str) -> None:
        """Count the samples of ``database`` from now on into a new tally."""
        with self._lock:
            self._current = (database, LockTally())

    def end(self) -> LockTally:
        """Stop counting; returns the tally since :meth:`begin`."""
        with self._lock:
            current, self._current = self._current, None
        return current[1] if current else LockTally()

    def active_sessions(self, database: str) -> int:
        """Sessions of ``database`` running a statement right now (not counting this watcher)."""
        with self.engine.connect() as conn:
            row = conn.execute(_QUERY, {"db": database, "me": self.app_name}).one()
        return int(row.active)

    def _run(self) -> None:
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                while not self._stop.is_set():
                    started = time.monotonic()
                    with self._lock:
                        current = self._current
                    if current is not None:
                        row = conn.execute(_QUERY, {"db": current[0], "me": self.app_name}).one()
                        with self._lock:
                            if self._current is current:
                                current[1].add(
                                    int(row.active),
                                    int(row.waiting),
                                    int(row.advisory),
                                    list(row.events or []),
                                    int(row.heavyweight),
                                )
                    self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        except Exception as exc:  # noqa: BLE001 - reported with the results, never hides a figure
            self.error = f"{type(exc).__name__}: {exc}"
