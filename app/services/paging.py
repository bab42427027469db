"""One page of a list: the items, where the page sits, and how many items there are in all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_PER_PAGE = 50


@dataclass(frozen=True)
class Page(Generic[T]):
    """``items`` of page ``page`` (1-based) of ``per_page`` each; ``total`` matching items in all."""

    items: tuple[T, ...]
    page: int
    per_page: int
    total: int


def page_offset(*, page: int, per_page: int) -> int:
    """Return the row offset of ``page`` (1-based). ``ValueError`` when page < 1 or per_page outside 1..MAX_PER_PAGE."""
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"page must be >= 1 and per_page 1..{MAX_PER_PAGE}")
    return (page - 1) * per_page
