"""The benchmark's writer processes: history rows appended on an open-loop schedule.

One Python process cannot append 200 transitions/s through the ORM on this
machine while sharing its GIL with the pacing and the bookkeeping (earlier
runs reached 120 to 160/s with 16 threads). So the schedule is split over
``processes`` processes of ``threads`` threads each: tick ``n`` of the phase
is due at ``start + n / rate`` (wall clock, shared by every process) and is
handled by process ``n % processes``; a tick is submitted at its due time
whether or not earlier ones have finished (open loop: a slow commit delays
its own row, never the schedule). Each append is its own transaction through
:func:`app.mechanisms.history.record` (a :func:`~app.mechanisms.history.local`
transition), which stages the event row (and its NOTIFY) the real way.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from app.foundation.db import Database
from app.foundation.models import EventOutbox, Prescription
from app.mechanisms.history import Change, local, record

STATUSES = ("queued", "rejected")


def _phase(
    db: Database,
    ids: list[int],
    *,
    index: int,
    processes: int,
    threads: int,
    start: float,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    committed: dict[str, float] = {}
    late: list[float] = []

    def append(n: int, due: float) -> None:
        pid = ids[(n * 7919) % len(ids)]  # spread over the prescriptions, deterministic
        with db.session() as s:
            # Locked first, as the services do: it serialises a prescription's transitions, so its
            # event ids follow commit order (the publisher's per-prescription order relies on it).
            rx = s.get(Prescription, pid, with_for_update=True)
            record(s, [Change(rx, local(rx, STATUSES[n % 2], source="service"))])
            staged = [o.event_id for o in s.new if isinstance(o, EventOutbox)]
        at = time.time()
        late.append(at - due)
        for event_id in staged:
            committed[event_id] = at

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = []
        for n in range(index, int(rate * seconds), processes):
            due = start + n / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(append, n, due))
        for future in futures:
            future.result()
    return {"committed": committed, "late_s": late}


def serve(
    url: str, ids: list[int], index: int, processes: int, threads: int, pipe: Connection
) -> None:
    """Child process: answer ``("run", start, rate, seconds)`` with the phase's commits; ``"stop"`` ends it.

    The answer is ``{"committed": {event_id: commit time (epoch s)}, "late_s":
    [commit time minus due time, per append]}``.
    """
    db = Database(url)
    pipe.send("ready")
    try:
        while True:
            command = pipe.recv()
            if command == "stop":
                return
            _, start, rate, seconds = command
            pipe.send(
                _phase(
                    db,
                    ids,
                    index=index,
                    processes=processes,
                    threads=threads,
                    start=start,
                    rate=rate,
                    seconds=seconds,
                )
            )
    finally:
        db.dispose()
