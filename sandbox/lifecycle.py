"""The prescription lifecycle (contract §6).

    issued -> signed -> printed -> dispensed
    issued | signed | printed -> expired
    issued | signed | printed -> voided

``printed`` is optional; ``dispensed``, ``expired`` and ``voided`` are final.
"""

from __future__ import annotations

ISSUED = "issued"
SIGNED = "signed"
PRINTED = "printed"
DISPENSED = "dispensed"
EXPIRED = "expired"
VOIDED = "voided"

STATUSES: tuple[str, ...] = (ISSUED, SIGNED, PRINTED, DISPENSED, EXPIRED, VOIDED)
FINAL_STATUSES = frozenset({DISPENSED, EXPIRED, VOIDED})

TRANSITIONS: dict[str, frozenset[str]] = {
    ISSUED: frozenset({SIGNED, EXPIRED, VOIDED}),
    SIGNED: frozenset({PRINTED, DISPENSED, EXPIRED, VOIDED}),
    PRINTED: frozenset({DISPENSED, EXPIRED, VOIDED}),
    DISPENSED: frozenset(),
    EXPIRED: frozenset(),
    VOIDED: frozenset(),
}


def can_transition(current: str, target: str) -> bool:
    """True when §6 allows moving a prescription from ``current`` to ``target``."""
    return target in TRANSITIONS.get(current, frozenset())


def is_final(status: str) -> bool:
    """True for dispensed, expired and voided."""
    return status in FINAL_STATUSES
