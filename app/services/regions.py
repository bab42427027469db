"""Regions and how a prescription reaches a pharmacy in each (``email`` or ``erx``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.foundation.db import Database
from app.foundation.errors import Invalid
from app.foundation.models import Region

# The delivery method each region flow stands for (Region A keeps the email
# flow, the prescription travels as a PDF; Region B goes through the platform).
DELIVERY_METHODS = {"email": "email", "erx": "e-prescription platform"}


@dataclass(frozen=True)
class RegionInfo:
    """``code`` ("A"), ``name``, ``flow`` ("email" | "erx") and ``delivery_method`` (human words)."""

    code: str
    name: str
    flow: str
    delivery_method: str


def _info(region: Region) -> RegionInfo:
    return RegionInfo(
        code=region.code,
        name=region.name,
        flow=region.flow,
        delivery_method=DELIVERY_METHODS.get(region.flow, region.flow),
    )


def list_regions(db: Database) -> tuple[RegionInfo, ...]:
    """Return every region, by code."""
    with db.session() as session:
        return tuple(_info(r) for r in session.scalars(select(Region).order_by(Region.code)))


def region_or_invalid(session: Session, code: str, *, field: str = "region") -> RegionInfo:
    """Return the region ``code``; raise :class:`Invalid` naming ``field`` when there is none."""
    region = session.get(Region, code)
    if region is None:
        codes = ", ".join(session.scalars(select(Region.code).order_by(Region.code)))
        raise Invalid("The region is unknown.", errors={field: [f"Must be one of: {codes}."]})
    return _info(region)
