"""The one retry policy (app/mechanisms/retry.py) of every queue: jitter, cap, Retry-After, breaker wait."""

from __future__ import annotations

import pytest

from app.mechanisms.retry import DEFAULT_MAX_DELAY_S, RetryPolicy


def policy(rand: float, **options: float) -> RetryPolicy:
    values: dict = {"base_s": 1.0, "cap_s": 300.0, "max_attempts": 8, **options}
    return RetryPolicy(rand=lambda: rand, **values)


@pytest.mark.parametrize(
    ("attempts", "ceiling"), [(1, 1.0), (2, 2.0), (4, 8.0), (9, 256.0), (10, 300.0)]
)
def test_full_jitter_ceiling_doubles_per_attempt_up_to_the_cap(
    attempts: int, ceiling: float
) -> None:
    assert policy(1.0).delay_s(attempts) == ceiling


def test_jitter_comes_from_the_injected_random_source() -> None:
    assert policy(0.0).delay_s(5) == 0.0
    assert policy(0.25).delay_s(3) == pytest.approx(1.0)


def test_retry_after_is_a_floor_even_beyond_the_jitter_cap() -> None:
    assert policy(1.0).delay_s(1, retry_after_s=42.0) == 42.0
    assert policy(1.0, cap_s=10).delay_s(1, retry_after_s=42.0) == 42.0


def test_jitter_wins_when_longer_than_retry_after() -> None:
    assert policy(1.0).delay_s(7, retry_after_s=1.0) == 64.0


def test_retry_after_is_capped_at_max_delay() -> None:
    assert policy(1.0).delay_s(1, retry_after_s=10 * 86400.0) == DEFAULT_MAX_DELAY_S
    assert policy(1.0, max_delay_s=60.0).delay_s(1, retry_after_s=3600.0) == 60.0


def test_floor_keeps_a_zero_jitter_from_retrying_at_once() -> None:
    assert policy(0.0, floor_s=0.5).delay_s(3) == 0.5


def test_breaker_wait_is_half_to_all_of_the_reset_time() -> None:
    assert policy(0.0).breaker_wait_s(30.0) == 15.0
    assert policy(1.0).breaker_wait_s(30.0) == 30.0


def test_attempts_are_exhausted_at_max_attempts() -> None:
    p = policy(0.5, max_attempts=3)
    assert [p.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError):
        policy(0.5).delay_s(0)
