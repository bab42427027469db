"""Search folding: one definition of "the same text" for pharmacy search, in Python and SQL.

``fold("Crème Brûlée's  PHARMACY") == "creme brulees pharmacy"``: accents removed,
lower case, apostrophes dropped, every other run of non-alphanumerics one space.
PostgreSQL gets the same rule as the IMMUTABLE SQL function ``erx_fold`` (migration
0003, over the ``unaccent`` extension); SQLite gets :func:`fold` itself, registered
on every connection by :func:`register_sqlite_functions`. Queries are folded in
Python, so the LIKE patterns built from them contain only ``[a-z0-9 ]``: nothing
to escape.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata

# Letters that Unicode does not decompose but PostgreSQL's unaccent rules
# (contrib/unaccent/unaccent.rules) map to plain Latin ones.
_UNACCENT_EXTRA = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "ø": "o",
        "Ø": "O",
        "œ": "oe",
        "Œ": "OE",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "TH",
    }
)
_APOSTROPHES = re.compile("['\u2019`]")
_NON_ALNUM = re.compile("[^a-z0-9]+")


def fold(value: str) -> str:
    """Return ``value`` folded for search (see the module docstring)."""
    text = unicodedata.normalize("NFKD", value.translate(_UNACCENT_EXTRA))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return _NON_ALNUM.sub(" ", _APOSTROPHES.sub("", text)).strip()


def register_sqlite_functions(connection: sqlite3.Connection) -> None:
    """Make ``erx_fold(text)`` callable in SQL on a SQLite ``connection``."""
    connection.create_function("erx_fold", 1, _fold_sql, deterministic=True)


def _fold_sql(value: str | None) -> str | None:
    # SQL NULL in, NULL out, like PostgreSQL's STRICT erx_fold.
    return None if value is None else fold(str(value))
