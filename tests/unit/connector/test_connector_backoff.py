"""Full-jitter backoff arithmetic with injected randomness (contract §2).

The policy is tests/unit/test_retry_policy.py.
"""

from __future__ import annotations

import pytest

from connector.backoff import full_jitter_delay


def test_rand_zero_gives_zero() -> None:
    assert full_jitter_delay(5, rand=lambda: 0.0) == 0.0


@pytest.mark.parametrize(("attempt", "ceiling"), [(0, 1.0), (1, 2.0), (3, 8.0), (8, 256.0)])
def test_rand_one_gives_the_exponential_ceiling(attempt: int, ceiling: float) -> None:
    assert full_jitter_delay(attempt, base_s=1.0, cap_s=300.0, rand=lambda: 1.0) == ceiling


@pytest.mark.parametrize("attempt", [9, 20, 10_000])
def test_cap_is_respected(attempt: int) -> None:
    assert full_jitter_delay(attempt, base_s=1.0, cap_s=300.0, rand=lambda: 1.0) == 300.0


def test_delay_scales_with_rand() -> None:
    assert full_jitter_delay(2, base_s=0.5, cap_s=60, rand=lambda: 0.25) == pytest.approx(0.5)


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError):
        full_jitter_delay(-1)
