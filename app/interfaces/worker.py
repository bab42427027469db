"""The worker loop: dispatch outbox rows and apply inbox events until told to stop.

Run as ``flask --app app worker``; run as many processes or pods as needed.
SIGTERM or SIGINT stops it cleanly: the current job finishes, and rows
claimed but not started go back to the queue.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

from app.mechanisms import wakeup as queue_wakeup
from app.mechanisms.runtime import Runtime
from app.services.connector_factory import make_client
from app.services.dispatch import Dispatcher
from webhooks.processing import InboxProcessor

log = logging.getLogger("app.interfaces.worker")


def worker_id() -> str:
    """Return a unique id for this process: ``<host>:<pid>``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def build_inbox_processor(svc: Runtime, *, wid: str | None = None) -> InboxProcessor:
    """The inbox processor with the settings' batch and retry policy (``INBOX_*``)."""
    s = svc.settings
    return InboxProcessor(
        svc.db,
        worker_id=wid or worker_id(),
        batch=s.inbox_batch,  # one transaction per batch: no outbound calls here
        max_attempts=s.inbox_max_attempts,
        base_s=s.inbox_backoff_base_s,
        cap_s=s.inbox_backoff_cap_s,
    )


def build_worker(svc: Runtime, *, dispatch: bool = True, inbox: bool = True) -> WorkerLoop:
    """Wire a :class:`WorkerLoop` from ``svc``: a dispatcher and/or an inbox processor.

    Raises :class:`app.foundation.errors.Misconfigured` (e.g. a malformed
    ``ERX_ENCRYPTION_KEYS``) before anything runs.
    """
    wid = worker_id()
    dispatcher = (
        Dispatcher(svc.db, svc.settings, make_client(svc.settings), worker_id=wid)
        if dispatch
        else None
    )
    processor = build_inbox_processor(svc, wid=wid) if inbox else None
    stop = threading.Event()
    return WorkerLoop(
        dispatcher,
        processor,
        poll_s=svc.settings.worker_poll_s,
        stop=stop,
        waiter=build_waiter(svc, stop, dispatch=dispatch, inbox=inbox),
    )


def build_waiter(
    svc: Runtime, stop: threading.Event, *, dispatch: bool, inbox: bool
) -> queue_wakeup.PollWaiter | queue_wakeup.WakeupWaiter:
    """How an idle worker waits: ``LISTEN`` on its queues' channels, or a plain poll (``WORKER_WAKEUP``)."""
    channels = [queue_wakeup.OUTBOX_CHANNEL] * dispatch + [queue_wakeup.INBOX_CHANNEL] * inbox
    return queue_wakeup.waiter_for(svc.settings.worker_wakeup, svc.db.engine, channels, stop)


class WorkerLoop:
    """Alternates dispatch and inbox batches; when idle, waits up to ``poll_s`` seconds.

    ``waiter`` does the waiting: :class:`app.mechanisms.wakeup.WakeupWaiter` returns
    as soon as a queue row is committed (PostgreSQL), the default
    :class:`app.mechanisms.wakeup.PollWaiter` simply sleeps. A batch closes when it
    is full or the queue has nothing more due, never on a fixed cadence.
    """

    def __init__(
        self,
        dispatcher: Dispatcher | None,
        inbox: InboxProcessor | None,
        *,
        poll_s: float,
        stop: threading.Event | None = None,
        waiter: queue_wakeup.PollWaiter | queue_wakeup.WakeupWaiter | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.inbox = inbox
        self.poll_s = poll_s
        self.stop = stop or threading.Event()
        self.waiter = waiter or queue_wakeup.PollWaiter(self.stop)

    def request_stop(self) -> None:
        """Ask the loop to stop: the current job finishes, an idle wait ends at once."""
        self.stop.set()
        self.waiter.interrupt()

    def install_signal_handlers(self) -> None:
        """Make SIGTERM and SIGINT request a clean stop."""

        def _stop(signum: int, _frame: object) -> None:
            log.info("signal %s: finishing the current job, then stopping", signum)
            self.request_stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)

    def run_once(self) -> int:
        """Run one dispatch batch and one inbox batch; returns rows handled."""
        stopping: Callable[[], bool] = self.stop.is_set
        handled = 0
        if self.dispatcher is not None:
            handled += self.dispatcher.run_batch(stopping)
        if self.inbox is not None and not self.stop.is_set():
            handled += self.inbox.run_batch(stopping)
        return handled

    def run(self, *, max_seconds: float | None = None, until_idle: bool = False) -> None:
        """Loop until stopped, ``max_seconds`` elapse, or (``until_idle``) nothing is due."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.waiter.wait(
            0.0
        )  # LISTEN before the first batch: nothing committed after it goes unheard
        log.info("worker started: wake-up by %s", self.waiter.mode)
        try:
            self._loop(deadline, until_idle=until_idle)
        finally:
            self.waiter.close()
        log.info("worker stopped")

    def _loop(self, deadline: float | None, *, until_idle: bool) -> None:
        while not self.stop.is_set():
            try:
                handled = self.run_once()
            except Exception as exc:  # noqa: BLE001 - e.g. the database restarting: back off, go on
                log.error("worker batch failed: %s", type(exc).__name__)
                handled = 0
                self.stop.wait(min(5.0, self.poll_s * 4))
            if until_idle and handled == 0:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if handled == 0:
                self.waiter.wait(self.poll_s)
