"""The prescription lifecycle vocabulary (contract §6).

    issued -> signed -> printed -> dispensed
    issued | signed | printed -> expired | voided

``printed`` is optional; ``dispensed``, ``expired`` and ``voided`` are final.
Webhooks arrive unordered (§7), so a status only ever moves forward by rank.
"""

from __future__ import annotations

__all__ = ["FINAL_STATUSES", "LIFECYCLE", "can_advance", "is_final", "rank"]

LIFECYCLE: tuple[str, ...] = ("issued", "signed", "printed", "dispensed", "expired", "voided")
"""Every platform lifecycle status, in rank order (finals last)."""

FINAL_STATUSES: frozenset[str] = frozenset({"dispensed", "expired", "voided"})
"""Statuses a prescription never leaves."""

_RANK: dict[str, int] = {
    "issued": 1,
    "signed": 2,
    "printed": 3,
    "dispensed": 4,
    "expired": 4,
    "voided": 4,
}


def rank(status: str | None) -> int:
    """Order of a status in the lifecycle (§6).

    Args:
        status: a status string, or None.

    Returns:
        1 issued, 2 signed, 3 printed, 4 any final status; 0 for None or any
        status outside the lifecycle (e.g. the service's own ``"queued"``).
    """
    return _RANK.get(status, 0) if status is not None else 0


def is_final(status: str | None) -> bool:
    """True when ``status`` is dispensed, expired or voided (§6)."""
    return status in FINAL_STATUSES


def can_advance(current: str | None, new: str) -> bool:
    """Whether a prescription at ``current`` may move to ``new`` (§6, forward only).

    Args:
        current: the stored status; None or a status outside the lifecycle
            (a pre-issue status such as ``"queued"``) can move to any lifecycle status.
        new: the reported status.

    Returns:
        True when ``new`` is a lifecycle status ranked above ``current`` and
        ``current`` is not final; False for a repeat, a step back, a move out
        of a final status, or an unknown ``new``.
    """
    if new not in _RANK:
        return False
    if current in FINAL_STATUSES:
        return False
    return rank(new) > rank(current)
