"""Auto mode: walks each newly issued prescription through its lifecycle (contract §6).

issued -> signed -> printed -> dispensed, one step every ``auto_delay_s``
seconds; with probability ``auto_skip_printed_rate`` the pharmacy dispenses
straight from signed. Only prescriptions issued while ``auto`` is on are walked;
one voided in the meantime simply stops.
"""

from __future__ import annotations

import logging
import random
import threading

from sandbox import lifecycle
from sandbox.clock import Clock
from sandbox.control import Controls
from sandbox.store import InvalidTransition, Store, UnknownPrescription

log = logging.getLogger(__name__)


class Autopilot:
    """Schedules and performs automatic lifecycle steps.

    ``schedule(id)`` registers a new prescription; ``tick()`` performs every step
    due at the clock's current time (tests call it directly); ``start()`` runs
    ``tick`` on a background thread every ``poll_s`` seconds of real time.
    """

    def __init__(
        self,
        *,
        store: Store,
        controls: Controls,
        clock: Clock,
        rng: random.Random,
        poll_s: float = 0.05,
    ) -> None:
        self._store = store
        self._controls = controls
        self._clock = clock
        self._rng = rng
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._due: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def schedule(self, prescription_id: str) -> None:
        """Walk this prescription, first step ``auto_delay_s`` seconds from now."""
        due = self._clock() + self._controls.current().auto_delay_s
        with self._lock:
            self._due[prescription_id] = due

    def reset(self) -> None:
        """Forget every scheduled prescription."""
        with self._lock:
            self._due.clear()

    def tick(self) -> int:
        """Perform each due step (at most one per prescription); returns how many."""
        controls = self._controls.current()
        if not controls.auto:
            return 0
        now = self._clock()
        with self._lock:
            ready = [rx_id for rx_id, due in self._due.items() if due <= now]
            for rx_id in ready:
                del self._due[rx_id]
        steps = 0
        for rx_id in ready:
            rx = self._store.get(rx_id)
            if rx is None or lifecycle.is_final(rx.status):
                continue
            target = self._next_status(rx.status, controls.auto_skip_printed_rate)
            try:
                change = self._store.transition(rx_id, target, now=now)
            except (InvalidTransition, UnknownPrescription):
                continue
            steps += 1
            if not lifecycle.is_final(change.status):
                with self._lock:
                    self._due[rx_id] = now + controls.auto_delay_s
        return steps

    def _next_status(self, current: str, skip_printed_rate: float) -> str:
        if current == lifecycle.ISSUED:
            return lifecycle.SIGNED
        if current == lifecycle.SIGNED and self._rng.random() >= skip_printed_rate:
            return lifecycle.PRINTED
        return lifecycle.DISPENSED

    def start(self) -> None:
        """Run ``tick`` in a daemon thread until ``stop``."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sandbox-autopilot", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the background thread (waits up to ``timeout_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                self.tick()
            except Exception:  # keep auto mode alive whatever one step does
                log.exception("autopilot step failed")
