"""The webhook benchmark's arithmetic (bench/webhooks/stats.py): ratios, medians, the exact row check.

Pure functions only; the benchmark itself is run by hand (docs/benchmarks.md), never timed in tests.
"""

from __future__ import annotations

import pytest

from bench.webhooks.stats import (
    RowCheck,
    advance_floor,
    latency_summary,
    per_round_ratios,
    pooled_median,
    rate_series,
    slot_order,
    spread,
)


def test_per_round_ratios_pair_rounds_and_skip_missing_denominators() -> None:
    assert per_round_ratios([600.0, 900.0, None], [1000.0, 900.0, 800.0]) == [0.6, 1.0, None]
    assert per_round_ratios([5.0], [0.0]) == [None]
    with pytest.raises(ValueError):
        per_round_ratios([1.0, 2.0], [1.0])


def test_pooled_median_takes_every_round_of_every_series() -> None:
    assert pooled_median([0.7, 0.9, 0.8]) == 0.8
    assert pooled_median([0.7, 0.9], [0.8, 1.0]) == pytest.approx(0.85)
    assert pooled_median([None, 1.2]) == 1.2
    assert pooled_median([]) is None
    assert spread([1.04, None, 0.91, 1.07]) == (0.91, 1.07)
    assert spread([None]) is None


def test_row_check_counts_requests_in_flight_when_the_load_stopped() -> None:
    check = RowCheck(rows=3725, ok=3693, sent=3725, answered=3693)
    assert (check.in_flight, check.expected, check.holds) == (32, 3725, True)
    # One stored row short of 2xx + in flight: a lost event, or an uncounted request.
    assert not RowCheck(rows=3724, ok=3693, sent=3725, answered=3693).holds
    # A non-2xx answer is answered but stores nothing.
    assert RowCheck(rows=10, ok=10, sent=12, answered=12).holds
    assert RowCheck(rows=10, ok=10, sent=11, answered=11).as_json()["expected"] == 10


def test_slot_order_rotates_so_each_slot_goes_first_once() -> None:
    slots = ("service", "reference", "reference-copy")
    firsts = [slot_order(slots, r)[0] for r in range(3)]
    assert sorted(firsts) == sorted(slots)
    assert slot_order(("async", "sync"), 1) == ["sync", "async"]


def test_advance_floor_follows_contiguous_ids_and_skips_settled_gaps() -> None:
    seen = {11, 12, 14}
    assert advance_floor(10, seen, None) == 12  # 13 not committed (yet)
    assert seen == {14}
    # 13 never appeared although 14 was seen long enough ago: a consumed sequence value.
    assert advance_floor(12, seen, 14) == 14
    assert seen == set()


def test_rate_series_and_latency_summary() -> None:
    assert rate_series([0.1, 0.5, 1.2, 2.9, 3.5], 0.0, 3.0) == [2, 1, 1]
    assert rate_series([], 5.0, 5.0) == []
    s = latency_summary([float(v) for v in range(1, 101)])
    assert (s["count"], s["p50"], s["max"]) == (100, 50.5, 100.0)
    assert latency_summary([])["p99"] is None
