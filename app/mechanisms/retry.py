"""The one retry policy of every queue (dispatch outbox, webhook inbox): how long to wait.

Full-jitter exponential backoff (the arithmetic is
:func:`connector.backoff.full_jitter_delay`, AWS's "full jitter"), never
sooner than the platform's ``Retry-After`` (contract §2) but never longer than
``max_delay_s`` either (a ``Retry-After`` of a year is taken as ``max_delay_s``),
and the circuit breaker's wait. Randomness is injected (``rand``), so tests pin
it and never sleep. Whether a row retries or goes ``dead`` is decided by
:func:`app.mechanisms.queue.retry_or_dead`, which asks this policy for the delay.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from connector.backoff import full_jitter_delay

# A Retry-After beyond a day is taken as a day: a platform asking for longer is
# misconfigured, and a row parked for weeks would look lost to an operator.
DEFAULT_MAX_DELAY_S = 86400.0


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again after a failed attempt.

    ``base_s``: backoff ceiling of the first retry, seconds; ``cap_s``: the
    jitter ceiling never exceeds it, seconds; ``max_attempts``: attempts
    before the row is dead; ``floor_s``: no retry sooner than this, seconds;
    ``max_delay_s``: no wait (``Retry-After`` included) longer than this,
    seconds; ``rand``: returns a float in [0, 1).
    """

    base_s: float
    cap_s: float
    max_attempts: int
    floor_s: float = 0.0
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def delay_s(self, attempts: int, *, retry_after_s: float | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1 for the first failure).

        Full jitter over ``base_s * 2**(attempts-1)`` capped at ``cap_s``,
        raised to ``retry_after_s`` when the platform asked for longer (§2),
        raised to ``floor_s``, and finally capped at ``max_delay_s``.
        Raises ValueError when ``attempts`` < 1.
        """
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        delay = full_jitter_delay(
            attempts - 1, base_s=self.base_s, cap_s=self.cap_s, rand=self.rand
        )
        if retry_after_s is not None and retry_after_s > delay:
            delay = float(retry_after_s)
        return min(max(delay, self.floor_s), self.max_delay_s)

    def breaker_wait_s(self, reset_s: float) -> float:
        """Seconds to park a row while the circuit breaker is open: half to all of ``reset_s``.

        Jittered so that rows parked together do not all knock at once when
        the breaker lets a trial call through (half-open).
        """
        return min(reset_s * (0.5 + self.rand() / 2), self.max_delay_s)

    def exhausted(self, attempts: int) -> bool:
        """True when ``attempts`` attempts used the budget up: the row goes dead."""
        return attempts >= self.max_attempts
