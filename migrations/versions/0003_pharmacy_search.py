"""pharmacy search: folded search columns and a pg_trgm index (PostgreSQL only)

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-02

On PostgreSQL the pharmacies table gets four columns the database maintains
(GENERATED ... STORED), each folded by ``erx_fold`` (the SQL twin of
``app.foundation.text_folding.fold``: unaccent, lower case, apostrophes dropped, other
punctuation a space), and a GIN trigram index on the one the search matches
against. SQLite needs nothing: the service registers ``erx_fold`` as a Python
function on every connection and computes the same values in the query.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# unaccent() is only STABLE (it reads a dictionary); naming the dictionary makes this
# wrapper safe to declare IMMUTABLE, which a generated column and an index require.
FOLD_FUNCTION = """
CREATE OR REPLACE FUNCTION erx_fold(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $fold$
  SELECT btrim(regexp_replace(
           regexp_replace(lower(public.unaccent('public.unaccent'::regdictionary, value)), '[''\u2019`]', '', 'g'),
           '[^a-z0-9]+', ' ', 'g'))
$fold$
"""

# search_text: name, town, postcode as written, and postcode without its space, so that
# "LS6 2" and "LS62" both find LS6 2AL.
SEARCH_COLUMNS = {
    "search_name": "erx_fold(name)",
    "search_city": "erx_fold(city)",
    "search_postcode": "replace(erx_fold(post_code), ' ', '')",
    "search_text": (
        "erx_fold(name) || ' ' || erx_fold(city) || ' ' || erx_fold(post_code)"
        " || ' ' || replace(erx_fold(post_code), ' ', '')"
    ),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Both extensions ship with Debian's postgresql package (contrib); both are trusted
    # extensions (PostgreSQL 13+), so the database owner may create them.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
    op.execute(FOLD_FUNCTION)
    for name, expression in SEARCH_COLUMNS.items():
        op.execute(
            f"ALTER TABLE pharmacies ADD COLUMN {name} text GENERATED ALWAYS AS ({expression}) STORED"
        )
    op.execute(
        "CREATE INDEX ix_pharmacies_search_text_trgm ON pharmacies USING gin (search_text gin_trgm_ops)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_pharmacies_search_text_trgm")
    for name in SEARCH_COLUMNS:
        op.execute(f"ALTER TABLE pharmacies DROP COLUMN IF EXISTS {name}")
    op.execute("DROP FUNCTION IF EXISTS erx_fold(text)")
