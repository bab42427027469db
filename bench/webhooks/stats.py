"""Pure arithmetic of the webhook benchmark: round ratios, pooled medians, the exact row check,
slot order, the history watcher's watermark and per-second rate series.

No I/O and no clock here, so that ``tests/unit/test_bench_webhooks_stats.py`` can check it fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.report import percentile


def per_round_ratios(
    numerators: Sequence[float | None], denominators: Sequence[float | None]
) -> list[float | None]:
    """``numerators[i] / denominators[i]`` for each round (None where either is missing or the denominator is 0).

    Raises ValueError when the two sequences differ in length (rounds must pair up).
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators for {len(denominators)} denominators")
    return [
        None if n is None or not d else n / d for n, d in zip(numerators, denominators, strict=True)
    ]


def pooled_median(*series: Iterable[float | None]) -> float | None:
    """The median of every ratio in ``series`` taken together (Nones skipped); None if there is none.

    Used for "the pooled median of the per-round ratios": pass the
    per-round ratios of one run, or of several runs at once.
    """
    values = [v for s in series for v in s if v is not None]
    return percentile(values, 50)


def spread(values: Iterable[float | None]) -> tuple[float, float] | None:
    """(min, max) of ``values`` (Nones skipped), or None: the A/A band of a run."""
    present = [v for v in values if v is not None]
    return (min(present), max(present)) if present else None


@dataclass(frozen=True)
class RowCheck:
    """The exact row check of one load phase.

    ``rows``: rows the database holds for the phase's event ids; ``ok``: 2xx
    answers the client counted; ``sent``: requests it issued; ``answered``:
    responses it read. ``in_flight = sent - answered``: requests issued but
    not answered when the load stopped (or lost to a socket error). A request
    the server received is stored before it is answered, so the check is
    ``rows == ok + in_flight`` (every request in flight was received and
    stored) and only holds when every issued request had a new, valid event.
    """

    rows: int
    ok: int
    sent: int
    answered: int

    @property
    def in_flight(self) -> int:
        """Requests issued without an answer when the load stopped."""
        return self.sent - self.answered

    @property
    def expected(self) -> int:
        """``ok + in_flight``: the rows there must be."""
        return self.ok + self.in_flight

    @property
    def holds(self) -> bool:
        """True when the stored rows are exactly the expected count."""
        return self.answered <= self.sent and self.rows == self.expected

    def as_json(self) -> dict[str, int | bool]:
        """The counts for the results file."""
        return {
            "rows": self.rows,
            "ok_2xx": self.ok,
            "sent": self.sent,
            "answered": self.answered,
            "in_flight_at_stop": self.in_flight,
            "expected": self.expected,
            "holds": self.holds,
        }


def slot_order(slots: Sequence[str], round_index: int) -> list[str]:
    """The order the ``slots`` run in round ``round_index`` (0-based): rotated by one each round.

    Over ``len(slots)`` rounds every slot goes first once, and each slot
    follows each other slot equally often for two slots.
    """
    k = round_index % len(slots)
    return list(slots[k:]) + list(slots[:k])


def advance_floor(floor: int, seen: set[int], settled_max: int | None) -> int:
    """Move the history watcher's watermark ``floor`` (every id <= floor is resolved) forward.

    ``seen``: ids above ``floor`` already observed committed (consumed ids
    are removed from it). ``settled_max``: the highest id observed at least
    the settling time ago; ids below it still unseen are gaps (a sequence value
    consumed by ``ON CONFLICT DO NOTHING`` or a rolled-back insert), since no
    transaction stays open that long. Returns the new floor.
    """
    if settled_max is not None and settled_max > floor:
        for i in range(floor + 1, settled_max + 1):
            seen.discard(i)
        floor = settled_max
    while floor + 1 in seen:
        floor += 1
        seen.discard(floor)
    return floor


def rate_series(times: Iterable[float], start: float, end: float, step: float = 1.0) -> list[int]:
    """Count of ``times`` (seconds) in each ``step``-long bin from ``start`` up to ``end``; others dropped."""
    if end <= start or step <= 0:
        return []
    bins = [0] * int(-(-(end - start) // step))
    for t in times:
        if start <= t < end:
            bins[min(int((t - start) // step), len(bins) - 1)] += 1
    return bins


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p90, p99 and max of ``values_ms`` (milliseconds, rounded to 0.1)."""

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 1)

    return {
        "count": len(values_ms),
        "p50": r(percentile(values_ms, 50)),
        "p90": r(percentile(values_ms, 90)),
        "p99": r(percentile(values_ms, 99)),
        "max": r(max(values_ms) if values_ms else None),
    }
