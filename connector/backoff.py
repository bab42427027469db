"""Backoff arithmetic: AWS-style "full jitter" exponential backoff (contract §2).

The connector itself never sleeps and never resends an issue. This is only the
arithmetic; the retry policy (caps, ``Retry-After``, the breaker's wait,
attempts) is the service's, in :mod:`app.mechanisms.retry`.
Randomness is injected so that tests can pin it, as stripe-python does.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["full_jitter_delay"]

# 2**64 seconds is far beyond any cap; bounding the exponent avoids float overflow
# for absurd attempt numbers.
_MAX_EXPONENT = 64


def full_jitter_delay(
    attempt: int,
    *,
    base_s: float = 1.0,
    cap_s: float = 300.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number ``attempt``: ``rand() * min(cap_s, base_s * 2**attempt)``.

    Args:
        attempt: 0 for the first retry, 1 for the second, ...
        base_s: delay ceiling for attempt 0, seconds.
        cap_s: the ceiling never exceeds this, seconds.
        rand: returns a float in [0, 1); values outside are clamped.

    Returns:
        Seconds to wait, in ``[0, min(cap_s, base_s * 2**attempt)]``.

    Raises:
        ValueError: ``attempt`` is negative or ``base_s``/``cap_s`` is negative.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if base_s < 0 or cap_s < 0:
        raise ValueError("base_s and cap_s must be >= 0")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, _MAX_EXPONENT))
    fraction = min(1.0, max(0.0, rand()))
    return fraction * ceiling
