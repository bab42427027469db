"""Typed results the connector returns (contract §3, §4, §5).

Frozen dataclasses holding only what the service needs. Timestamps are
timezone-aware UTC ``datetime`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

__all__ = [
    "Clinic",
    "Contact",
    "ContactAddress",
    "IssuedPrescription",
    "Medicine",
    "PlatformPrescription",
    "StatusChange",
]


@dataclass(frozen=True)
class IssuedPrescription:
    """The platform's answer to a successful issue (§4).

    Attributes:
        platform_token: the platform's prescription token (``data.prescription.id``),
            e.g. ``"SRXC49F3D4F66A7"``; the same name as ``Prescription.platform_token``.
        status: the status the platform reported, normally ``"issued"``.
        client_ref_id: our reference, as echoed by the platform (or as sent).
        created_at: creation time in UTC, or None if absent or unreadable.
        request_id: the platform's request id, or None.
    """

    platform_token: str
    status: str
    client_ref_id: str
    created_at: datetime | None
    request_id: str | None = None


class StatusChange(NamedTuple):
    """One entry of a prescription's history (§5): ``(status, at)`` with ``at`` in UTC."""

    status: str
    at: datetime


@dataclass(frozen=True)
class PlatformPrescription:
    """A prescription as the platform reports it on read or lookup (§4, §5).

    Attributes:
        platform_token: the platform's prescription token (the body's ``id``).
        status: current platform status (see :mod:`connector.statuses`); kept
            verbatim even if outside the known lifecycle.
        client_ref_id: our reference, or None when the platform omits it.
        created_at: creation time in UTC, or None.
        history: status changes in the order the platform listed them.
    """

    platform_token: str
    status: str
    client_ref_id: str | None = None
    created_at: datetime | None = None
    history: tuple[StatusChange, ...] = ()


@dataclass(frozen=True)
class Clinic:
    """A clinic the prescriber may issue from (§3).

    Attributes:
        id: the platform's INTERNAL id, the one the API wants (e.g. 994).
        display_id: the id shown on the dashboard (e.g. ``"201334"``); never send it.
        name: clinic name.
    """

    id: int
    display_id: str
    name: str


@dataclass(frozen=True)
class ContactAddress:
    """A pharmacy's address (§3)."""

    line1: str
    city: str
    post_code: str


@dataclass(frozen=True)
class Contact:
    """A pharmacy contact of the prescriber (§3).

    Attributes:
        branch_id: the platform branch id, sent as ``contact_id`` when issuing.
        name: pharmacy name.
        group: pharmacy group (e.g. ``"All Other Pharmacies"``, ``"Boots"``), or None.
        email: pharmacy email, or None.
        address: pharmacy address, or None.
    """

    branch_id: int
    name: str
    group: str | None = None
    email: str | None = None
    address: ContactAddress | None = None


@dataclass(frozen=True)
class Medicine:
    """A medicine from the platform's dictionary (§3).

    Attributes:
        vpid: the dm+d virtual product id.
        description: display name.
        controlled_schedule: controlled-drug schedule as the platform gives it
            (e.g. 2, ``"3"``), or None for non-controlled medicines.
    """

    vpid: str
    description: str
    controlled_schedule: int | str | None = None
