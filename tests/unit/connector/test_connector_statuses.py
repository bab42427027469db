"""Lifecycle vocabulary: forward-only moves (contract §6)."""

from __future__ import annotations

import pytest

from connector.statuses import FINAL_STATUSES, LIFECYCLE, can_advance, rank


def test_vocabulary() -> None:
    assert set(LIFECYCLE) == {"issued", "signed", "printed", "dispensed", "expired", "voided"}
    assert FINAL_STATUSES == {"dispensed", "expired", "voided"}
    assert [rank(s) for s in LIFECYCLE] == [1, 2, 3, 4, 4, 4]
    assert rank(None) == rank("queued") == 0


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("issued", "signed"),
        ("signed", "printed"),
        ("printed", "dispensed"),
        ("signed", "dispensed"),  # printed is optional
        ("issued", "dispensed"),  # a missed webhook
        ("issued", "expired"),
        ("printed", "voided"),
        (None, "issued"),
        ("queued", "signed"),
    ],
)
def test_forward_moves_are_allowed(current: str | None, new: str) -> None:
    assert can_advance(current, new) is True


@pytest.mark.parametrize(
    ("current", "new"),
    [
        ("signed", "issued"),  # late, out-of-order webhook
        ("printed", "signed"),
        ("signed", "signed"),
        ("dispensed", "voided"),
        ("voided", "expired"),
        ("expired", "dispensed"),
        ("issued", "queued"),
        ("issued", "mystery"),
        (None, "mystery"),
    ],
)
def test_backward_repeat_and_final_moves_are_refused(current: str | None, new: str) -> None:
    assert can_advance(current, new) is False
