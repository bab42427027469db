"""Time for the sandbox: an injectable clock, a fake one for tests, and formatting.

Every timestamp inside the sandbox is Unix seconds (UTC) as a float, read from a
``Clock`` (a zero-argument callable). Wire timestamps are ISO 8601 UTC with a
``Z`` suffix at second resolution, as in the contract's examples (§4, §7).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]
"""Returns the current time as Unix seconds (UTC)."""

Sleep = Callable[[float], None]
"""Blocks for the given number of seconds (``time.sleep`` in production)."""


def iso_utc(timestamp: float) -> str:
    """Format Unix seconds as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds)."""
    return datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeClock:
    """A manually advanced clock for tests.

    Call it to read the time (Unix seconds); ``advance(seconds)`` moves it
    forward. Passing ``fake.sleep`` as the sandbox's ``sleep`` makes every
    injected sleep advance the clock instead of blocking.
    """

    def __init__(self, start: float = 1_763_634_902.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (must be >= 0)."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the requested sleep and advance the clock by it, without blocking."""
        self.sleeps.append(seconds)
        self.advance(seconds)
