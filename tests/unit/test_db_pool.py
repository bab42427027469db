"""The PostgreSQL pool: no round trip on checkout, idle connections tested by TCP keepalives."""

from __future__ import annotations

import pytest

from app.db import Database


def test_checkout_costs_no_statement_and_idle_connections_are_kept_alive(seeded: Database) -> None:
    if not seeded.is_postgres:
        pytest.skip("a PostgreSQL pool")
    pool = seeded.engine.pool

    assert pool._pre_ping is False  # no SELECT 1 on every checkout
    assert pool._recycle == 1800
    with seeded.engine.connect() as conn:
        dsn = conn.connection.dbapi_connection.get_dsn_parameters()  # type: ignore[union-attr]
    assert (dsn["keepalives"], dsn["keepalives_idle"], dsn["keepalives_count"]) == ("1", "60", "3")
