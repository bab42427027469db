"""Pharmacy search: by name, town or postcode, accent- and case-insensitive, best first.

Matching works on folded text (:mod:`app.text_folding`): every word of the query
must occur in the pharmacy's name, town or postcode, or the query without its
spaces must occur in the postcode without its space ("LS6 2" and "ls62" both find
LS6 2AL). Ranking, best first:

0. the query is the whole name, the whole town or the whole postcode;
1. the name or the postcode starts with it;
2. the town starts with it, or a word of the name does;
3. it occurs anywhere else (a substring);

then by folded name and id, so the order is the same on PostgreSQL and SQLite.
On PostgreSQL the folded columns are maintained by the database and the match
uses a pg_trgm GIN index (migration 0003); SQLite folds in the query.
A pharmacy in an ``erx`` region (B) is listed only when it has a platform branch
id: without one it cannot receive a prescription.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, and_, case, collate, func, literal_column, or_, select

from app.db import Database
from app.models import Pharmacy, Region
from app.services.paging import Page, page_offset
from app.services.regions import region_or_invalid
from app.text_folding import fold

MAX_QUERY_LENGTH = 100


@dataclass(frozen=True)
class PharmacyHit:
    """One search result.

    ``id``: what to send with (``pharmacy_id``); ``address``: the display address
    on one line; ``group``: "Boots", "All Other Pharmacies" or None; ``branch_id``:
    the platform branch id, for ``erx`` regions only (else None).
    """

    id: int
    name: str
    address: str
    group: str | None
    region: str
    branch_id: int | None


def display_address(pharmacy: Pharmacy) -> str:
    """Return the pharmacy's address on one line: ``"48 Marylebone High Street, London W1U 5HS"``."""
    return one_line_address(pharmacy.address_line1, pharmacy.city, pharmacy.post_code)


def one_line_address(address_line1: str, city: str, post_code: str) -> str:
    """Return an address on one line from its parts (as :func:`display_address` prints it)."""
    return f"{address_line1}, {city} {post_code}"


def _search_columns(dialect: str) -> tuple[Any, Any, Any, Any]:
    """(name, town, postcode without space, haystack), folded; stored columns on PostgreSQL."""
    if dialect == "postgresql":
        return tuple(  # type: ignore[return-value]
            literal_column(f"pharmacies.{name}", String)
            for name in ("search_name", "search_city", "search_postcode", "search_text")
        )
    name = func.erx_fold(Pharmacy.name, type_=String)
    city = func.erx_fold(Pharmacy.city, type_=String)
    postcode = func.erx_fold(Pharmacy.post_code, type_=String)
    compact = func.replace(postcode, " ", "", type_=String)
    return name, city, compact, name + " " + city + " " + postcode + " " + compact


def search_pharmacies(
    db: Database, *, q: str | None = None, region: str | None = None, page: int = 1, per_page: int = 20
) -> Page[PharmacyHit]:
    """Return one page of pharmacies matching ``q`` (all when None/blank) in ``region`` (all when None).

    ``page`` is 1-based, ``per_page`` 1..50. Raises :class:`app.services.errors.Invalid`
    for an unknown region (field ``region``), ``ValueError`` for page/per_page out of range.
    """
    offset = page_offset(page=page, per_page=per_page)
    dialect = db.engine.dialect.name
    name_f, city_f, postcode_f, text_f = _search_columns(dialect)
    conditions: list[Any] = [or_(Region.flow != "erx", Pharmacy.branch_id.is_not(None))]
    order: list[Any] = []
    folded = fold(q or "")[:MAX_QUERY_LENGTH].strip()
    if folded:
        words = folded.split()
        compact = "".join(words)
        every_word = and_(*(text_f.like(f"%{word}%") for word in words))
        conditions.append(or_(every_word, text_f.like(f"%{compact}%")) if len(words) > 1 else every_word)
        order.append(case(
            (or_(name_f == folded, city_f == folded, postcode_f == compact), 0),
            (or_(name_f.like(f"{folded}%"), postcode_f.like(f"{compact}%")), 1),
            (or_(city_f.like(f"{folded}%"), name_f.like(f"% {folded}%")), 2),
            else_=3,
        ))
    # Byte order on PostgreSQL too, so both databases sort folded names alike.
    order.append(collate(name_f, "C") if dialect == "postgresql" else name_f)
    with db.session() as session:
        if region is not None:
            region_or_invalid(session, region)
            conditions.append(Pharmacy.region_code == region)
        rows = session.execute(
            select(Pharmacy, Region.flow, func.count().over().label("total"))
            .join(Region, Region.code == Pharmacy.region_code)
            .where(*conditions)
            .order_by(*order, Pharmacy.id)
            .limit(per_page)
            .offset(offset)
        ).all()
        if rows:
            total = rows[0].total
        else:  # past the last page: the window count has no row to ride on
            total = session.scalar(
                select(func.count()).select_from(Pharmacy).join(Region, Region.code == Pharmacy.region_code).where(*conditions)
            ) or 0
        hits = tuple(
            PharmacyHit(
                id=pharmacy.id,
                name=pharmacy.name,
                address=display_address(pharmacy),
                group=pharmacy.group_name,
                region=pharmacy.region_code,
                branch_id=pharmacy.branch_id if flow == "erx" else None,
            )
            for pharmacy, flow, _total in rows
        )
    return Page(items=hits, page=page, per_page=per_page, total=int(total))
