"""A thread-safe circuit breaker with a public state: closed, open, half-open.

The decisions (what counts as a failure, how many open the circuit, how long
it stays open) are the dispatch worker's; this module only keeps the state.
Unlike pybreaker 1.4, whose ``call`` holds one lock for the whole guarded call
(threads sharing a breaker would send one at a time), the lock here is held
only to decide whether a call may go and to record its result, so several
send threads call through one breaker at once.

- closed: calls go; ``fail_max`` consecutive counted failures open the circuit.
- open: calls are refused (:class:`CircuitOpen`) until ``reset_timeout_s``
  seconds have passed on ``clock``; then the breaker is half-open.
- half-open: one trial call at a time; its success closes the circuit, its
  counted failure opens it again for another ``reset_timeout_s``.

An error that does not count (``counts(exc)`` false: the platform answered, it
just said no) is a sign of health and is treated like a success.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class BreakerState(enum.Enum):
    """The state of a :class:`CircuitBreaker`; ``value`` is the name shown to operators."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitOpen(RuntimeError):
    """The breaker refused a call: the circuit is open, or a half-open trial is in flight."""


class BreakerListener(Protocol):
    """Told of every state change (metrics); runs with the breaker's lock held: keep it short."""

    def __call__(self, old: BreakerState, new: BreakerState) -> None: ...


class CircuitBreaker:
    """See the module docs. Thread-safe; every option is keyword-only.

    ``fail_max``: consecutive counted failures that open the circuit (>= 1);
    ``reset_timeout_s``: seconds the circuit stays open before a trial call;
    ``counts``: whether an exception counts as a failure (default: all);
    ``clock``: monotonic seconds (injectable so tests don't sleep);
    ``listeners``: called as ``listener(old, new)`` on each state change.
    Raises ValueError for ``fail_max < 1`` or a negative ``reset_timeout_s``.
    """

    def __init__(
        self,
        *,
        fail_max: int,
        reset_timeout_s: float,
        counts: Callable[[BaseException], bool] = lambda exc: True,
        clock: Callable[[], float] = time.monotonic,
        listeners: Sequence[BreakerListener] = (),
    ) -> None:
        if fail_max < 1:
            raise ValueError("fail_max must be at least 1")
        if reset_timeout_s < 0:
            raise ValueError("reset_timeout_s must not be negative")
        self.fail_max = fail_max
        self.reset_timeout_s = reset_timeout_s
        self._counts = counts
        self._clock = clock
        self._listeners = tuple(listeners)
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The current state (an open circuit past its timeout reads open until the next call)."""
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive counted failures since the circuit last closed or a call succeeded."""
        return self._failures

    def open(self) -> None:
        """Open the circuit now (also for operators and tests)."""
        with self._lock:
            self._open()

    def close(self) -> None:
        """Close the circuit now and forget the failures."""
        with self._lock:
            self._failures = 0
            self._set(BreakerState.CLOSED)

    def call(self, func: Callable[..., T], *args: object) -> T:
        """Run ``func(*args)`` if the breaker lets it through; returns its result.

        Raises :class:`CircuitOpen` when the call may not go; otherwise
        whatever ``func`` raises (after recording it).
        """
        trial = self._admit()
        try:
            result = func(*args)
        except BaseException as exc:
            self._record(trial, failed=self._counts(exc))
            raise
        self._record(trial, failed=False)
        return result

    def _admit(self) -> bool:
        """Whether the call may go (else :class:`CircuitOpen`); True for the half-open trial."""
        with self._lock:
            if self._state is BreakerState.OPEN:
                if self._clock() < self._opened_at + self.reset_timeout_s:
                    raise CircuitOpen("the circuit breaker is open")
                self._set(BreakerState.HALF_OPEN)
            if self._state is BreakerState.HALF_OPEN:
                if self._trial_in_flight:
                    raise CircuitOpen("a trial call is in flight, the circuit breaker is half-open")
                self._trial_in_flight = True
                return True
            return False

    def _record(self, trial: bool, *, failed: bool) -> None:
        with self._lock:
            if trial:
                self._trial_in_flight = False
            if not failed:
                self._failures = 0
                if trial:
                    self._set(BreakerState.CLOSED)
                return
            self._failures += 1
            if trial or self._failures >= self.fail_max:
                self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(BreakerState.OPEN)

    def _set(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new:
            for listener in self._listeners:
                listener(old, new)
